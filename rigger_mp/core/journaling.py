"""The main process's side of the journal: open, replay, append, done marks.

::

    start()      open the file (its faults raise, naming it), handed to the event thread
                 (appends, ended), the background side (settled) and the port (received,
                 undelivered) → claim: claim_replay → replay first
    fire_hook    append(tid, hook, kwargs) blocks until its group is committed → task.seq
    fire_many    append_many(events): one group for the batch
    TCP fires    committed by the server process (rigger_mp.server.journaling); their seq
                 comes down the pipe with them: received(last seq)
    server died  undelivered(): the fires it committed after the last one received, run
                 now (before its successor starts) rather than at the next start
    event ends   ended(seq, work ids it backgrounded): no work → done now, else
    items settle settled(work ids): the last one of an event → done

An event is done (its row deleted, with the next group and no fsync) once it and every
backgrounded hook it submitted have finished, successfully or reported as failed. The
event thread collects the done marks of the events it runs and hands them to the
committer once per batch (a job queued behind the events of now), not once per event.
Backgrounded hooks abandoned at ``stop()`` leave their event pending: it runs again at the
next start, so delivery is at-least-once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import printable
from ..journal import (
    FIRE_LINE,
    Entry,
    GroupCommitter,
    JournalStore,
    Sync,
    encode_rows,
    replay_locals,
)
from .config import RiggerConfig
from .port import EventSpec

logger = printable.logger("rigger_mp.journal")

MAX_DEAD_LOGGED = 20
"""Dead-lettered events named one by one at start; the rest only counted."""


class Journaling:
    """The journal of one started :class:`~rigger_mp.core.rigger.Rigger` (main process).

    ``call_soon`` queues a job on the event thread behind the events queued now (the
    done marks of a run of events go in one job); ``None``: they are handed on at once.
    """

    def __init__(
        self,
        store: JournalStore,
        max_attempts: int,
        call_soon: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.committer = GroupCommitter(store)
        self._lock = threading.Lock()  # settled() may run on the pool's thread at a stop
        self._outstanding: dict[int, int] = {}  # seq -> backgrounded items not settled
        self._owner: dict[int, int] = {}  # work id -> seq of the event that submitted it
        self._final: dict[str, Any] | None = None  # the stats at close
        self._finished: list[int] = []  # done marks the event thread has not handed on
        self._call_soon = call_soon
        # The highest seq of a server-committed fire the intake has queued (at start:
        # of any row, all an earlier run's). The intake thread's, after start.
        self._delivered = 0

    @classmethod
    def open(
        cls, settings: RiggerConfig, call_soon: Callable[[Callable[[], None]], None]
    ) -> Journaling | None:
        """The journal the config names (None without one); faults raise, naming the file."""
        if settings.journal is None:
            return None
        sync: Sync = "full" if settings.journal_sync == "full" else "normal"
        store = JournalStore.open(settings.journal, sync=sync)
        return cls(store, settings.journal_max_attempts, call_soon)

    # -- start ------------------------------------------------------------------------

    def claim(self) -> tuple[list[EventSpec], list[int]]:
        """The events to replay first, as ``(specs, seqs)`` in accepted order.

        Each counts an attempt; those out of attempts are dead-lettered and logged. An
        entry whose data cannot be decoded is logged and left pending: it is claimed
        again at the next start, until it too runs out of attempts.
        """
        run, dead = self.store.claim_replay(self.max_attempts)
        self._delivered = self.store.last_seq()
        if dead:
            named = ", ".join(f"{e.tid} ({e.hook!r})" for e in dead[:MAX_DEAD_LOGGED])
            more = f" and {len(dead) - MAX_DEAD_LOGGED} more" if len(dead) > MAX_DEAD_LOGGED else ""
            logger.error(
                "journal %s: %d event(s) moved to the dead letters after %d attempt(s) "
                "without finishing: %s%s (see `rigger-mp journal list -j %s`)",
                self.store.path,
                len(dead),
                self.max_attempts,
                named,
                more,
                self.store.path,
            )
        specs, seqs = self._specs(run, replay_locals)
        if specs:
            logger.warning(
                "journal %s: replaying %d event(s) a previous run accepted and did not "
                "finish (tids %s%s)",
                self.store.path,
                len(specs),
                ", ".join(s[0] for s in specs[:10]),
                " ..." if len(specs) > 10 else "",
            )
        return specs, seqs

    def _specs(
        self, entries: Sequence[Entry], locals_of: Callable[[Entry], dict[str, Any]]
    ) -> tuple[list[EventSpec], list[int]]:
        """``(specs, seqs)`` of the entries whose data decodes (``locals_of``); one that
        does not is logged and left pending, to be claimed again at the next start."""
        specs: list[EventSpec] = []
        seqs: list[int] = []
        for entry in entries:
            try:
                local = locals_of(entry)
            except Exception as exc:
                logger.error(
                    "journal %s: event %s (%r, seq %d) cannot be decoded, left pending: %s: %s",
                    self.store.path,
                    entry.tid,
                    entry.hook,
                    entry.seq,
                    type(exc).__name__,
                    exc,
                )
                continue
            specs.append((entry.tid, entry.hook, local))
            seqs.append(entry.seq)
        return specs, seqs

    # -- events -----------------------------------------------------------------------

    def append(self, tid: str, hook_name: str, kwargs: dict[str, Any]) -> int:
        """Commit one in-process event (grouped with whatever else is committing); its seq."""
        return self.committer.append(tid, hook_name, kwargs)

    def append_many(self, events: Sequence[tuple[str, str, Mapping[str, Any]]]) -> range:
        """Commit ``(tid, hook, kwargs)`` events in one group; their seqs, in order."""
        return self.committer.append_rows(encode_rows(events))

    def received(self, last_seq: int) -> None:
        """The intake has queued fires the server process committed, up to ``last_seq``
        (they come in seq order)."""
        if last_seq > self._delivered:
            self._delivered = last_seq

    def undelivered(self) -> tuple[list[EventSpec], list[int]]:
        """The fires a dead server process committed and never passed on, as ``(specs,
        seqs)`` in accepted order, counted delivered from now.

        Call it once all the dead process wrote has been read and before its successor
        starts: then every TCP or HTTP fire (stored as its line) above the last one
        received is one of them; the rows of in-process fires are of other formats. They
        had not been acked (acks follow the pipe write); their data comes from the line.
        """
        rows = [e for e in self.store.pending(after=self._delivered) if e.fmt == FIRE_LINE]
        if not rows:
            return [], []
        self._delivered = rows[-1].seq
        specs, seqs = self._specs(rows, Entry.data)
        logger.warning(
            "journal %s: the server process died with %d fire(s) committed and not yet "
            "passed on (their clients had not heard ok): queued now (tids %s%s)",
            self.store.path,
            len(rows),
            ", ".join(e.tid for e in rows[:10]),
            " ..." if len(rows) > 10 else "",
        )
        return specs, seqs

    def ended(self, seq: int, work_ids: Sequence[int]) -> None:
        """Event ``seq`` has run (on the event thread); ``work_ids`` are the backgrounded
        items it submitted."""
        if not work_ids:
            finished = self._finished
            finished.append(seq)
            if len(finished) == 1:
                if self._call_soon is None:
                    self.flush_done()
                else:
                    self._call_soon(self.flush_done)  # after the events queued now
            return
        with self._lock:
            self._outstanding[seq] = len(work_ids)
            owner = self._owner
            for work_id in work_ids:
                owner[work_id] = seq

    def settled(self, work_ids: Sequence[int]) -> None:
        """These backgrounded items finished or failed: their events may now be done."""
        finished: list[int] = []
        with self._lock:
            owner, outstanding = self._owner, self._outstanding
            if not owner:
                return
            for work_id in work_ids:
                seq = owner.pop(work_id, None)
                if seq is None:
                    continue
                left = outstanding[seq] - 1
                if left:
                    outstanding[seq] = left
                else:
                    del outstanding[seq]
                    finished.append(seq)
        self.committer.done_many(finished)

    def flush_done(self) -> None:
        """Hand the done marks collected on the event thread to the committer, at once."""
        finished, self._finished = self._finished, []
        self.committer.done_many(finished)

    # -- stats and the end ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The committer's counters and what the file holds (``Rigger.stats()["journal"]``)."""
        if self._final is not None:
            return dict(self._final)
        stats = self.committer.stats()
        with self._lock:
            stats["waiting_on_background"] = len(self._outstanding)
        return stats

    def close(self) -> None:
        """Write what is queued (done marks included), then close the file and its locks."""
        if self._final is not None:
            return
        try:
            self.flush_done()  # the event thread has ended (or was abandoned)
            self.committer.close()
            self._final = self.stats()
        finally:
            self._final = self._final or {"path": self.store.path}
            self.store.close()
