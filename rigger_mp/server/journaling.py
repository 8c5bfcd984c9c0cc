"""The server process's side of the journal (issue #13): commit a read's fires, then ack.

With a journal, what one read of a connection produced (see ``Server.flush_outbox``) is
not written into the pipe at once: its fires go to the :class:`~rigger_mp.journal.
GroupCommitter` as one submission, and the batch waits here until that commit returns.
The commit thread hands the outcome back to the asyncio loop (``call_soon_threadsafe``);
batches, and the fences behind them, leave in the order they came, so the pipe order is
the accepted order. Committed: each fire item gets its seq appended (index
:data:`~.messages.SEQ`) and the batch goes into the pipe, its acks released as before.
Failed: every fire of the batch is answered ``journal_failed`` and none goes into the
pipe; its other requests still do.

This module imports only the journal package, the channel, the messages and the
protocol, as :mod:`.process` does: the server process never loads the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from .. import protocol as proto
from ..journal import JSON, GroupCommitter, JournalError, JournalStore, Sync, encode_json
from ..journal.committer import Outcome
from .messages import FIRE, NO_REPLY, ServerSettings

logger = logging.getLogger("rigger_mp.server")

Ack = tuple[Any, int, str]
"""``(connection, message number, tid)`` of a fire to ack once its batch is in the pipe."""


class Host(Protocol):
    """What this module uses of :class:`~rigger_mp.server.process.Server` (no import of it:
    that module imports this one)."""

    loop: asyncio.AbstractEventLoop
    to_main: Any
    pending: dict[int, tuple[Any, int]]
    errors: Counter[str]

    def reply_all(self, replies: list[tuple[Any, int, bytes]]) -> None:
        """Write these replies to their connections (those still open)."""

    def send_batch(self, batch: list[tuple[Any, ...]], acks: list[Ack]) -> None:
        """Write ``batch`` into the pipe, its acks released once it is there."""


class _Out:
    """A batch (or a control frame) waiting for its turn to go into the pipe."""

    __slots__ = ("acks", "batch", "fires", "frame", "outcome")

    def __init__(
        self, batch: list[tuple[Any, ...]], acks: list[Ack], fires: list[int], frame: bytes | None
    ) -> None:
        self.batch = batch
        self.acks = acks
        self.fires = fires  # indices of the fire items in batch
        self.frame = frame
        self.outcome: Outcome | None = None if fires else range(0)


class ServerJournal:
    """Commit-before-ack for one server process; the main process owns the file."""

    def __init__(self, server: Host, store: JournalStore) -> None:
        self.server = server
        self.store = store
        self.committer = GroupCommitter(store, name="rigger_mp-server-journal")
        self._out: deque[_Out] = deque()
        self._when_idle: list[Callable[[], None]] = []
        self.failed_fires = 0

    @classmethod
    def open(cls, server: Host, settings: ServerSettings) -> ServerJournal | None:
        """The journal of ``settings`` opened as a second writer (None without one)."""
        if settings.journal is None:
            return None
        sync: Sync = "full" if settings.journal_sync == "full" else "normal"
        return cls(server, JournalStore.open(settings.journal, sync=sync, owner=False))

    # -- the loop's side ----------------------------------------------------------------

    def send(self, batch: list[tuple[Any, ...]], acks: list[Ack]) -> None:
        """Send ``batch`` into the pipe once its fires are committed, behind earlier ones."""
        fires = [i for i, item in enumerate(batch) if item[1] == FIRE]
        self._queue(_Out(batch, acks, fires, None))

    def send_frame(self, frame: bytes) -> None:
        """Send a control frame (a fence's answer) behind every batch queued so far."""
        self._queue(_Out([], [], [], frame))

    def busy(self) -> bool:
        """Whether a batch waits on its commit."""
        return bool(self._out)

    def after(self, func: Callable[[], None]) -> None:
        """Run ``func`` once nothing waits on a commit (now if nothing does)."""
        if self._out:
            self._when_idle.append(func)
        else:
            func()

    def _queue(self, out: _Out) -> None:
        self._out.append(out)
        if out.outcome is None:
            self._commit(out)
        self._release()

    def _commit(self, out: _Out) -> None:
        batch = out.batch
        loop = self.server.loop
        try:
            rows = [
                (batch[i][5], batch[i][2], JSON, encode_json(batch[i][3])[1]) for i in out.fires
            ]

            def committed(outcome: Outcome) -> None:  # on the commit thread
                loop.call_soon_threadsafe(self._committed, out, outcome)

            self.committer.submit(rows, committed)
        except (JournalError, TypeError, ValueError) as exc:
            out.outcome = exc if isinstance(exc, JournalError) else JournalError(str(exc))

    def _committed(self, out: _Out, outcome: Outcome) -> None:
        out.outcome = outcome
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
        to_main = self.server.to_main
        if to_main is None:
            return
        if out.frame is not None:
            to_main.write(out.frame, [])
            return
        outcome, batch = out.outcome, out.batch
        if isinstance(outcome, range):
            for index, seq in zip(out.fires, outcome, strict=True):
                batch[index] = (*batch[index], seq)
            self.server.send_batch(batch, out.acks)
            return
        assert isinstance(outcome, JournalError)
        self._refuse(out, outcome)
        rest = [item for item in batch if item[1] != FIRE]
        if rest:
            self.server.send_batch(rest, [])

    def _refuse(self, out: _Out, error: JournalError) -> None:
        """Answer every fire of a batch whose commit failed with ``journal_failed``."""
        server = self.server
        text = str(error)
        code = proto.JOURNAL_FAILED
        replies = [(conn, seq, proto.error_line(code, text, tid)) for conn, seq, tid in out.acks]
        for index in out.fires:
            rid, tid = out.batch[index][0], out.batch[index][5]
            if rid != NO_REPLY:
                entry = server.pending.pop(rid, None)
                if entry is not None:
                    replies.append((entry[0], entry[1], proto.error_line(code, text, tid)))
        self.failed_fires += len(out.fires)
        server.errors[code] += len(out.fires)
        server.reply_all(replies)

    # -- stats and the end ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The committer's counters, batches waiting on a commit, fires refused."""
        stats = self.committer.stats()
        stats["batches_waiting"] = len(self._out)
        stats["failed_fires"] = self.failed_fires
        return stats

    def close(self) -> None:
        """Finish the commits queued, then close the file (the loop no longer runs)."""
        try:
            self.committer.close()
        finally:
            self.store.close()
