"""The journal file: order, done marks, replay attempts, dead letters, faults, size."""

from __future__ import annotations

import enum
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp.journal import (
    ATTEMPT_KEY,
    JSON,
    MARSHAL,
    PICKLE,
    REPLAY_KEY,
    JournalCorrupt,
    JournalEncodeError,
    JournalError,
    JournalFull,
    JournalStore,
    NewRow,
    decode,
    encode,
    encode_rows,
    replay_locals,
)
from rigger_mp.journal.runs import RunMap, runs_path
from rigger_mp.journal.store import PAGE_SIZE, WAL_AUTOCHECKPOINT, WAL_LIMIT
from tests._disk import fill
from tests._runs import died_running


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    """A str subclass: marshal refuses it, so it must be pickled."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournalStore]:
    opened = JournalStore.open(tmp_path / "j.db")
    yield opened
    opened.close()


def row(tid: str, hook: str = "ev", **data: object) -> NewRow:
    return (tid, hook, *encode(hook, data))


def test_appends_come_back_in_order_with_consecutive_seqs(store: JournalStore) -> None:
    first = store.commit([row("1", i=1), row("2", i=2)])
    second = store.commit([row("tcp1-1", "start_test", test_name="t")])
    assert list(first) == [1, 2] and list(second) == [3]
    pending = store.pending()
    assert [(e.seq, e.tid, e.hook, e.attempts) for e in pending] == [
        (1, "1", "ev", 0),
        (2, "2", "ev", 0),
        (3, "tcp1-1", "start_test", 0),
    ]
    assert pending[2].data() == {"test_name": "t"}
    assert [e.seq for e in store.pending(after=2)] == [3]


def test_a_group_over_several_statements_keeps_its_order_and_seqs(store: JournalStore) -> None:
    """2,500 rows go in as INSERTs of 1,024, 1,024, 256, 128, 64 and 4 rows; each row's seq
    follows the one before, across the statements, above a dead row's seq."""
    store.commit([row("old")])
    store.bury([1], "test")  # seq 1 dead: the group starts above it
    seqs = store.commit([row(f"t{i}", i=i) for i in range(2500)])
    assert list(seqs) == list(range(2, 2502))
    pending = store.pending()
    assert [(e.seq, e.tid, e.data()["i"]) for e in pending] == [
        (2 + i, f"t{i}", i) for i in range(2500)
    ]
    assert len({e.accepted for e in pending}) == 1  # one commit, one time accepted


def test_done_marks_delete_and_a_new_seq_is_above_every_row(store: JournalStore) -> None:
    store.commit([row("1"), row("2"), row("3")])
    store.commit([], done=[3, 1])
    assert [e.tid for e in store.pending()] == ["2"]
    assert list(store.commit([row("4")])) == [4]  # above 3, deleted: a seq names one event
    assert store.counts() == (2, 0)
    store.bury([2, 4], "test")
    assert list(store.commit([row("5")])) == [5]  # above the dead too: retry keeps theirs
    store.retry()
    assert [(e.seq, e.tid) for e in store.pending()] == [(2, "2"), (4, "4"), (5, "5")]


def test_a_seq_is_never_given_twice_in_the_life_of_the_file(tmp_path: Path) -> None:
    """Whatever deletes the highest rows (done marks, a purge, the dead letters purged),
    across owner opens, and from the server process's connection too."""
    path = tmp_path / "j.db"
    given: list[int] = []
    for boot in range(3):
        store = JournalStore.open(path)
        server = JournalStore.open(path, owner=False, checkpoints=False)
        try:
            given += server.commit([row(f"{boot}-a"), row(f"{boot}-b")])
            store.commit([], done=given[-2:])  # done marks alone, the highest included
            given += server.commit([row(f"{boot}-c")])
            store.bury([given[-1]], "test")
            given += store.commit([row(f"{boot}-d")])
            assert [e.tid for e in store.purge([f"{boot}-d"])] == [f"{boot}-d"]
            assert store.purge_dead() == 1
            assert store.counts() == (0, 0)
        finally:
            server.close()
            store.close()
    assert given == list(range(1, 13))


def test_a_one_event_commit_writes_one_page(tmp_path: Path) -> None:
    """The ack of a lone fire waits on this commit: its row's page and nothing else (an
    ``AUTOINCREMENT`` counter would be a second page, written by every commit)."""
    path = tmp_path / "j.db"
    server = JournalStore.open(path, owner=False, checkpoints=False)
    try:
        server.commit([row("0")])
        wal = Path(f"{path}-wal")
        before = wal.stat().st_size
        for n in range(1, 11):
            server.commit([row(str(n))])
        frame = 24 + PAGE_SIZE  # SQLite's WAL frame: a 24-byte header, then the page
        assert wal.stat().st_size - before == 10 * frame
    finally:
        server.close()


def test_a_journal_of_schema_1_is_still_read_and_written(tmp_path: Path) -> None:
    """Schema 1 counted seqs with ``AUTOINCREMENT``; such a file opens and goes on."""
    path = tmp_path / "j.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, tid TEXT NOT NULL,
            hook TEXT NOT NULL, fmt TEXT NOT NULL, data BLOB NOT NULL,
            accepted REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 1);
        CREATE TABLE dead (seq INTEGER PRIMARY KEY, tid TEXT NOT NULL, hook TEXT NOT NULL,
            fmt TEXT NOT NULL, data BLOB NOT NULL, accepted REAL NOT NULL,
            attempts INTEGER NOT NULL, died REAL NOT NULL, reason TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value);
        INSERT INTO meta VALUES ('generation', 0);
        PRAGMA application_id = 0x52474D4A;
        PRAGMA user_version = 1;
        PRAGMA journal_mode = WAL;
        """
    )
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'pending'").fetchone()[0]
    db.close()
    assert "AUTOINCREMENT" in sql
    old = JournalStore.open(path)
    try:
        assert list(old.commit([row("1"), row("2")])) == [1, 2]
        old.commit([], done=[1])
        assert list(old.commit([row("3")])) == [3]
        assert [e.tid for e in old.claim_replay(max_attempts=3)[0]] == ["2", "3"]
    finally:
        old.close()


def test_data_is_marshalled_when_exact_and_pickled_otherwise() -> None:
    plain: tuple[dict[Any, Any], ...] = (
        {"a": [1, 2.5, None, True, {"b": "c"}]},
        {"t": (1, 2)},
        {"d": {1: "int key"}},
    )
    for data in (*plain, {"nan": float("nan")}, {"s": {1}, "b": b"x"}):
        fmt, blob = encode("ev", data)
        assert fmt == MARSHAL
        assert repr(decode(fmt, blob)) == repr(data)
    exotic: tuple[dict[Any, Any], ...] = (
        {"e": Color.RED},
        {"k": [Color.RED]},
        {"o": OrderedDict(a=1)},
        {"s": Name("x")},
        {Color.RED: 1},
    )
    for odd in exotic:  # subclasses of what marshal takes: back as they went in
        fmt, blob = encode("ev", odd)
        assert fmt == PICKLE
        back = decode(fmt, blob)
        assert back == odd and [type(v) for v in back.values()] == [type(v) for v in odd.values()]
    assert decode(JSON, b'{"a": [1]}') == {"a": [1]}  # what earlier versions stored
    batch: list[tuple[str, str, dict[Any, Any]]] = [
        (str(i), "ev", data) for i, data in enumerate((*plain, *exotic))
    ]
    assert encode_rows(batch) == [(t, h, *encode(h, d)) for t, h, d in batch]  # fire_many's
    with pytest.raises(JournalEncodeError, match="'lock'") as info:
        encode("ev", {"ok": 1, "lock": __import__("threading").Lock()})
    assert isinstance(info.value, TypeError)


def test_an_attempt_is_a_run_that_started_and_did_not_finish(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    store.commit([row("1"), row("2"), row("3"), row("4")])
    store.close()
    died_running(path, 2, finished=(1,))  # 1 finished (its done mark lost), 2 was running
    store = JournalStore.open(path)
    run, dead = store.claim_replay(max_attempts=3)
    assert [(e.tid, e.attempts) for e in run] == [("2", 1), ("3", 0), ("4", 0)] and not dead
    locals_ = replay_locals(run[0])
    assert locals_[REPLAY_KEY] is True and locals_[ATTEMPT_KEY] == 2  # its second run
    assert replay_locals(run[1])[ATTEMPT_KEY] == 1  # 3 never started: this is its first
    store.close()
    for _ in range(2):  # 2 crashes the dispatcher at each start; 3 and 4 never start
        died_running(path, 2)
    store = JournalStore.open(path)
    run, dead = store.claim_replay(max_attempts=3)
    assert [(e.tid, e.attempts) for e in run] == [("3", 0), ("4", 0)]
    assert [(e.tid, e.attempts) for e in dead] == [("2", 3)]
    assert dead[0].reason is not None and "journal_max_attempts 3" in dead[0].reason
    assert [e.tid for e in store.dead()] == ["2"]
    assert store.counts() == (2, 1)
    store.close()


def test_a_run_map_is_counted_once_and_only_for_its_own_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    store.commit([row("1"), row("2")])
    store.close()
    died_running(path, 1)
    for _ in range(3):  # opens that start no map of their own (rigger-mp journal)
        store = JournalStore.open(path)
        assert [e.attempts for e in store.pending()] == [1, 0]
        store.close()
    other = JournalStore.open(tmp_path / "other.db")  # a map written for another journal
    runs = RunMap.start(str(path), other.journal_id, other.generation + 10)
    runs.started(2)
    runs.close()
    other.close()
    store = JournalStore.open(path)
    assert [e.attempts for e in store.pending()] == [1, 0]
    store.close()
    for damage in (b"", b"garbage"):  # a map cut short, or not a map: not read
        died_running(path, 2)
        with open(runs_path(str(path)), "r+b") as file:
            file.truncate(100)
            file.write(damage)
        store = JournalStore.open(path)
        assert [e.attempts for e in store.pending()] == [1, 0]
        store.close()


def test_retry_moves_dead_back_in_their_order_and_purge_deletes(store: JournalStore) -> None:
    store.commit([row("1"), row("2"), row("3")])
    store.bury([1, 2, 3], "test")  # all three dead
    with pytest.raises(JournalError, match="no dead event with tid nope"):
        store.retry(["2", "nope"])
    assert store.counts() == (0, 3)  # all or nothing
    assert [e.tid for e in store.retry(["3"])] == ["3"]
    store.commit([row("4")])
    assert [e.tid for e in store.retry()] == ["1", "2"]
    store.bury([4], "test")
    run, dead = store.claim_replay(max_attempts=1)
    assert [(e.tid, e.attempts) for e in run] == [("1", 0), ("2", 0), ("3", 0)]
    assert dead == [] and [e.tid for e in store.dead()] == ["4"]
    assert store.purge_dead() == 1 and store.dead() == []


def test_find_lists_pending_and_dead_with_a_tid(store: JournalStore) -> None:
    store.commit([row("7", x=1)])
    store.bury([1], "test")
    store.commit([row("7", x=2)])  # a file of a version whose tids repeated across runs
    found = store.find("7")
    assert [(e.data()["x"], e.died is None) for e in found] == [(2, True), (1, False)]


def test_each_owner_open_is_a_new_generation(tmp_path: Path) -> None:
    for expected in (1, 2):
        opened = JournalStore.open(tmp_path / "j.db")
        assert opened.generation == expected and opened.tid_prefix == f"b{expected}-"
        opened.close()
    side = JournalStore.open(tmp_path / "j.db", owner=False)
    assert side.generation == 2 and side.tid_prefix == "b2-"  # the server's, of its owner
    side.close()


def test_garbage_in_the_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    JournalStore.open(path).close()
    path.write_bytes(os.urandom(8192))
    with pytest.raises(JournalCorrupt, match=f"journal {path}.*not a database"):
        JournalStore.open(path)


def test_damaged_pages_are_found_at_open(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    opened = JournalStore.open(path)
    opened.commit([row(str(i), pad="p" * 500) for i in range(200)])
    opened.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 5] = os.urandom(8192)  # keep the header, smash pages
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=str(path)):
        JournalStore.open(path)


def test_another_apps_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(JournalCorrupt, match="not a rigger_mp journal"):
        JournalStore.open(path)


def test_missing_journal_without_create_names_it(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=f"no journal at {tmp_path / 'none.db'}"):
        JournalStore.open(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_a_commit_past_the_size_cap_fails_and_rolls_back(tmp_path: Path) -> None:
    opened = JournalStore.open(tmp_path / "j.db", max_pages=40)
    try:
        opened.commit([row("small")])
        with pytest.raises(JournalFull, match=str(tmp_path / "j.db")):
            opened.commit([row(str(i), pad="p" * 4000) for i in range(100)])
        assert [e.tid for e in opened.pending()] == ["small"]
        assert list(opened.commit([row("after")])) == [2]  # the store is usable again
    finally:
        opened.close()


def test_a_full_disk_at_start_is_a_clear_error(tiny_disk: Path) -> None:
    fill(tiny_disk)
    with pytest.raises(JournalFull, match=str(tiny_disk / "j.db")):
        JournalStore.open(tiny_disk / "j.db")


def test_a_disk_that_fills_at_run_time_fails_the_commit(tiny_disk: Path) -> None:
    opened = JournalStore.open(tiny_disk / "j.db")
    try:
        opened.commit([row("before")])
        fill(tiny_disk)
        with pytest.raises(JournalFull, match=str(tiny_disk / "j.db")):
            opened.commit([row(str(i), pad="p" * 4000) for i in range(64)])
        (tiny_disk / "filler").unlink()
        opened.commit([row("after")])
        assert [e.tid for e in opened.pending()] == ["before", "after"]
    finally:
        opened.close()


def test_the_files_stay_the_size_of_what_is_pending(store: JournalStore) -> None:
    """100k events through, 100 per commit, each done a commit later: size bounded."""
    # What is pending (a few hundred rows) plus a WAL up to its checkpoint; 25 MB pass.
    bound = WAL_AUTOCHECKPOINT * PAGE_SIZE + 1024 * 1024
    payload = "x" * 180
    previous: range | None = None
    sizes = []
    for n in range(1000):
        rows = [row(f"{n}-{i}", pad=payload) for i in range(100)]
        previous = store.commit(rows, done=previous or ())
        if n % 50 == 0:
            sizes.append(store.size_bytes())
    assert max(sizes) < bound, sizes
    # A burst of 20k pending (~5 MB) shrinks back once done and the flow goes on.
    burst = [store.commit([row(f"b{n}-{i}", pad=payload) for i in range(100)]) for n in range(400)]
    assert store.size_bytes() > bound
    for seqs in burst:
        store.commit([], done=seqs)
    store.commit([], done=previous or ())
    for n in range(300):
        previous = store.commit([row(f"c{n}", pad=payload)], done=previous or ())
    assert store.counts() == (1, 0)
    assert store.size_bytes() < bound


def test_a_store_without_checkpoints_leaves_them_to_the_owner(tmp_path: Path) -> None:
    """The server process's store (``checkpoints=False``) never checkpoints, so its acks
    never wait on one; the owner's next commits (its done marks) checkpoint and truncate."""
    path = tmp_path / "j.db"
    owner = JournalStore.open(path)
    server = JournalStore.open(path, owner=False, checkpoints=False)
    wal = Path(f"{path}-wal")
    try:
        payload = "x" * 180
        burst = [
            server.commit([row(f"{n}-{i}", pad=payload) for i in range(100)]) for n in range(300)
        ]
        assert wal.stat().st_size > WAL_AUTOCHECKPOINT * PAGE_SIZE  # none ran: ~9 MB
        for seqs in burst:
            owner.commit([], done=seqs)
        owner.commit([row("after")])  # the first write after the checkpoint truncates
        assert wal.stat().st_size <= WAL_LIMIT + 4 * PAGE_SIZE
        assert [e.tid for e in owner.pending()] == ["after"]
    finally:
        server.close()
        owner.close()


def test_a_run_map_that_is_a_link_is_neither_followed_nor_read(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    os.symlink(target, runs_path(str(path)))
    store = JournalStore.open(path)  # the open reads no map through the link
    try:
        with pytest.raises(JournalError, match="symbolic link"):
            RunMap.start(store.path, store.journal_id, store.generation)
    finally:
        store.close()
    assert target.read_bytes() == b"keep"
