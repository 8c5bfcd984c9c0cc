"""The events a pytest process could not fire: listed (bounded), counted, warned of once.

Standard library only: the pytest plugin imports it in every pytest run. The sender's
thread adds to the list while the test thread reads it, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

MAX_LOST_LISTED = 20
"""Lost events listed per pytest process (each xdist worker, the controller); the rest
are counted."""
MAX_NAME = 120
"""Characters of a test's id kept in a lost event's line."""


class Lost:
    """The events one process could not fire: the first :data:`MAX_LOST_LISTED` described,
    all counted; the first one is warned of once (:meth:`to_warn`)."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.total = 0
        self.warned = False
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self.total += 1
            if len(self.listed) < MAX_LOST_LISTED:
                self.listed.append(text)

    def count(self) -> None:
        """One more lost event, already explained (the worker's unreachable line)."""
        with self._lock:
            self.total += 1

    def to_warn(self) -> str | None:
        """The warning's text, the first time an event is listed; else None: one warning
        per process, so that a dispatcher gone mid-run does not flood pytest's summary."""
        with self._lock:
            if self.warned or not self.listed:
                return None
            self.warned = True
            first = self.listed[0]
        return first + "; every event not fired is listed in the rigger_mp section of the summary"


def describe(hook_name: str, what: str, address: str, reason: str) -> str:
    """A lost event's line: the event, its subject (cut to :data:`MAX_NAME`), why."""
    if len(what) > MAX_NAME:
        what = what[:MAX_NAME] + "..."
    return f"{hook_name}{' ' if what else ''}{what} not fired to {address}: {reason}"


def lost_lines(worker_id: str, listed: Sequence[str], total: int) -> list[str]:
    """One line per listed lost event of one process, then how many more there were."""
    prefix = f"{worker_id}: " if worker_id else ""
    lines = [f"{prefix}{text}" for text in listed]
    if total > len(listed):
        lines.append(f"{prefix}... and {total - len(listed):,} more events not fired")
    return lines


def worker_order(item: tuple[str, Any]) -> tuple[int, str]:
    """gw2 before gw10."""
    return len(item[0]), item[0]
