"""The live view's run board on its own: counts kept as tests change, lanes, failures,
the rows a subscriber is sent, its bounds (tests listed, runs held) and its clock (a quiet
run ends at its run_timeout)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rigger_mp.plugins.run_state import Found
from rigger_mp.plugins.run_timeout import DEFAULT_RUN_TIMEOUT, run_timeout_of
from rigger_mp.server import run_board
from rigger_mp.server.run_board import MAX_RUNS, RunBoard, head, listed, run_json


def board(max_tests: int = 1000) -> RunBoard:
    return RunBoard(max_tests, lambda: None)


def start(b: RunBoard, run: str, name: str, worker: str = "gw0", host: str = "h") -> None:
    b.start_test(
        {"run_id": run, "test_name": name, "test_location": "t.py", "worker": worker, "host": host}
    )


def finish(b: RunBoard, run: str, name: str, outcome: str = "passed", **more: Any) -> None:
    data = {"run_id": run, "test_name": name, "test_location": "t.py", "outcome": outcome}
    b.finish_test({"test_result": outcome, "worker": "gw0", "host": "h", **data, **more})


def test_counts_follow_a_test_from_unfinished_to_its_last_attempt() -> None:
    b = board()
    start(b, "r", "a")
    assert head(b, b.entries["r"])["counts"] == {"unfinished": 1}
    finish(b, "r", "a", "failed", longrepr="first")
    start(b, "r", "a")
    finish(b, "r", "a", "passed", rerun=1)
    entry = b.entries["r"]
    assert head(b, entry)["counts"] == {"passed": 1}
    assert [f["text"] for f in run_json(b, entry)["failures"]] == ["first"]


def test_a_lane_shows_what_its_worker_runs_now() -> None:
    b = board()
    start(b, "r", "a", "gw1", "h2")
    lanes = run_json(b, b.entries["r"])["lanes"]
    assert [(lane["host"], lane["worker"], lane["test"]) for lane in lanes] == [("h2", "gw1", "a")]
    b.finish_test(
        {
            "run_id": "r",
            "test_name": "a",
            "test_location": "t.py",
            "worker": "gw1",
            "host": "h2",
            "outcome": "passed",
        }
    )
    lane = run_json(b, b.entries["r"])["lanes"][0]
    assert lane["test"] is None and lane["done"] == 1


def test_a_delta_holds_only_what_changed_since() -> None:
    b = board()
    finish(b, "r", "a")
    finish(b, "r", "b")
    seen = b.seq
    finish(b, "r", "c", "failed", longrepr="x")
    delta = run_json(b, b.entries["r"], since=seen)
    assert [t["name"] for t in delta["recent"]] == ["c"]
    assert [f["name"] for f in delta["failures"]] == ["c"]
    assert "slowest" not in delta  # the whole run's figures go with a snapshot only
    assert run_json(b, b.entries["r"], since=b.seq)["recent"] == []


def test_tests_past_max_tests_are_counted_not_listed() -> None:
    b = board(max_tests=3)
    for i in range(5):
        finish(b, "r", f"t{i}", "failed" if i == 4 else "passed")
    entry = b.entries["r"]
    assert head(b, entry)["counts"] == {"passed": 4, "failed": 1} and head(b, entry)["tests"] == 5
    assert listed(entry, "", "")["matched"] == 3


def test_the_board_holds_max_runs_dropping_finished_ones_first() -> None:
    b = board()
    finish(b, "open-0", "t")
    for i in range(1, MAX_RUNS + 3):
        finish(b, f"run-{i}", "t")
        b.finish_session({"run_id": f"run-{i}", "exit_status": 0})
    assert len(b.entries) == MAX_RUNS
    assert "open-0" in b.entries and "run-1" not in b.entries
    assert b.runs.held[0] == MAX_RUNS  # the dropped runs' tests left the bound


def test_a_finished_run_id_that_fires_again_is_a_new_run() -> None:
    b = board()
    finish(b, "r", "a")
    b.finish_session({"run_id": "r", "exit_status": 1})
    b.finish_session({"run_id": "r", "exit_status": 1})  # said twice: still the run
    assert head(b, b.entries["r"])["finished"] is True
    assert head(b, b.entries["r"])["tests"] == 1
    b.start_session({"run_id": "r", "environment": {}})
    entry = b.entries["r"]
    assert head(b, entry)["finished"] is False and head(b, entry)["tests"] == 0


def test_hostile_values_are_kept_as_bounded_text() -> None:
    b = board()
    b.finish_test(
        {"run_id": ["x"], "test_name": {"a": 1}, "worker": 5, "host": None, "outcome": []}
    )
    b.start_test({"run_id": "r" * 10_000, "test_name": "<b>" * 1000})
    b.finish_session({"run_id": None})
    assert all(len(run_id) <= 200 for run_id in b.entries)
    rows = [t for e in b.entries.values() for t in listed(e, "", "")["tests"]]
    assert all(isinstance(t["name"], str) and len(t["name"]) <= 1000 for t in rows)


def test_expected_tests_shards_and_missing_ones() -> None:
    """Two shards of one run: the collected tests are expected, the run stays open until
    both shards finish, and a collected test that never finished is counted missing."""
    b = board()
    for session, names in (("s1", ["a", "b"]), ("s2", ["c"])):
        b.start_session({"run_id": "r", "session_id": session, "environment": {"host": session}})
        b.collect_tests(
            {"run_id": "r", "session_id": session, "tests": [["t.py", n] for n in names]}
        )
    shown = head(b, b.entries["r"])
    assert (shown["expected"], shown["counts"], shown["sessions_open"]) == (3, {}, 2)
    finish(b, "r", "a", session_id="s1")
    finish(b, "r", "c", session_id="s2")
    b.finish_session({"run_id": "r", "session_id": "s1", "exit_status": 0})
    shown = head(b, b.entries["r"])
    assert not shown["finished"] and shown["missing"] is None
    b.finish_session({"run_id": "r", "session_id": "s2", "exit_status": 1})
    shown = head(b, b.entries["r"])
    assert shown["finished"] and shown["missing"] == 1
    assert shown["counts"] == {"passed": 2, "missing": 1}
    assert shown["exit_status"] == 1


class Timers:
    """A ``call_at`` that keeps the timers for the test to fire: no clock to wait on."""

    def __init__(self) -> None:
        self.set: list[Timer] = []

    def __call__(self, due: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(due, callback)
        self.set.append(timer)
        return timer

    def live(self) -> list[Timer]:
        return [t for t in self.set if not t.cancelled and not t.fired]


@dataclass
class Timer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False
    fired: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        assert not self.cancelled and not self.fired
        self.fired = True
        self.callback()


def timed_board(timers: Timers, run_timeout: float = 60.0) -> RunBoard:
    return RunBoard(1000, lambda: None, run_timeout, timers)


def test_a_run_gets_one_timer_at_its_first_event_and_it_moves_only_when_due() -> None:
    timers = Timers()
    b = timed_board(timers)
    before = time.monotonic()
    start(b, "r", "a")
    finish(b, "r", "a")
    start(b, "r", "b")
    [timer] = timers.live()  # later events cost the clock nothing
    assert before + 60 <= timer.due <= time.monotonic() + 60
    timer.fire()  # early (the run was not quiet for 60 s): the deadline moves on
    [moved] = timers.live()
    assert moved.due == b.entries["r"].run.last_event + 60
    assert not b.entries["r"].finished


def test_a_quiet_run_ends_at_its_run_timeout_its_unfinished_tests_missing() -> None:
    timers = Timers()
    b = timed_board(timers)
    b.start_session({"run_id": "r", "session_id": "s1"})
    start(b, "r", "a")
    finish(b, "r", "a")
    start(b, "r", "b")
    changes: list[int] = []
    b.listeners.append(lambda: changes.append(b.seq))
    entry = b.entries["r"]
    entry.run.last_event -= 61  # quiet for longer than run_timeout
    [timer] = timers.live()
    seen, last = b.seq, entry.last_event
    timer.fire()
    assert entry.last_event == last  # the run's last event, not the moment it timed out
    shown = run_json(b, entry, since=seen)  # what a page following the run is sent
    assert shown["finished"] and shown["timed_out"] and changes  # subscribers are told
    assert shown["counts"] == {"passed": 1, "missing": 1} and shown["missing"] == 1
    assert [lane["test"] for lane in shown["lanes"]] == [None]  # its worker is idle now
    assert timers.live() == []


def test_a_finished_run_sends_its_lanes_idle() -> None:
    b = board()
    start(b, "r", "a")
    seen = b.seq
    b.finish_session({"run_id": "r", "exit_status": 1})
    shown = run_json(b, b.entries["r"], since=seen)
    assert shown["finished"] and [lane["test"] for lane in shown["lanes"]] == [None]


def test_a_run_that_finishes_cancels_its_timer_and_a_dropped_one_too() -> None:
    timers = Timers()
    b = timed_board(timers)
    b.start_session({"run_id": "done", "session_id": "s"})
    b.finish_session({"run_id": "done", "session_id": "s", "exit_status": 0})
    assert [t.cancelled for t in timers.set] == [True]
    assert not head(b, b.entries["done"])["timed_out"]
    for n in range(MAX_RUNS + 1):  # the finished run, then the oldest open one, make room
        start(b, f"r{n}", "a")
    assert "done" not in b.entries and "r0" not in b.entries
    assert len(timers.live()) == MAX_RUNS and timers.set[1].cancelled  # r0's


def test_restored_runs_keep_the_quiet_time_before_the_restart() -> None:
    timers = Timers()
    b = timed_board(timers)

    def found(run: str, age: float) -> Found:
        test = {"run_id": run, "test_name": "a", "test_location": "t.py"}
        return Found(run, [("start_test", test)], False, time.time() - age)

    assert b.restore([found("old", 61), found("new", 20)]) == 2
    assert head(b, b.entries["old"])["timed_out"]
    [timer] = timers.live()
    assert timer.due <= time.monotonic() + 40.5  # 60 s from its last event, 20 s ago
    assert not b.entries["new"].finished


def test_the_live_view_ends_runs_by_the_longest_run_timeout_of_the_run_plugins() -> None:
    assert run_timeout_of([]) == DEFAULT_RUN_TIMEOUT
    specs: list[tuple[str, bool, dict[str, Any]]] = [
        ("report", True, {"run_timeout": 30.5}),
        ("junit", True, {"run_timeout": 120.5}),
        ("junit", False, {"run_timeout": 7200}),  # disabled
        ("report", True, {"run_timeout": 1e309}),  # refused: that instance does not start
        ("archive", True, {"run_timeout": 9000}),  # not a run plugin
    ]
    assert run_timeout_of(specs) == 120.5
    assert run_timeout_of([("report", True, {})]) == DEFAULT_RUN_TIMEOUT


def test_a_finish_session_after_the_clock_ended_the_run_keeps_it() -> None:
    timers = Timers()
    b = timed_board(timers)
    b.start_session({"run_id": "r", "session_id": "a"})
    finish(b, "r", "x")
    entry = b.entries["r"]
    entry.run.last_event -= 61
    timers.live()[0].fire()
    b.finish_session({"run_id": "r", "session_id": "a", "exit_status": 0})
    assert b.entries["r"] is entry and head(b, entry)["counts"] == {"passed": 1}
    b.finish_session({"run_id": "never-seen", "exit_status": 0})
    assert "never-seen" not in b.entries


def test_the_replay_handed_to_the_live_view_is_its_run_events_bounded_without_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the events the board follows, without captured output, in order, within
    RESTORE_BYTES: the rest are counted as not shown."""
    monkeypatch.setattr(run_board, "RESTORE_BYTES", 2000)
    test = {"run_id": "r", "test_location": "t.py", "test_name": "a"}
    replay: list[tuple[str, str, dict[str, Any]]] = [
        ("tcp1-1", "start_test", test),
        ("tcp1-2", "archive_it", {"x": 1}),  # not a run event
        ("tcp1-3", "finish_test", {**test, "outcome": "passed", "sections": [["out", "x" * 5000]]}),
        ("tcp1-4", "finish_test", {**test, "test_name": "b", "longrepr": "y" * 5000}),
        ("tcp1-5", "finish_session", {"run_id": "r"}),
    ]
    restored = run_board.restored_runs(str(tmp_path), replay)  # no state file there
    assert restored.found == ()
    assert restored.replayed == (
        ("start_test", test),
        ("finish_test", {**test, "outcome": "passed"}),
        ("finish_session", {"run_id": "r"}),
    )
    assert restored.not_shown == 1  # b's 5,000 characters of failure text
