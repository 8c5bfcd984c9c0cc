"""The server process's side of the journal: commit a turn's fires, then ack.

Redis-AOF style, in the asyncio loop itself: no thread. Each fire parsed is journaled as
the message line it came in (:data:`~rigger_mp.journal.FIRE_LINE`: no re-encoding, the
data is decoded at replay). What one read of a connection produced (see
``Server.flush_outbox``) waits here; the first batch with fires in a loop turn schedules
one commit (``call_soon``: it runs once this turn's reads are handled), and every fire of
every connection read in that turn goes into that one transaction, up to
:data:`TURN_ROWS`: a batch that brings the turn's fires to it is committed at once, with
those before it, and the rest of the turn goes into the next commit. So when many
clients flood, the first batches go into the pipe, and their acks out, while the server
still reads the others: the main process and the clients work meanwhile, instead of
waiting for one commit of the whole turn. Then the batches go into the pipe in the order
they came, so the pipe order is the accepted order, and the fences behind them too.
Committed: each :class:`~.pipe_messages.Fires` run gets its fires' journal seqs and the
batch goes into the pipe, its acks released as before. Failed: every fire of the batch
is answered ``journal_failed`` and none goes into the pipe; its other requests still do.

The commit blocks the loop while it runs: with ``journal_sync: full`` that includes the
fsync, as Redis's ``appendfsync always`` does. Reads that arrive meanwhile wait in the
kernel and make the next group larger.

This module imports only the journal package, the pipe messages and the protocol, as the
server process's other modules do: it never loads the dispatcher.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from .. import protocol as proto
from ..journal import FIRE_LINE, JournalError, JournalStore, NewRow, Sync
from ..journal.committer import GroupCounters, Outcome, commit_group
from .dedup import DedupWindow
from .pipe_messages import NO_REPLY, Fires, Request, ServerSettings

TURN_ROWS = 1024
"""Fires of one loop turn above which their commit runs without waiting for the turn's
end (16 clients flooding bring ~2,300 a turn; one client, at most 256)."""

Ack = tuple[Any, int, str, bool]
"""``(connection, message number, tid, duplicate)`` of a fire to ack once its batch is in
the pipe."""
FireIds = list[tuple[str, str]]
"""``(fire_id, tid)`` of the fires of a batch that came with an id."""


class Host(Protocol):
    """What this module uses of :class:`~rigger_mp.server.router.Server` (no import of it:
    that module imports this one)."""

    loop: asyncio.AbstractEventLoop
    to_main: Any
    pending: dict[int, tuple[Any, int]]
    errors: Counter[str]
    dedup: DedupWindow

    def reply_all(self, replies: list[tuple[Any, int, bytes]]) -> None:
        """Write these replies to their connections (those still open)."""

    def send_batch(self, batch: list[Request], acks: list[Ack]) -> None:
        """Write ``batch`` into the pipe, its acks released once it is there."""


class _Out:
    """A batch (or a control frame) waiting for its turn to go into the pipe."""

    __slots__ = ("acks", "batch", "fires", "frame", "ids", "outcome", "rows")

    def __init__(
        self,
        batch: list[Request],
        acks: list[Ack],
        rows: list[NewRow],
        frame: bytes | None,
        ids: FireIds,
    ) -> None:
        self.batch = batch
        self.acks = acks
        self.rows = rows  # the journal rows of its fires, in the order of the fire items
        self.ids = ids
        self.frame = frame
        self.outcome: Outcome | None = None if rows else range(0)


class ServerJournal:
    """Commit-before-ack for one server process; the main process owns the file."""

    def __init__(self, server: Host, store: JournalStore, keep_ids: int) -> None:
        self.server = server
        self.store = store
        self.keep_ids = keep_ids
        self.counters = GroupCounters()
        self._rows: list[NewRow] = []  # fires since the last send()
        self._ids: FireIds = []  # the ids among them
        self._out: deque[_Out] = deque()
        self._turn: list[_Out] = []  # batches whose fires the scheduled commit writes
        self._turn_rows = 0  # their fires
        self._when_idle: list[Callable[[], None]] = []
        self.failed_fires = 0

    @classmethod
    def open(cls, server: Host, settings: ServerSettings) -> ServerJournal:
        """The journal of ``settings`` opened as a second writer."""
        assert settings.journal is not None
        sync: Sync = "full" if settings.journal_sync == "full" else "normal"
        # Checkpoints are left to the main process's commits (its done marks come every
        # DONE_LINGER at most while events flow), off the path of the acks.
        store = JournalStore.open(settings.journal, sync=sync, owner=False, checkpoints=False)
        return cls(server, store, settings.dedup_window)

    # -- the loop's side ----------------------------------------------------------------

    def add(self, tid: str, hook_name: str, line: bytes, fire_id: str | None) -> None:
        """Journal a fire, as the message ``line`` it came in, with the next :meth:`send`;
        its ``fire_id`` (if any) with it."""
        self._rows.append((tid, hook_name, FIRE_LINE, line))
        if fire_id is not None:
            self._ids.append((fire_id, tid))

    def recent_ids(self) -> FireIds:
        """The ids committed lately, oldest first, for the window at start."""
        return self.store.recent_ids(self.keep_ids)

    def send(self, batch: list[Request], acks: list[Ack]) -> None:
        """Send ``batch`` into the pipe once its fires are committed, behind earlier ones."""
        rows, self._rows = self._rows, []
        ids, self._ids = self._ids, []
        out = _Out(batch, acks, rows, None, ids)
        self._out.append(out)
        if rows:
            self._turn.append(out)
            self._turn_rows += len(rows)
            if self._turn_rows >= TURN_ROWS:
                self._commit_turn()  # the turn's end commits what comes after
                return
            if len(self._turn) == 1:
                self.server.loop.call_soon(self._commit_turn)
        self._release()

    def send_frame(self, frame: bytes) -> None:
        """Send a control frame (a fence's answer) behind every batch queued so far."""
        self._out.append(_Out([], [], [], frame, []))
        self._release()

    def busy(self) -> bool:
        """Whether a batch waits on its commit."""
        return bool(self._out)

    def after(self, func: Callable[[], None]) -> None:
        """Run ``func`` once nothing waits on a commit (now if nothing does)."""
        if self._out:
            self._when_idle.append(func)
        else:
            func()

    def _commit_turn(self) -> None:
        """One transaction for the fires of every batch sent since the last one (none,
        when a full turn's commit ran before the scheduled one)."""
        outs, self._turn = self._turn, []
        self._turn_rows = 0
        if not outs:
            return
        rows = [row for out in outs for row in out.rows]
        ids = [pair for out in outs for pair in out.ids]
        outcome = commit_group(self.store, self.counters, rows, [], ids, self.keep_ids)
        offset = 0
        for out in outs:
            count = len(out.rows)
            if isinstance(outcome, range):
                out.outcome = outcome[offset : offset + count]
            else:
                out.outcome = outcome
            offset += count
        self._release()

    def _release(self) -> None:
        """Write, in order, the batches at the head whose commit has returned."""
        queue = self._out
        while queue and queue[0].outcome is not None:
            self._deliver(queue.popleft())
        if not queue and self._when_idle:
            funcs, self._when_idle = self._when_idle, []
            for func in funcs:
                func()

    def _deliver(self, out: _Out) -> None:
        server = self.server
        if server.to_main is None:
            return
        if out.frame is not None:
            server.to_main.write(out.frame, [])
            return
        outcome, batch = out.outcome, out.batch
        if isinstance(outcome, range):
            if out.rows:
                start = 0
                for index, item in enumerate(batch):
                    if type(item) is Fires:
                        end = start + len(item.tids)
                        batch[index] = item._replace(seqs=list(outcome[start:end]))
                        start = end
            server.send_batch(batch, out.acks)
            return
        assert isinstance(outcome, JournalError)
        self._refuse(out, outcome)
        rest = [item for item in batch if type(item) is not Fires]
        if rest:
            server.send_batch(rest, [])

    def _refuse(self, out: _Out, error: JournalError) -> None:
        """Answer every fire of a batch whose commit failed with ``journal_failed``; its
        ids leave the window (a resend of one is run)."""
        server = self.server
        server.dedup.forget(fire_id for fire_id, _ in out.ids)
        text = str(error)
        code = proto.JOURNAL_FAILED
        replies = [(ack[0], ack[1], proto.error_line(code, text, ack[2])) for ack in out.acks]
        fires = 0
        for item in out.batch:
            if type(item) is not Fires:
                continue
            fires += len(item.tids)
            for rid, tid in zip(item.rids, item.tids, strict=True):
                if rid != NO_REPLY:
                    entry = server.pending.pop(rid, None)
                    if entry is not None:
                        replies.append((entry[0], entry[1], proto.error_line(code, text, tid)))
        self.failed_fires += fires
        server.errors[code] += fires
        server.reply_all(replies)

    # -- stats and the end ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The commit counters, batches waiting on a commit, fires refused."""
        stats = self.counters.as_dict(self.store)
        stats["batches_waiting"] = len(self._out)
        stats["failed_fires"] = self.failed_fires
        return stats

    def close(self) -> None:
        """Close the file (the loop no longer runs: nothing is committing)."""
        self.store.close()
