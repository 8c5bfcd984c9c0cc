"""The dispatcher's stats as the server process last had them, reused for 100 ms.

``stats`` (TCP ``{"op": "stats"}``, the HTTP front's ``/stats`` and ``/metrics``) is
computed in the main process. A client that asks in a loop must not make it compute
them each time, nor cost other clients' events more than a client that pings. So the
server process asks the main process at most once per :data:`MAX_AGE`::

    stats request ─▶ StatsSnapshot.want ─ asked ≤ MAX_AGE ago ─▶ answered from the snapshot
                          │ older, or none yet
                          ▼
                     waits; one StatsRequest ─▶ main process ─▶ StatsReply ─▶ arrived:
                     (whatever number waits)                     every waiter answered

The age counts from when the stats were asked (they were computed after that), so no
answer is older than :data:`MAX_AGE` plus one round trip. The server process's own
counters (``server.process``) are read afresh for every answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .. import protocol as proto

if TYPE_CHECKING:
    from .pipe_messages import StatsReply
    from .reply_target import ReplyTarget

MAX_AGE: Final = 0.1
"""Seconds a snapshot of the dispatcher's stats answers ``stats`` requests."""


class StatsSnapshot:
    """The last :class:`~.pipe_messages.StatsReply`, when it was asked, and who waits for
    the next one. ``clock`` is the loop's; ``ask`` sends one request to the main process."""

    def __init__(
        self, clock: Callable[[], float], ask: Callable[[], None], max_age: float = MAX_AGE
    ) -> None:
        self.clock = clock
        self.ask = ask
        self.max_age = max_age
        self.reply: StatsReply | None = None
        self.asked_at = -math.inf
        self.asking = False
        self.asked = 0
        """Requests sent to the main process (each one computation there)."""
        self.waiting: list[tuple[ReplyTarget, int]] = []
        """Messages ``(target, seq)`` that wait for the reply being asked."""

    def want(self, target: ReplyTarget, seq: int) -> StatsReply | None:
        """The stats to answer message ``seq`` of ``target`` with now; None if it must
        wait for the ones being asked (:meth:`arrived` hands it back then)."""
        reply = self.reply
        if reply is not None and not self.asking and self.clock() - self.asked_at <= self.max_age:
            return reply
        self.waiting.append((target, seq))
        if not self.asking:
            self.asking = True
            self.asked_at = self.clock()
            self.asked += 1
            self.ask()
        return None

    def arrived(self, reply: StatsReply) -> list[tuple[ReplyTarget, int]]:
        """The stats asked have come: keep them; the messages waiting for them."""
        self.reply = reply
        self.asking = False
        waiting, self.waiting = self.waiting, []
        return waiting


def stats_line(reply: StatsReply, process: dict[str, Any]) -> bytes:
    """The reply line of ``stats``: the dispatcher's stats with the server process's own
    counters under ``server.process`` (or the error the main process sent instead)."""
    if reply.stats is None:
        assert reply.error is not None
        return reply.error
    stats = dict(reply.stats)  # the snapshot itself stays as it came
    server = stats.get("server", {})
    if isinstance(server, dict):
        stats["server"] = {**server, "process": process}
    try:
        return proto.reply_line({"ok": True, "stats": stats})
    except (TypeError, ValueError) as exc:
        return proto.error_line(proto.NOT_SERIALIZABLE, f"stats {proto.unserializable(stats, exc)}")
