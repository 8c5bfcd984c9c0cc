"""The journal in the dispatcher (issue #13), in process: commit, done marks, replay, faults."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import RiggerBasePlugin
from rigger_mp.core import journaling
from rigger_mp.core.rigger import Rigger, parts_of
from rigger_mp.journal import (
    MARSHAL,
    JournalCommitError,
    JournalCorrupt,
    JournalFull,
    JournalLocked,
    JournalStore,
    encode,
)
from rigger_mp.journal.store import _fault


class Gate(RiggerBasePlugin):
    """``ev(x)`` records what it saw; ``block`` waits until the test opens the gate."""

    def plugin_initialize(self) -> None:
        self.seen: list[tuple[Any, bool, int]] = []
        self.gate = threading.Event()
        self.register_plugin_hook("ev", self.ev)
        self.register_plugin_hook("block", self.block)

    def ev(self, x: Any, rigger_replay: bool = False, rigger_attempt: int = 1) -> None:
        self.seen.append((x, rigger_replay, rigger_attempt))

    def block(self) -> None:
        self.gate.wait()


def make(path: Path, **config: Any) -> Rigger:
    rigger = Rigger({"journal": str(path), "plugins": {"g": {"plugin": "gate"}}, **config})
    rigger.register_plugin(Gate, "gate")
    return rigger


def gate(rigger: Rigger) -> Gate:
    obj = rigger.get_instance_obj("g")
    assert isinstance(obj, Gate)
    return obj


def peek(path: Path) -> JournalStore:
    """A second (non-owner) connection to read the journal while its dispatcher runs."""
    return JournalStore.open(path, owner=False)


def test_fire_hook_returns_once_committed_and_done_deletes_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rigger = make(path).start()
    try:
        blocker = rigger.fire_hook("block")
        task = rigger.fire_hook("ev", x=(1, 2))  # a tuple: pickled, comes back a tuple
        reader = peek(path)
        try:
            rows = reader.pending()
            assert [(r.tid, r.hook) for r in rows] == [(blocker.tid, "block"), (task.tid, "ev")]
            assert rows[1].data() == {"x": (1, 2)}
            gate(rigger).gate.set()
            task.result(timeout=10)
            rigger.wait_background()
        finally:
            reader.close()
    finally:
        rigger.stop()
    stats = rigger.stats()["journal"]
    assert stats["pending"] == 0 and stats["appended"] == 2 and stats["done_marks"] == 2
    assert stats["mean_group_size"] >= 1 and "last_commit_seconds" in stats


def test_replay_runs_first_in_order_with_tids_and_attempt(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    store.commit([(f"old-{i}", "ev", *encode("ev", {"x": i})) for i in range(3)])
    store.close()
    rigger = make(path).start()
    try:
        rigger.fire_hook("ev", x="new").result(timeout=10)
    finally:
        rigger.stop()
    # Never started before: this replay is their first run.
    assert gate(rigger).seen == [(0, True, 1), (1, True, 1), (2, True, 1), ("new", False, 1)]
    assert rigger.stats()["journal"]["pending"] == 0


def test_a_row_that_does_not_decode_is_dead_lettered_with_its_error_the_rest_replays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    store.commit([("1", "ev", MARSHAL, b"\xffnot marshal"), ("2", "ev", *encode("ev", {"x": 2}))])
    store.close()
    rigger = make(path).start()
    try:
        rigger.fire_hook("ev", x=3).result(30)
    finally:
        rigger.stop()
    assert gate(rigger).seen == [(2, True, 1), (3, False, 1)]
    assert "event 1 ('ev', seq 1) cannot be decoded, moved to the dead letters" in caplog.text
    left = JournalStore.open(path)
    try:
        assert left.pending() == []
        [dead] = left.dead()
        assert (dead.tid, dead.attempts) == ("1", 0)  # it never started
        assert dead.reason is not None
        assert dead.reason.startswith("its data cannot be decoded: ValueError: bad marshal data")
    finally:
        left.close()


def test_stop_with_an_event_still_running_leaves_it_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rigger = make(path).start()
    rigger.fire_hook("block")
    rigger.fire_hook("ev", x=1)
    rigger.stop(timeout=0.2)  # abandons the queued event; the blocked one is left running
    gate(rigger).gate.set()
    rigger.wait_stopped()
    again = make(path).start()
    gate(again).gate.set()  # the replayed "block" runs first
    try:
        again.wait_background()
    finally:
        again.stop()
    assert (1, True, 1) in gate(again).seen  # abandoned while queued: it had not started
    left = JournalStore.open(path)
    try:
        assert left.counts() == (0, 0)
    finally:
        left.close()


def test_a_done_mark_is_committed_while_a_later_event_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The done mark goes to the committer as its event ends, not behind the events
    queued after it: here one that blocks until the mark is committed."""
    rigger = make(tmp_path / "j.db").start()
    try:
        journal = rigger._journal
        assert journal is not None
        commit = journal.store.commit
        committed: list[int] = []
        came = threading.Event()

        def watched(rows: Any, done: Any = (), *ids: Any) -> range:
            result = commit(rows, done, *ids)
            committed.extend(done)
            if committed:
                came.set()
            return result

        monkeypatch.setattr(journal.store, "commit", watched)
        first, blocker = rigger.fire_many([("ev", {"x": 1}), ("block", {})])
        first.result(timeout=10)
        assert came.wait(10) and first.seq in committed
        assert not blocker.done()  # still blocked: the mark did not wait for it
        reader = peek(tmp_path / "j.db")
        try:
            assert [e.tid for e in reader.pending()] == [blocker.tid]
        finally:
            reader.close()
        gate(rigger).gate.set()
        blocker.result(timeout=10)
    finally:
        gate(rigger).gate.set()
        rigger.stop()
    assert rigger.stats()["journal"]["max_done_lag_seconds"] > 0


def test_a_failed_commit_fails_the_fire_and_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rigger = make(tmp_path / "j.db").start()
    try:
        journal = parts_of(rigger).journal
        assert journal is not None

        def broken(*args: Any, **kwargs: Any) -> range:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(journal.store, "commit", broken)
        with pytest.raises(JournalCommitError, match=r"j\.db"):
            rigger.fire_hook("ev", x=1)
        monkeypatch.undo()
        rigger.fire_hook("ev", x=2).result(timeout=10)
    finally:
        rigger.stop()
    assert gate(rigger).seen == [(2, False, 1)]
    assert rigger.stats()["events"]["failed"] == 1


def test_full_sync_reads_back_full(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rigger = make(path, journal_sync="full").start()
    try:
        rigger.fire_hook("block")
        journal = parts_of(rigger).journal
        assert journal is not None and journal.store.sync == "full"
        with journal.store._lock:
            level = journal.store._db.execute("PRAGMA synchronous").fetchone()[0]
        assert level == 2  # FULL (the last commit appended a row)
    finally:
        gate(rigger).gate.set()
        rigger.stop()


def test_start_names_a_corrupt_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(JournalCorrupt, match=str(path)):
        make(path).start()


def test_start_names_a_locked_journal_and_can_be_called_again(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    holder = JournalStore.open(path)
    rigger = make(path)
    with pytest.raises(JournalLocked, match=str(path)):
        rigger.start()
    holder.close()
    rigger.start()
    rigger.stop()


def test_start_names_a_full_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills during the replay claim (the first write of a start)."""
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    store.commit([("old", "ev", *encode("ev", {"x": 1}))])
    store.close()

    def full(self: JournalStore, max_attempts: int) -> Any:
        raise _fault(self.path, sqlite3.OperationalError("database or disk is full"), "claim")

    monkeypatch.setattr(JournalStore, "claim_replay", full)
    rigger = make(path)
    with pytest.raises(JournalFull, match=str(path)):
        rigger.start()
    monkeypatch.undo()
    rigger.start()  # the file was released: a second start works, and replays
    rigger.stop()
    assert gate(rigger).seen == [(1, True, 1)]


def test_done_waits_for_every_backgrounded_item() -> None:
    marks: list[int] = []
    finished: list[int] = []

    class Committer:
        def done(self, seq: int) -> None:
            marks.append(seq)

    class Runs:
        def finished(self, seq: int) -> None:
            finished.append(seq)

    journal = journaling.Journaling.__new__(journaling.Journaling)
    journal._lock = threading.Lock()
    journal._outstanding, journal._owner = {}, {}
    journal.committer = Committer()  # type: ignore[assignment]
    journal.runs = Runs()  # type: ignore[assignment]
    journal.ended(1, [10, 11])
    journal.ended(2, [])
    assert marks == finished == [2]
    journal.settled([10, 99])
    assert marks == finished == [2]
    journal.settled([11])
    assert marks == finished == [2, 1]
