"""``Rigger.stats()``: the counters of every part of a running dispatcher, in one mapping."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..pool.background import Background

if TYPE_CHECKING:
    from ..server.supervisor import ServerSupervisor
    from .event_thread import EventThread
    from .journaling import Journaling


def collect(
    events: EventThread,
    background: Background | None,
    server: ServerSupervisor | None,
    journal: Journaling | None,
    bound: list[str],
) -> dict[str, Any]:
    """The stats of the event thread, the background side, and the TCP server and the
    journal when they run; ``bound``: the event names something is bound to."""
    counters = events.counters()
    uptime = events.uptime()
    stats: dict[str, Any] = {
        **(Background.idle_stats() if background is None else background.stats()),
        "uptime": uptime,
        "start_time": events.start_time(),
        "events_per_second": counters["done"] / uptime if uptime > 0 else 0.0,
        "events": counters,
        "hooks": events.hook_counters(),
        "failures_total": events.failures.total,
        "recent_failures": events.failures.recent(),
        "plans_cached": events.cached_plans(),
        "bound_events": bound,
        "timings": events.timings.snapshot(),
        "pid": os.getpid(),
    }
    if server is not None:
        stats["server"] = server.stats()
    if journal is not None:
        stats["journal"] = journal.stats()
    return stats
