"""A run's state: its sessions and expected tests (Runs), the clock that ends a quiet run
(IdleClock), the state files that survive a restart (StateFiles, RunKeeper), and the
pytest side's chunks of collected ids."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rigger_mp.core.config import RiggerConfig
from rigger_mp.core.rigger import Rigger
from rigger_mp.errors import PluginError
from rigger_mp.plugins.junit import JUnitPlugin
from rigger_mp.plugins.report import ReportPlugin
from rigger_mp.plugins.report_page import Links, render
from rigger_mp.plugins.run_clock import IdleClock
from rigger_mp.plugins.run_state import WRITING, StateFiles
from rigger_mp.plugins.runs import MISSING, PENDING, UNFINISHED, Limits, Runs, Snapshot
from rigger_mp.pytest_collection import CHUNK_BYTES, MAX_ID, chunks, split_nodeid
from tests.test_report import page_data

WAIT = 30.0


def finish(runs: Runs, session: str, name: str, result: str = "passed") -> None:
    runs.finish_test(
        {"run_id": "r", "session_id": session, "test_location": "t.py", "test_name": name}
        | {"test_result": result, "host": f"host-{session}", "worker": "main"}
    )


def test_a_run_ends_when_its_last_session_finishes_with_the_worst_status() -> None:
    runs = Runs("r", Limits())
    for session in ("a", "b"):
        runs.start_session("r", {"host": f"host-{session}"}, session)
        runs.collect("r", session, [["t.py", "x"], ["t.py", "y"]])
    finish(runs, "a", "x")
    finish(runs, "a", "y", "failed")
    assert runs.finish_session("r", "a", 1) is None  # b is still running
    runs.start_test("r", "t.py", "x", session_id="b")
    assert {c.outcome for c in runs.run("r").cases.values()} == {
        "passed",
        "failed",
        UNFINISHED,
        PENDING,
    }
    finish(runs, "b", "x")
    snapshot = runs.finish_session("r", "b", 0)
    assert isinstance(snapshot, Snapshot)
    assert snapshot.exit_status == 1 and not snapshot.timed_out
    assert (snapshot.expected, snapshot.missing) == (4, 1)
    assert snapshot.counts() == {"passed": 2, "failed": 1, MISSING: 1}
    (missing,) = [c for c in snapshot.cases if c.outcome == MISSING]
    assert (missing.session, missing.name, missing.host) == ("b", "y", "host-b")
    assert missing.missing_note.startswith("collected, never started")
    assert [s.session_id for s in snapshot.sessions] == ["a", "b"]


def test_a_run_of_n_shards_waits_for_n_sessions_however_late_they_start(tmp_path: Path) -> None:
    runs = Runs("r", Limits())
    runs.start_session("r", {}, "a", shards=3)
    finish(runs, "a", "x")
    assert runs.finish_session("r", "a", 0) is None  # b and c have not started yet
    runs.start_session("r", {}, "b", shards="3")  # not a number: the 3 said stands
    finish(runs, "b", "y")
    assert runs.finish_session("r", "b", 0) is None
    snapshot = runs.idle("r", 0.0)  # c never starts: the run's timeout ends it
    assert isinstance(snapshot, Snapshot) and snapshot.timed_out and snapshot.shards == 3
    page = render(snapshot, Links(tmp_path, {}, None))
    assert "1 of its 3 shards never started." in page
    assert "<h2>Sessions (2 of 3 shards)</h2>" in page
    runs.start_session("s", {}, "a", shards=True)  # not a count: ignored
    assert runs.finish_session("s", "a", 0) is not None


def test_a_chunk_sent_twice_counts_once_and_a_test_two_shards_ran_is_two_cases() -> None:
    runs = Runs("r", Limits())
    for _ in range(2):
        runs.collect("r", "a", [["t.py", "x"], "junk", ["t.py", 3], [None, "y"]])
    runs.collect("r", "b", [["t.py", "x"]])
    finish(runs, "a", "x")
    finish(runs, "b", "x")
    snapshot = runs.finish("r", 0)
    assert snapshot.expected == 3  # a: x and "None"/y; b: x
    assert sorted((c.session, c.name, c.outcome) for c in snapshot.cases) == [
        ("a", "x", "passed"),
        ("a", "y", MISSING),
        ("b", "x", "passed"),
    ]


def test_expected_tests_beyond_max_tests_are_counted_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    runs = Runs("r", Limits(max_tests=3))
    runs.collect("r", "a", [["t.py", f"t{n}"] for n in range(5)])
    assert runs.held[0] == 3
    for n in (0, 4):  # one kept, one beyond the bound
        finish(runs, "a", f"t{n}")
    snapshot = runs.finish("r", 0)
    assert (snapshot.expected, snapshot.missing, snapshot.missing_unlisted) == (5, 3, 1)
    assert snapshot.counts() == {"passed": 2, MISSING: 3}
    page = render(snapshot, Links(tmp_path, {}, None))
    assert 'id="missing-unlisted">1 missing tests beyond max_tests (3)' in page
    runs.release(snapshot)
    assert runs.held == (0, 0)


def test_a_quiet_run_times_out_and_its_open_sessions_say_so() -> None:
    runs = Runs("r", Limits())
    runs.start_session("r", {}, "a")
    runs.start_session("r", {}, "b")
    runs.finish_session("r", "a", 0)
    due = runs.idle("r", 3600)
    assert isinstance(due, float) and due > time.monotonic() + 3000
    snapshot = runs.idle("r", 0.0)
    assert isinstance(snapshot, Snapshot) and snapshot.timed_out
    assert [(s.session_id, s.timed_out) for s in snapshot.sessions] == [("a", False), ("b", True)]
    assert runs.idle("r", 0.0) is None  # ended: the clock's late call does nothing


def test_the_clock_wakes_for_an_earlier_deadline_and_forgets() -> None:
    fired: list[str] = []
    woke = threading.Event()

    def due(key: str) -> None:
        fired.append(key)
        woke.set()

    clock = IdleClock("test", due)
    try:
        clock.arm("late", time.monotonic() + 3600)
        clock.arm("gone", time.monotonic() + 3600)
        clock.forget("gone")
        clock.arm("soon", time.monotonic())  # earlier than the thread's wait: it wakes
        assert woke.wait(WAIT)
        assert fired == ["soon"]
    finally:
        clock.close()
    assert fired == ["soon"]


def test_a_state_file_reads_back_skips_a_torn_line_and_is_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = StateFiles(tmp_path, "report", max_bytes=400)
    files.append("run", "start_session", {"run_id": "run"})
    files.close()
    path = tmp_path / "run" / ".rigger-state-report.jsonl"
    with path.open("ab") as out:
        out.write(b'["finish_test",{"test_na')  # a kill in the middle of a line
    files.append("run", "finish_test", {"test_name": "x"})
    with caplog.at_level(logging.WARNING, "rigger_mp"):
        files.append("run", "finish_test", {"test_name": "y" * 400})
        files.append("run", "finish_test", {"test_name": "z"})
    assert "max_state_bytes (400)" in caplog.text
    (found,) = files.found()
    assert [e for e, _ in found.events] == ["start_session", "finish_test"]
    assert found.events[1][1] == {"test_name": "x"} and not found.ended
    files.retire("run")
    (found,) = files.found()
    assert found.ended and path.with_name(path.name + WRITING).is_file()
    files.remove("run")
    assert list(files.found()) == []


def test_a_link_planted_at_the_state_file_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "root" / "run").mkdir(parents=True)
    (tmp_path / "root" / "run" / ".rigger-state-report.jsonl").symlink_to(target)
    files = StateFiles(tmp_path / "root", "report", max_bytes=1 << 20)
    with caplog.at_level(logging.WARNING, "rigger_mp"):
        files.append("run", "start_session", {"run_id": "run"})
    assert target.read_text() == "keep" and "symbolic link" in caplog.text
    assert list(files.found()) == []


def config(root: Path, **keys: Any) -> dict[str, Any]:
    return {
        "plugins": {
            "report": {"plugin": "report", "dir": str(root), **keys},
            "junit": {"plugin": "junit", "dir": str(root), **keys},
        }
    }


def fire(rigger: Rigger, event: str, **data: Any) -> None:
    rigger.fire_hook(event, run_id="r", **data).result()


def test_a_run_left_open_is_read_back_and_one_left_quiet_ends_at_start(tmp_path: Path) -> None:
    with Rigger(config(tmp_path)) as rigger:
        fire(rigger, "start_session", session_id="a", environment={"host": "h"})
        fire(rigger, "collect_tests", session_id="a", tests=[["t.py", "x"], ["t.py", "y"]])
        fire(rigger, "finish_test", session_id="a", test_name="x", test_location="t.py")
    assert not (tmp_path / "r" / "report.html").exists()
    with Rigger(config(tmp_path)) as rigger:  # the run goes on where it was
        report = rigger.get_instance_obj("report")
        assert isinstance(report, ReportPlugin)
        runs = report.runs
        assert {c.name: c.outcome for c in runs.run("r").cases.values()} == {
            "x": "unknown",
            "y": PENDING,
        }
    states = list((tmp_path / "r").glob(".rigger-state-*.jsonl"))
    assert len(states) == 2
    for state in states:  # an hour and more without an event
        os.utime(state, (time.time() - 3700, time.time() - 3700))
    with Rigger(config(tmp_path)):
        pass  # started, it ends the run at once; stop() waits for the files
    data = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (data["counts"], data["timed_out"], data["expected"]) == (
        {"unknown": 1, MISSING: 1},
        True,
        2,
    )
    assert 'type="missing"' in (tmp_path / "r" / "junit.xml").read_text()
    assert not list((tmp_path / "r").glob(".rigger-state-*"))


def test_a_run_being_written_when_the_dispatcher_died_is_written_at_start(
    tmp_path: Path,
) -> None:
    state = tmp_path / "r" / (".rigger-state-report.jsonl" + WRITING)
    state.parent.mkdir()
    lines = [
        ["start_session", {"run_id": "r", "session_id": "a"}],
        ["finish_test", {"run_id": "r", "session_id": "a", "test_name": "x"}],
        ["finish_session", {"run_id": "r", "session_id": "a", "exit_status": 0}],
    ]
    state.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Rigger({"plugins": {"report": {"plugin": "report", "dir": str(tmp_path)}}}):
        pass
    assert [t[2] for t in page_data(tmp_path / "r" / "report.html")["tests"]] == ["x"]
    assert not state.exists()


@pytest.mark.parametrize("plugin", [ReportPlugin, JUnitPlugin])
@pytest.mark.parametrize(
    "bad",
    [{"run_timeout": 0}, {"run_timeout": "1"}, {"run_timeout": True}, {"max_state_bytes": -1}],
)
def test_run_timeout_and_max_state_bytes_are_checked(plugin: type, bad: dict[str, Any]) -> None:
    with pytest.raises(PluginError, match=next(iter(bad))):
        plugin("x", bad)


def test_collected_ids_go_in_chunks_within_the_message_bound() -> None:
    tests = [(f"tests/test_{n % 100}.py", f"test_many[{'é' * (n % 7)}{n}]") for n in range(100_000)]
    tests.append(("tests/test_long.py", "x" * 5000))
    sent = list(chunks(tests))
    assert len(sent) > 1
    assert max(len(json.dumps(chunk)) for chunk in sent) <= CHUNK_BYTES
    assert RiggerConfig.max_message_bytes > CHUNK_BYTES * 2  # the default
    got = [tuple(pair) for chunk in sent for pair in chunk]
    assert got[:-1] == tests[:-1] and got[-1] == ("tests/test_long.py", "x" * MAX_ID)


@pytest.mark.parametrize(
    ("nodeid", "pair"),
    [
        ("t/test_x.py::test_y", ("t/test_x.py", "test_y")),
        ("test_x.py::TestC::test_y[a::b]", ("test_x.py", "TestC.test_y[a::b]")),
        ("test_x.py::TestA::TestB::test_y[[x]]", ("test_x.py", "TestA.TestB.test_y[[x]]")),
    ],
)
def test_a_test_id_splits_as_pytest_locates_the_test(nodeid: str, pair: tuple[str, str]) -> None:
    assert split_nodeid(nodeid) == pair


def told_when_written(rigger: Rigger) -> threading.Event:
    """An event set each time the report instance has written a run's files."""
    report = rigger.get_instance_obj("report")
    assert isinstance(report, ReportPlugin)
    ended = threading.Event()
    write_run = report.write_run

    def write_and_tell(snapshot: Snapshot, prepared: Any) -> None:
        write_run(snapshot, prepared)
        ended.set()

    setattr(report, "write_run", write_and_tell)  # noqa: B010
    return ended


def test_a_quiet_run_ends_through_the_event_thread_and_0_keeps_no_state(
    tmp_path: Path,
) -> None:
    keys = {"run_timeout": 0.05, "max_state_bytes": 0}
    with Rigger({"plugins": {"report": {"plugin": "report", "dir": str(tmp_path), **keys}}}) as r:
        ended = told_when_written(r)
        fire(r, "start_session", session_id="a")
        fire(r, "start_session", session_id="b")
        fire(r, "finish_session", session_id="a", exit_status=0)
        assert not list(tmp_path.glob("r/.rigger-state-*"))
        assert ended.wait(WAIT)  # b never finishes: run_timeout ends the run
    data = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (data["timed_out"], data["sessions"], data["exit_status"]) == (True, 2, 0)


def test_a_finish_session_after_its_run_timed_out_writes_nothing_over_it(
    tmp_path: Path,
) -> None:
    keys = {"run_timeout": 0.05}
    with Rigger({"plugins": {"report": {"plugin": "report", "dir": str(tmp_path), **keys}}}) as r:
        ended = told_when_written(r)
        fire(r, "start_session", session_id="a")
        fire(r, "finish_test", session_id="a", test_location="t.py", test_name="x")
        assert ended.wait(WAIT)  # the session is late: run_timeout ends the run
        fire(r, "finish_session", session_id="a", exit_status=0)  # ... and then it ends
    assert len(page_data(tmp_path / "r" / "report.html")["tests"]) == 1
    assert json.loads((tmp_path / "r" / "run.json").read_text())["timed_out"]
    assert not list(tmp_path.glob("r/.rigger-state-*"))  # nothing kept for the late one


def test_runs_end_nothing_at_the_finish_session_of_a_run_not_open() -> None:
    runs = Runs("r", Limits())
    runs.start_session("r", {}, "a")
    assert isinstance(runs.idle("r", 0.0), Snapshot)
    assert runs.finish_session("r", "a", 0) is None and not runs.is_open("r")
    assert runs.finish_session("never-seen", "a", 0) is None and not runs.is_open("never-seen")
