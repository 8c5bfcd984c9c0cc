"""Group commit: waiters return once committed, groups form under load, failures fan out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp.journal import (
    GroupCommitter,
    JournalCommitError,
    JournalEncodeError,
    JournalError,
    JournalStore,
    encode,
)
from rigger_mp.journal.committer import Outcome
from rigger_mp.journal.locks import WriterLock


@pytest.fixture
def committer(tmp_path: Path) -> Iterator[GroupCommitter]:
    store = JournalStore.open(tmp_path / "j.db")
    committer = GroupCommitter(store)
    yield committer
    committer.close()
    store.close()


class Collect:
    """Callbacks of :meth:`GroupCommitter.submit`, with an event once ``n`` came in."""

    def __init__(self, n: int) -> None:
        self.outcomes: list[Outcome] = []
        self._n = n
        self.all_in = threading.Event()

    def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if len(self.outcomes) == self._n:
            self.all_in.set()


def test_append_returns_once_its_row_is_committed(committer: GroupCommitter) -> None:
    seq = committer.append("1", "ev", {"a": 1})
    other = JournalStore.open(committer.store.path, owner=False)  # another connection
    try:
        assert [(e.seq, e.tid, e.data()) for e in other.pending()] == [(seq, "1", {"a": 1})]
    finally:
        other.close()


def test_everything_queued_during_a_commit_goes_into_the_next(
    committer: GroupCommitter,
) -> None:
    writer = WriterLock(committer.store.path)  # stalls the commit thread, as a slow fsync would
    collect = Collect(200)
    with writer.held():
        for i in range(200):
            committer.submit([(str(i), "ev", *encode("ev", {"i": i}))], collect)
    assert collect.all_in.wait(30)
    writer.close()
    # The thread may take any number of the first submits before it blocks on the lock;
    # whatever it had not taken by then goes into one next commit: two commits in all.
    assert committer.commits <= 2
    assert committer.stats()["max_group_size"] >= 100
    seqs = [s for outcome in collect.outcomes for s in outcome]  # type: ignore[union-attr]
    assert seqs == list(range(1, 201))  # callbacks in order, seqs in submission order


def test_a_lone_caller_commits_in_its_own_thread_and_leaves_the_rest_to_the_thread(
    committer: GroupCommitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hand-off for a caller that finds nobody committing; callers that find a commit
    under way are grouped by the journal thread once it ends (the leader does not wait
    for their commit)."""
    seen: list[tuple[str, int]] = []
    leading = threading.Event()
    commit = committer.store.commit

    def recording(rows: Any, done: Any = (), *ids: Any) -> range:
        seen.append((threading.current_thread().name, len(rows)))
        leading.set()
        return commit(rows, done, *ids)

    monkeypatch.setattr(committer.store, "commit", recording)
    row = ("t", "ev", *encode("ev", {"a": 1}))
    assert committer.append_rows([row, row]) == range(1, 3)
    assert seen == [("MainThread", 2)]

    submitted = threading.Semaphore(0)
    submit = committer.submit

    def counting(rows: Any, callback: Any) -> None:
        submit(rows, callback)
        submitted.release()

    monkeypatch.setattr(committer, "submit", counting)
    leading.clear()
    got: dict[str, range] = {}

    def append(name: str) -> None:
        got[name] = committer.append_rows([row])

    threads = [threading.Thread(target=append, args=(f"a{i}",), name=f"a{i}") for i in range(4)]
    with WriterLock(committer.store.path).held():  # the leader's commit stalls on it
        threads[0].start()
        assert leading.wait(10)
        submitted.acquire()
        for thread in threads[1:]:
            thread.start()
            submitted.acquire()  # queued while a0 leads
    for thread in threads:
        thread.join()
    assert seen[1:] == [("a0", 1), ("rigger_mp-journal", 3)]
    assert sorted(s for r in got.values() for s in r) == [3, 4, 5, 6]


def test_concurrent_appenders_each_get_their_own_seqs(committer: GroupCommitter) -> None:
    results: dict[int, list[int]] = {}

    def appender(k: int) -> None:
        results[k] = [committer.append(f"{k}-{i}", "ev", {"i": i}) for i in range(200)]

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(s for seqs in results.values() for s in seqs)
    assert every == list(range(1, 1601))
    assert all(seqs == sorted(seqs) for seqs in results.values())
    stats = committer.stats()
    assert stats["pending"] == 1600 and stats["appended"] == 1600
    assert stats["commits"] <= 1600 and stats["mean_group_size"] >= 1.0


def test_a_failing_commit_fails_every_append_of_its_group(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.db", max_pages=20)  # 160 KiB at most
    committer = GroupCommitter(store)
    writer = WriterLock(store.path)
    collect = Collect(8)
    big = ("x", "ev", *encode("ev", {"pad": "p" * 200_000}))
    try:
        with writer.held():
            for _ in range(8):
                committer.submit([big], collect)
        assert collect.all_in.wait(30)
        assert all(isinstance(o, JournalCommitError) for o in collect.outcomes)
        assert 1 <= committer.failed_commits <= 2  # one group of 7 or 8 at least
        assert str(store.path) in str(collect.outcomes[0])
        assert store.counts() == (0, 0)
        assert committer.append("small", "ev", {}) == 1  # and it goes on
    finally:
        writer.close()
        committer.close()
        store.close()


def test_blocked_waiters_of_a_failed_group_each_raise_their_own_error(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.db", max_pages=20)
    committer = GroupCommitter(store)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def appender(k: int) -> None:
        try:
            committer.append(str(k), "ev", {"pad": "p" * 200_000})
        except JournalCommitError as exc:
            with lock:
                errors.append(exc)

    try:
        threads = [threading.Thread(target=appender, args=(k,)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 8 and len({id(e) for e in errors}) == 8
        assert all(isinstance(e.__cause__, JournalError) for e in errors)
    finally:
        committer.close()
        store.close()


def test_data_that_cannot_be_journaled_fails_its_caller_only(committer: GroupCommitter) -> None:
    with pytest.raises(JournalEncodeError, match="'lock'"):
        committer.append("1", "ev", {"lock": threading.Lock()})
    assert committer.append("2", "ev", {"t": (1, 2)}) == 1
    assert committer.store.pending()[0].data() == {"t": (1, 2)}


def test_done_marks_do_not_wait_and_close_writes_them(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.db")
    committer = GroupCommitter(store)
    seqs = [committer.append(str(i), "ev", {}) for i in range(10)]
    for seq in seqs[:7]:
        committer.done(seq)
    committer.close()
    assert [e.tid for e in store.pending()] == ["7", "8", "9"]
    assert committer.stats()["done_marks"] == 7
    with pytest.raises(JournalError, match="closed"):
        committer.append("late", "ev", {})
    committer.done(seqs[8])  # after close: counted, the event will be replayed
    assert committer.stats()["done_marks_dropped"] == 1
    store.close()


def test_stats_report_rates_groups_and_latency(committer: GroupCommitter) -> None:
    committer.append("1", "ev", {})
    stats = committer.stats()
    assert stats["commits"] == 1 and stats["commits_per_second"] > 0
    assert stats["mean_group_size"] == 1.0 and stats["last_commit_seconds"] > 0
    assert stats["pending"] == 1 and stats["dead"] == 0 and stats["bytes"] > 0
