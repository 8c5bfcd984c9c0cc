"""The main process's side of the journal: open, replay, append, done marks.

::

    start()      open the file (its faults raise, naming it; the last run's map is
                 counted) → a fresh run map; handed to the event thread (appends,
                 started, ended), the background side (settled) and the port (received,
                 undelivered) → claim: claim_replay → replay first
    fire_hook    append(tid, hook, kwargs) blocks until its group is committed → task.seq
                 (its tid begins with the boot number: unique for the file's life)
    fire_many    append_many(events): one group for the batch
    TCP fires    committed by the server process (rigger_mp.server.journaling); their seq
                 comes down the pipe with them: received(last seq)
    server died  undelivered(): the fires it committed after the last one received, run
                 now (before its successor starts) rather than at the next start
    event starts started(seq): the run map says so (one store in a mapped file)
    event ends   ended(seq, work ids it backgrounded): no work → done now, else
    items settle settled(work ids): the last one of an event → done

An event is done once it and every backgrounded hook it submitted have finished,
successfully or reported as failed: the run map says so at once, and its row is deleted
by the committer within ``DONE_LINGER`` (no fsync). After a crash the next start counts
an attempt for each event the map says started and did not finish, and deletes the rows
of those it says finished (see :mod:`rigger_mp.journal.runs`). Backgrounded hooks
abandoned at ``stop()`` leave their event pending: it runs again at the next start, so
delivery is at-least-once.
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
from ..journal.runs import RunMap
from .config import RiggerConfig
from .port import EventSpec

logger = printable.logger("rigger_mp.journal")

MAX_DEAD_LOGGED = 20
"""Dead-lettered events named one by one at start; the rest only counted."""


class Journaling:
    """The journal of one started :class:`~rigger_mp.core.rigger.Rigger` (main process)."""

    def __init__(self, store: JournalStore, max_attempts: int, runs: RunMap) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.runs = runs
        self.committer = GroupCommitter(store)
        self._lock = threading.Lock()  # settled() may run on the pool's thread at a stop
        self._outstanding: dict[int, int] = {}  # seq -> backgrounded items not settled
        self._owner: dict[int, int] = {}  # work id -> seq of the event that submitted it
        self._final: dict[str, Any] | None = None  # the stats at close
        # The highest seq of a server-committed fire the intake has queued (at start:
        # of any row, all an earlier run's). The intake thread's, after start.
        self._delivered = 0

    @classmethod
    def open(cls, settings: RiggerConfig) -> Journaling | None:
        """The journal the config names (None without one); faults raise, naming the file."""
        if settings.journal is None:
            return None
        sync: Sync = "full" if settings.journal_sync == "full" else "normal"
        store = JournalStore.open(settings.journal, sync=sync)
        try:
            runs = RunMap.start(store.path, store.journal_id, store.generation)
        except BaseException:
            store.close()
            raise
        return cls(store, settings.journal_max_attempts, runs)

    # -- start ------------------------------------------------------------------------

    @property
    def tid_prefix(self) -> str:
        """What the main process puts before each tid it gives: the file's boot number,
        so that a tid names one event for the life of the file."""
        return self.store.tid_prefix

    def claim(self) -> tuple[list[EventSpec], list[int]]:
        """The events to replay first, as ``(specs, seqs)`` in accepted order.

        Those whose runs that started and did not finish number ``max_attempts`` are
        dead-lettered and logged; so is an entry whose data cannot be decoded (it cannot
        start), with the error.
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
        specs, seqs, bad = self._specs(run, replay_locals, "moved to the dead letters")
        for entry, error in bad:
            self.store.bury([entry.seq], f"its data cannot be decoded: {error}")
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
        self, entries: Sequence[Entry], locals_of: Callable[[Entry], dict[str, Any]], then: str
    ) -> tuple[list[EventSpec], list[int], list[tuple[Entry, str]]]:
        """``(specs, seqs)`` of the entries whose data decodes (``locals_of``), and the
        others with their error (logged, saying what is ``then`` done with them)."""
        specs: list[EventSpec] = []
        seqs: list[int] = []
        bad: list[tuple[Entry, str]] = []
        for entry in entries:
            try:
                local = locals_of(entry)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.error(
                    "journal %s: event %s (%r, seq %d) cannot be decoded, %s: %s",
                    self.store.path,
                    entry.tid,
                    entry.hook,
                    entry.seq,
                    then,
                    error,
                )
                bad.append((entry, error))
                continue
            specs.append((entry.tid, entry.hook, local))
            seqs.append(entry.seq)
        return specs, seqs, bad

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
        specs, seqs, _ = self._specs(rows, Entry.data, "left pending for the next start")
        logger.warning(
            "journal %s: the server process died with %d fire(s) committed and not yet "
            "passed on (their clients had not heard ok): queued now (tids %s%s)",
            self.store.path,
            len(rows),
            ", ".join(e.tid for e in rows[:10]),
            " ..." if len(rows) > 10 else "",
        )
        return specs, seqs

    def started(self, seq: int) -> None:
        """Event ``seq`` starts (on the event thread): one attempt if it does not finish."""
        self.runs.started(seq)

    def ended(self, seq: int, work_ids: Sequence[int]) -> None:
        """Event ``seq`` has run (on the event thread); ``work_ids`` are the backgrounded
        items it submitted."""
        if not work_ids:
            self.runs.finished(seq)
            self.committer.done(seq)
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
        for seq in finished:
            self.runs.finished(seq)
            self.committer.done(seq)

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
            self.committer.close()
            self._final = self.stats()
        finally:
            self._final = self._final or {"path": self.store.path}
            self.runs.close()
            self.store.close()
