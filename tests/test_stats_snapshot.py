"""``stats`` asked in a loop costs the main process at most one computation per 100 ms.

The server process answers ``stats`` (TCP, the HTTP front's ``/stats`` and ``/metrics``)
from a snapshot no older than :data:`MAX_AGE`; the main process counts the stats it
computed for the server (``server.stats_computed``), which the tests compare with the
time the flood took: a count, not a timing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rigger_mp import Rigger
from rigger_mp.server.pipe_messages import StatsReply
from rigger_mp.server.stats_snapshot import MAX_AGE, StatsSnapshot, stats_line
from tests._tcp import Raw, make_rigger, port_of

FLOOD = 3000


def computed(rigger: Rigger) -> int:
    """Stats the main process computed for the server process (read in-process: this
    read is not one of them)."""
    count = rigger.stats()["server"]["stats_computed"]
    assert isinstance(count, int)
    return count


class Target:
    """A reply target that records what it is given."""

    def __init__(self) -> None:
        self.rids: set[int] = set()
        self.lines: dict[int, bytes] = {}

    def put(self, seq: int, line: bytes) -> bool:
        self.lines[seq] = line
        return True

    def flush(self) -> None:
        pass

    def answered(self, now: float) -> None:
        pass

    def error(self, seq: int, code: str, message: str) -> None:
        raise AssertionError(message)

    @property
    def lost(self) -> bool:
        return False


# -- the snapshot alone, on a clock of the test's ---------------------------------------


def test_one_request_is_asked_at_a_time_and_its_reply_answers_every_waiter() -> None:
    now = [0.0]
    asks: list[None] = []
    snapshot = StatsSnapshot(lambda: now[0], lambda: asks.append(None))
    a, b = Target(), Target()
    assert snapshot.want(a, 0) is None and snapshot.want(b, 7) is None
    assert len(asks) == 1 and snapshot.asked == 1  # the second waits for the first's reply
    reply = StatsReply({"events": {"done": 1}})
    assert snapshot.arrived(reply) == [(a, 0), (b, 7)]
    now[0] = MAX_AGE  # asked MAX_AGE ago: still fresh
    assert snapshot.want(a, 1) is reply
    assert len(asks) == 1
    now[0] = MAX_AGE * 1.01  # older: asked again, and the request waits for it
    assert snapshot.want(a, 2) is None
    assert len(asks) == 2 and snapshot.waiting == [(a, 2)]


def test_a_reply_that_is_an_error_is_answered_as_it_came() -> None:
    error = b'{"ok":false,"error":{"code":"reply_too_large","message":"m"}}\n'
    assert stats_line(StatsReply(None, error), {"pid": 1}) == error


def test_the_process_counters_are_added_to_a_copy_of_the_snapshot() -> None:
    reply = StatsReply({"events": {"done": 3}, "server": {"port": 1}})
    first = json.loads(stats_line(reply, {"messages": 1}))
    second = json.loads(stats_line(reply, {"messages": 2}))
    assert first["stats"]["server"] == {"port": 1, "process": {"messages": 1}}
    assert second["stats"]["server"]["process"] == {"messages": 2}
    assert reply.stats == {"events": {"done": 3}, "server": {"port": 1}}


# -- real processes ------------------------------------------------------------------------


def test_pipelined_tcp_stats_cost_one_computation_per_max_age() -> None:
    rigger = make_rigger()
    try:
        with Raw(port_of(rigger)) as raw:
            raw.request({"hook_name": "count", "wait_for_task": True})
            before = computed(rigger)
            start = time.monotonic()
            raw.send(b'{"op": "stats"}\n' * FLOOD)
            replies = [raw.reply() for _ in range(FLOOD)]
            elapsed = time.monotonic() - start
        after = computed(rigger)
        assert all(r["ok"] and r["stats"]["events"]["accepted"] == 1 for r in replies)
        assert all("process" in r["stats"]["server"] for r in replies)
        assert 1 <= after - before <= elapsed / MAX_AGE + 1, (after - before, elapsed)
        asked = replies[-1]["stats"]["server"]["process"]["stats_asked"]
        assert asked == after  # every computation was one the server process asked for
    finally:
        rigger.stop()


def test_stats_and_metrics_over_http_share_the_snapshot() -> None:
    from tests._http import Http, http_port, make_http_rigger

    rigger = make_http_rigger()
    try:
        with Http(http_port(rigger)) as client:
            before = computed(rigger)
            start = time.monotonic()
            bodies: list[Any] = []
            for n in range(300):
                if n % 2:
                    status, body, _ = client.raw("GET", "/metrics")
                    assert status == 200 and b"rigger_mp_events" in body
                else:
                    bodies.append(client.stats())
            elapsed = time.monotonic() - start
        after = computed(rigger)
        assert all("http" in stats["server"] for stats in bodies)
        assert 1 <= after - before <= elapsed / MAX_AGE + 1, (after - before, elapsed)
    finally:
        rigger.stop()
