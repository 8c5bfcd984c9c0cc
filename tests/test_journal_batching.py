"""How the journal groups its writes: fire_many, done marks, the server's turn.

- ``Rigger.fire_many``: one commit for the batch, all or nothing, with or without a journal.
- Done marks: the event thread hands on those of a run of events at once, one commit.
- The server process: every fire of one loop turn, from every connection, in one commit,
  stored as the line it came in; a failed commit answers ``journal_failed``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import protocol as proto
from rigger_mp.client import RiggerClient
from rigger_mp.core.rigger import Rigger, parts_of
from rigger_mp.errors import ShuttingDown
from rigger_mp.journal import FIRE_LINE, JournalStore, decode
from rigger_mp.journal.locks import WriterLock
from rigger_mp.server import journaling as server_journaling
from rigger_mp.server.dedup import DedupWindow
from rigger_mp.server.journaling import Ack, ServerJournal
from rigger_mp.server.pipe_messages import NO_REPLY, Fires, Request, StatusRequest
from tests.test_journal_wired import gate, make, peek


def journal_stats(rigger: Rigger) -> dict[str, Any]:
    stats = rigger.stats()["journal"]
    assert isinstance(stats, dict)
    return stats


# -- fire_many -------------------------------------------------------------------------


def test_fire_many_commits_its_batch_once_and_runs_it_in_order(tmp_path: Path) -> None:
    rigger = make(tmp_path / "j.db").start()
    try:
        tasks = rigger.fire_many([("ev", {"x": i}) for i in range(50)])
        assert [t.tid for t in tasks] == [f"b1-{i}" for i in range(1, 51)]  # boot 1 of the file
        tasks[-1].result(timeout=10)
        stats = journal_stats(rigger)
        assert stats["appended"] == 50 and stats["groups"] == 1
    finally:
        rigger.stop()
    assert [x for x, _, _ in gate(rigger).seen] == list(range(50))
    assert journal_stats(rigger)["pending"] == 0


def test_fire_many_without_a_journal(tmp_path: Path) -> None:
    rigger = make(tmp_path / "unused.db", journal=None).start()
    try:
        tasks = rigger.fire_many(("ev", {"x": i}) for i in range(3))
        tasks[-1].result(timeout=10)
    finally:
        rigger.stop()
    assert [x for x, _, _ in gate(rigger).seen] == [0, 1, 2]
    assert "journal" not in rigger.stats()


def test_fire_many_is_all_or_nothing(tmp_path: Path) -> None:
    rigger = make(tmp_path / "j.db").start()
    try:
        with pytest.raises(TypeError):
            rigger.fire_many([("ev", {"x": 1}), (7, {})])  # type: ignore[list-item]
        assert parts_of(rigger).port.accepted_count() == 0
        assert journal_stats(rigger)["appended"] == 0
    finally:
        rigger.stop()
    with pytest.raises(ShuttingDown):
        rigger.fire_many([("ev", {"x": 2})])
    assert gate(rigger).seen == []


def test_threads_firing_at_once_share_commits(tmp_path: Path) -> None:
    """8 threads' fire_hook calls, queued while a commit is stalled: they form one group."""
    rigger = make(tmp_path / "j.db").start()
    try:
        journal = parts_of(rigger).journal
        assert journal is not None
        committer = journal.committer
        submitted = threading.Semaphore(0)
        submit = committer.submit

        def counting(rows: Any, callback: Any) -> None:
            submit(rows, callback)
            submitted.release()

        committer.submit = counting  # type: ignore[method-assign]
        tasks: list[Any] = []
        with WriterLock(journal.store.path).held():  # stalls the commit thread, as an fsync
            threads = [
                threading.Thread(target=lambda i=i: tasks.append(rigger.fire_hook("ev", x=i)))
                for i in range(8)
            ]
            for thread in threads:
                thread.start()
            for _ in threads:
                submitted.acquire()
        for thread in threads:
            thread.join()
        for task in tasks:
            task.result(timeout=10)
        stats = journal_stats(rigger)
        assert stats["appended"] == 8 and stats["groups"] <= 2  # the first, then the rest
    finally:
        rigger.stop()


# -- done marks ------------------------------------------------------------------------


def test_the_done_marks_of_a_run_of_events_go_in_one_commit(tmp_path: Path) -> None:
    rigger = make(tmp_path / "j.db").start()
    try:
        rigger.fire_hook("block")  # commit 1; the event thread waits in it
        tasks = rigger.fire_many([("ev", {"x": i}) for i in range(100)])  # commit 2
        gate(rigger).gate.set()
        tasks[-1].result(timeout=10)
    finally:
        rigger.stop()
    stats = journal_stats(rigger)
    # "block" ended with 100 events queued behind it: its done mark waits for theirs.
    assert stats["done_marks"] == 101 and stats["commits"] == 3
    assert stats["pending"] == 0


# -- the server process ----------------------------------------------------------------


class Host:
    """The part of the server process :class:`ServerJournal` uses, recording the pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.to_main = self
        self.pending: dict[int, tuple[Any, int]] = {}
        self.errors: Counter[str] = Counter()
        self.dedup = DedupWindow(0)
        self.sent: list[tuple[list[Any], list[Ack]]] = []
        self.replies: list[tuple[Any, int, bytes]] = []

    def reply_all(self, replies: list[tuple[Any, int, bytes]]) -> None:
        self.replies.extend(replies)

    def send_batch(self, batch: list[Request], acks: list[Ack]) -> None:
        self.sent.append((batch, acks))

    def write(self, frame: bytes, acks: list[Ack]) -> None:
        self.sent.append(([("frame", frame)], acks))


def fires(journal: ServerJournal, tids: list[str], rids: list[int] | None = None) -> Fires:
    """A run of fires ``{"x": i}`` journaled as the server journals them (acked: NO_REPLY)."""
    for x, tid in enumerate(tids):
        journal.add(tid, "ev", json.dumps({"hook_name": "ev", "data": {"x": x}}).encode(), None)
    n = len(tids)
    modes = [proto.ACK if rid == NO_REPLY else proto.WAIT for rid in rids or [NO_REPLY] * n]
    return Fires(rids or [NO_REPLY] * n, ["ev"] * n, [{"x": x} for x in range(n)], modes, tids)


def sizes(host: Host) -> list[int]:
    """The fires of each batch sent into the pipe, in order (a control frame counts 1)."""
    return [
        sum(len(item.tids) if isinstance(item, Fires) else 1 for item in batch)
        for batch, _ in host.sent
    ]


def seqs(sent: list[tuple[list[Any], list[Ack]]]) -> list[int]:
    """The journal seqs the fires of these batches carry, in order."""
    return [s for batch, _ in sent for item in batch for s in item.seqs or ()]


def test_the_fires_of_one_loop_turn_share_one_commit(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.db")
    loop = asyncio.new_event_loop()
    host = Host(loop)
    journal = ServerJournal(host, JournalStore.open(tmp_path / "j.db", owner=False), 0)
    try:

        async def turn() -> None:
            # Three connections' reads in one turn, a fence behind them.
            for conn in range(3):
                batch: list[Request] = [fires(journal, [f"{conn}-{i}" for i in range(2)])]
                journal.send(batch, [(conn, i, f"{conn}-{i}", False) for i in range(2)])
            journal.send_frame(b"fence")
            assert host.sent == [] and journal.busy()  # nothing goes before the commit
            await asyncio.sleep(0)  # the end of the turn: the commit runs

        loop.run_until_complete(turn())
        stats = journal.stats()
        assert stats["commits"] == 1 and stats["appended"] == 6 and stats["groups"] == 1
        assert sizes(host) == [2, 2, 2, 1]  # in order, fence last
        assert seqs(host.sent[:3]) == list(range(1, 7))
        rows = store.pending()
        assert {r.fmt for r in rows} == {FIRE_LINE}
        assert decode(rows[5].fmt, rows[5].blob) == {"x": 1}
    finally:
        journal.close()
        store.close()
        loop.close()


def test_a_turn_past_turn_rows_commits_what_it_has_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four batches of 2 with TURN_ROWS at 5: the third makes 6, so the first three are
    committed and in the pipe before the turn ends; the fourth goes in at its end."""
    monkeypatch.setattr(server_journaling, "TURN_ROWS", 5)
    loop = asyncio.new_event_loop()
    host = Host(loop)
    journal = ServerJournal(host, JournalStore.open(tmp_path / "j.db"), 0)
    try:

        async def turn() -> list[int]:
            for conn in range(4):
                batch: list[Request] = [fires(journal, [f"{conn}-{i}" for i in range(2)])]
                journal.send(batch, [(conn, i, f"{conn}-{i}", False) for i in range(2)])
            journal.send_frame(b"fence")
            early = sizes(host)
            await asyncio.sleep(0)  # the end of the turn: the rest is committed
            return early

        assert loop.run_until_complete(turn()) == [2, 2, 2]
        stats = journal.stats()
        assert stats["commits"] == 2 and stats["appended"] == 8
        assert sizes(host) == [2, 2, 2, 2, 1]  # fence last
        assert seqs(host.sent[:4]) == list(range(1, 9))
        assert not journal.busy()
    finally:
        journal.close()
        loop.close()


def test_a_failed_turn_commit_answers_journal_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.new_event_loop()
    host = Host(loop)
    journal = ServerJournal(host, JournalStore.open(tmp_path / "j.db"), 0)
    try:

        def full(*args: Any) -> range:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(journal.store, "commit", full)
        host.pending[5] = ("waiter", 9)
        status = StatusRequest(6, "t-1")  # a request in the same batch still goes through
        batch: list[Request] = [fires(journal, ["a", "b"], [NO_REPLY, 5]), status]
        journal.send(batch, [("conn", 0, "a", False)])
        loop.run_until_complete(asyncio.sleep(0))
        assert host.sent == [([status], [])]
        assert [(conn, seq) for conn, seq, _ in host.replies] == [("conn", 0), ("waiter", 9)]
        assert all(
            json.loads(line)["error"]["code"] == proto.JOURNAL_FAILED for *_, line in host.replies
        )
        assert host.errors[proto.JOURNAL_FAILED] == 2 and journal.stats()["failed_fires"] == 2
    finally:
        journal.close()
        loop.close()


def test_a_tcp_fire_is_journaled_as_its_line_before_its_ok(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    rigger = make(path, server_enabled=True, server_port=0).start()
    assert rigger.server_port is not None
    client = RiggerClient("127.0.0.1", rigger.server_port)
    try:
        client.fire_hook("block")
        client.fire_hook("ev", x={"deep": [1, 2.5, None]})  # acked: committed by now
        reader = peek(path)
        try:
            rows = reader.pending()
            assert [(r.hook, r.fmt) for r in rows] == [("block", FIRE_LINE), ("ev", FIRE_LINE)]
            assert rows[1].data() == {"x": {"deep": [1, 2.5, None]}}
        finally:
            reader.close()
        gate(rigger).gate.set()
        assert client.ping()
    finally:
        client.close()
        rigger.stop()
    assert gate(rigger).seen == [({"deep": [1, 2.5, None]}, False, 1)]
    assert journal_stats(rigger)["pending"] == 0
