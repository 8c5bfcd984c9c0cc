"""The last failures, kept for whoever looks at a running dispatcher (``stats()``, the
live page): a small bounded ring, so that a flood of failures costs no memory."""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from typing import Any, Final

MAX_FAILURES: Final = 20
"""Failures kept; older ones are dropped (they are in the log)."""
MAX_TRACEBACK_CHARS: Final = 4000
"""The end of a traceback kept per failure (its last lines say what failed)."""


MAX_SUMMARY_CHARS: Final = 300
"""The one-line summary of a failure (a live page's card title) is cut here."""


def summary(exc: BaseException) -> str:
    """One line that says what failed: ``Type: first line of the message``, and where the
    message carries a traceback (a backgrounded hook's, from its worker) the exception
    that traceback ends with, since a cut line of traceback says nothing."""
    first, _, rest = str(exc).partition("\n")
    last = next((line.strip() for line in reversed(rest.splitlines()) if line.strip()), "")
    text = f"{type(exc).__name__}: {first}".rstrip(": ")
    if last:
        text = f"{text.rstrip(':')}: {last}"
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 3] + "..."


class FailureRing:
    """The last :data:`MAX_FAILURES` failures: when, which event, the traceback text."""

    def __init__(self, size: int = MAX_FAILURES) -> None:
        self._lock = threading.Lock()
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self.total = 0
        self._last: BaseException | None = None  # one failure reported by two paths counts once

    def add(self, hook_name: str | None, tid: str | None, exc: BaseException) -> None:
        """Keep ``exc`` (its traceback formatted now, while it is at hand).

        The event thread keeps a failed event with its name, then may report the same
        exception again (no one waited on it): that second add is skipped.
        """
        if exc is self._last:
            return
        self._last = exc
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if len(text) > MAX_TRACEBACK_CHARS:
            text = "...\n" + text[-MAX_TRACEBACK_CHARS:]
        entry = {
            "time": time.time(),
            "hook_name": hook_name,
            "tid": tid,
            "error": summary(exc),
            "traceback": text,
        }
        with self._lock:
            self._ring.append(entry)
            self.total += 1

    def recent(self) -> list[dict[str, Any]]:
        """The failures kept, oldest first."""
        with self._lock:
            return list(self._ring)
