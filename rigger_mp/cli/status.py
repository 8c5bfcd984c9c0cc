"""``rigger-mp status`` as a person reads it: ``rigger.stats()`` laid out as a small table.

Every section is optional: a dispatcher without a pool has no ``background`` or
``workers``, one reached over TCP has a ``server`` section; what is missing is left out.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ..printable import printable

CLEAR = "\x1b[H\x1b[2J"
"""Cursor home, clear screen: between two tables of ``status --watch``."""


def human_bytes(n: float) -> str:
    """``12.3 MiB``: bytes in the largest binary unit that keeps the number below 1024."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``1h 02m 03s``, ``4m 05s`` or ``6.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _counts(section: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """``key 1,234`` for each integer among ``keys`` (a pid without the thousands comma)."""
    return "  ".join(
        f"{key} {section[key]}" if key == "pid" else f"{key} {section[key]:,}"
        for key in keys
        if isinstance(section.get(key), int)
    )


def format_status(stats: Mapping[str, Any], where: str) -> str:
    """The table ``rigger-mp status`` prints (ends with a newline)."""
    lines = [f"rigger_mp at {where}"]
    if isinstance(stats.get("uptime"), (int, float)):
        lines[0] += f", up {human_duration(stats['uptime'])}"
    events = stats.get("events")
    if isinstance(events, Mapping):
        text = _counts(events, ("accepted", "done", "failed", "abandoned", "queued"))
        rate = stats.get("events_per_second")
        if isinstance(rate, (int, float)):
            text += f"  ({rate:,.1f} events/s)"
        lines.append(f"{'events':<12}{text}")
    background = stats.get("background")
    if isinstance(background, Mapping):
        text = _counts(background, ("queued", "running", "done", "failed", "abandoned"))
        lines.append(f"{'background':<12}{text}")
    server = stats.get("server")
    if isinstance(server, Mapping):
        text = _counts(server, ("pid", "accepted", "refused", "restarts"))
        lines.append(f"{'server':<12}{text}")
    workers = stats.get("workers")
    if isinstance(workers, list):
        lines.append(f"{'workers':<12}{len(workers)}")
        if workers:
            lines.append(f"  {'pid':>8}  {'RSS':>10}  {'CPU':>6}  {'tasks':>8}")
        for worker in workers:
            if not isinstance(worker, Mapping):
                continue
            rss = worker.get("rss_bytes")
            cpu = worker.get("cpu_percent")
            lines.append(
                f"  {worker.get('pid', '?'):>8}  "
                f"{human_bytes(rss) if isinstance(rss, (int, float)) else '?':>10}  "
                f"{f'{cpu:.1f}%' if isinstance(cpu, (int, float)) else '?':>6}  "
                f"{worker.get('tasks_done', '?'):>8}"
            )
    return "\n".join(printable(line) for line in lines) + "\n"  # a server may lie


def watch(
    stats: Callable[[], Mapping[str, Any]],
    where: str,
    every: float,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> None:
    """``status --watch``: the table again every ``every`` seconds until Ctrl-C (or
    ``stop``), the screen cleared between two."""
    stop = stop or threading.Event()
    every = max(0.1, every)
    while True:
        text = format_status(stats(), where)
        out.write((CLEAR if out.isatty() else "") + text + f"(every {every:g} s; Ctrl-C ends)\n")
        out.flush()
        if stop.wait(every):
            return
