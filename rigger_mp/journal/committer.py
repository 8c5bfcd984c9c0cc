"""Group commit: one thread writes the journal; callers wait only for their group's commit.

::

    fire_hook / fire_many ── append_rows ─▶ pending ◀─ the leader: the first caller to
                                            (rows)     find no commit under way commits
                                                       everyone's pending rows itself
    server-style submit(rows, callback) ─▶ pending, wakes the rigger_mp-journal thread
    event + its background hooks done ─ done(seq) ─▶ done marks (a deque), the first of a
                                                     group wakes the thread (it lingers)
    waiters ◀── seqs, or the commit's error (one transaction, one fsync per group)

One commits at a time (:class:`Leader`). A caller that finds nobody committing becomes
the leader and commits its rows (and all pending) in its own thread, with no hand-off to
the thread and back: a lone caller's ``fire_many`` costs one transaction and no thread
switch. A caller that finds a commit under way only queues its rows and waits; when the
leader's commit ends with rows pending, it hands the lead to the thread, which commits
them in groups as they queue (callers never lead for others: a leader's wait stays one
commit). So under load the group still grows with it, and throughput follows the
writer's transaction rate rather than its fsync rate. A failed commit fails every append
of its group; its done marks are carried into the next group (deleting a row twice is
harmless). Done marks never make anyone wait. The first one after a commit wakes the
thread, which commits them (with any appends pending) :data:`DONE_LINGER` after that first
mark came: so a done mark is committed within ``DONE_LINGER`` of its event's end, plus
the commits ahead of it (this thread's under way, the other process's holding the file)
and its own, however many events run meanwhile.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import printable
from ..errors import describe_error
from .codec import encode
from .errors import JournalCommitError, JournalError
from .store import JournalStore, NewRow

log = printable.logger("rigger_mp.journal")

MAX_GROUP_ROWS = 8192
"""Most rows per transaction, so one commit's latency stays bounded under a flood."""

DONE_LINGER = 0.02
"""Seconds from a group's first done mark to its commit (unless an append comes first to
ride with): done marks cost one transaction per this interval, not one per event."""
DONE_BATCH = 4096
"""Done marks that are written at once, without lingering."""

Outcome = range | JournalError
"""What an append's callback gets: the seqs of its rows, in order, or the commit's error."""
Callback = Callable[[Outcome], None]


class _Waiter:
    """A caller blocked on its append: a lock the committing thread releases."""

    __slots__ = ("_lock", "outcome")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.outcome: Outcome | None = None

    def __call__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self._lock.release()

    def wait(self) -> range:
        self._lock.acquire()
        outcome = self.outcome
        if isinstance(outcome, JournalError):
            # A fresh exception per waiter: threads must not share one traceback.
            raise type(outcome)(*outcome.args) from outcome.__cause__
        assert outcome is not None
        return outcome


_WAKE = "wake"  # the thread's queue: commit what is pending now (or take over the lead)
_DONE = "done"  # done marks came: commit them after DONE_LINGER (or with an append)
_Token = str | None  # None: the stop mark


class Leader(enum.Enum):
    """Who commits now (at most one: it alone touches the store and ``_carried``)."""

    IDLE = "idle"
    CALLER = "caller"  # an append_rows caller, for its own group
    THREAD = "thread"  # the commit thread, until nothing is pending


class GroupCommitter:
    """The journal's writer in one process over one store: its callers, or its thread."""

    def __init__(self, store: JournalStore, name: str = "rigger_mp-journal") -> None:
        self.store = store
        self._queue: queue.SimpleQueue[_Token] = queue.SimpleQueue()  # the thread's wake-ups
        self._gate = threading.Lock()  # guards _closed, _pending, _leader: "not closed, then add"
        self._closed = False
        self._pending: list[tuple[Sequence[NewRow], Callback]] = []
        # Done marks: appended by any thread without the gate; taken by the leader.
        self._done: deque[int] = deque()
        self._done_armed = False  # a wake-up is queued for the marks in _done
        self._done_since = 0.0  # when the first of them came (time.monotonic)
        self._leader = Leader.IDLE
        self._stopping = False  # the thread met the stop mark while a caller led
        self._carried: list[int] = []  # done marks of a failed commit (the leader's)
        self.counters = GroupCounters()
        self.done_marks_dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------

    def submit(self, rows: Sequence[NewRow], callback: Callback) -> None:
        """Queue rows for the next group; ``callback`` runs on the committing thread after it.

        ``callback`` must not block: every other waiter of the group waits on it. Unless
        it is an :meth:`append_rows` caller's (who commits or waits itself), the commit
        thread is woken to commit it.
        """
        with self._gate:
            if self._closed:
                raise JournalError(f"journal {self.store.path}: closed, nothing more is accepted")
            self._pending.append((rows, callback))
            if not isinstance(callback, _Waiter):
                self._queue.put(_WAKE)

    def append_rows(self, rows: Sequence[NewRow]) -> range:
        """Append and block until committed; their seqs. Raises the group's error.

        The caller commits (its rows and all pending) if nobody is committing; else its
        rows wait for the thread's next group.
        """
        waiter = _Waiter()
        self.submit(rows, waiter)
        with self._gate:
            lead = self._leader is Leader.IDLE
            if lead:
                self._leader = Leader.CALLER
        if lead:
            taken = self._take()
            if taken is not None:
                self._carried = self._commit(*taken)
            with self._gate:
                if self._pending:  # queued during the commit: the thread's to commit
                    self._leader = Leader.THREAD
                    self._queue.put(_WAKE)
                else:
                    self._leader = Leader.IDLE
                    if self._done:  # the thread saw their wake-up and left them to this
                        self._queue.put(_DONE)  # leader, which has finished
                if self._stopping:
                    self._stopping = False
                    self._queue.put(None)  # the thread waited for this commit to stop
        return waiter.wait()

    def append(self, tid: str, hook_name: str, data: Mapping[str, Any]) -> int:
        """Journal one event (encoded in the calling thread) once committed; its seq.

        Raises :class:`~.errors.JournalEncodeError` before queueing for data that is
        neither plain data nor picklable, :class:`JournalCommitError` if its group failed.
        """
        fmt, blob = encode(hook_name, data)
        return self.append_rows([(tid, hook_name, fmt, blob)])[0]

    def done(self, seq: int) -> None:
        """Mark one event done: it goes with the next group and nobody waits for it.

        Called once per finished event (on the event thread, or the pool's), so it takes
        no lock: the marks go into a deque, and only the first of a group wakes the
        thread, which disarms before it takes them (a mark added meanwhile re-arms).
        """
        if self._closed:
            self.done_marks_dropped += 1  # it will be replayed: at-least-once
            return
        marks = self._done
        marks.append(seq)
        if not self._done_armed:
            self._done_since = time.monotonic()
            self._done_armed = True
            self._queue.put(_DONE)
        elif len(marks) == DONE_BATCH:
            self._queue.put(_WAKE)

    def close(self) -> None:
        """Commit what was queued, then stop the thread (the store stays open)."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self.done_marks_dropped += len(self._done)  # came as it closed: replayed

    @property
    def commits(self) -> int:
        """Transactions committed."""
        return self.counters.commits

    @property
    def failed_commits(self) -> int:
        """Transactions that failed (their appends were refused)."""
        return self.counters.failed_commits

    def stats(self) -> dict[str, Any]:
        """Counters of this committer and what the journal holds now."""
        stats = self.counters.as_dict(self.store)
        stats["done_marks_dropped"] = self.done_marks_dropped
        return stats

    # -- committing ---------------------------------------------------------------------

    def _run(self) -> None:
        """The commit thread: submitted rows, done marks, and the last group at close."""
        get = self._queue.get
        while True:
            token = get()
            if token == _DONE:
                # Done marks alone: nobody waits for them, so let more gather (or an
                # append come, which they ride with) until DONE_LINGER after the first.
                linger = self._done_since + DONE_LINGER
                while token == _DONE:
                    wait = linger - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        token = get(timeout=wait)
                    except queue.Empty:
                        break
            with self._gate:
                if self._leader is Leader.CALLER:  # it hands on what it leaves
                    self._stopping = self._stopping or token is None
                    continue
                self._leader = Leader.THREAD
            while (taken := self._take()) is not None:
                self._carried = self._commit(*taken)
            if token is None:
                if self._carried:
                    log.warning(
                        "journal %s: %d done mark(s) not written at close; those "
                        "events will run again at the next start",
                        self.store.path,
                        len(self._carried),
                    )
                return

    def _take(
        self,
    ) -> tuple[list[tuple[Sequence[NewRow], Callback]], list[int], float] | None:
        """The leader's next group: pending appends (up to MAX_GROUP_ROWS), all done marks
        (those of a failed commit first) and when the first new one came; None, and the
        lead given up, when there is nothing new."""
        with self._gate:
            pending = self._pending
            since = self._done_since
            self._done_armed = False  # before the marks are taken: one added later re-arms
            marks = self._done
            done = [marks.popleft() for _ in range(len(marks))]
            if not pending and not done:  # marks of a failed commit wait for the next group,
                self._leader = Leader.IDLE  # not retried on their own while it fails
                return None
            count = 0
            for taken, (rows, _) in enumerate(pending):
                count += len(rows)
                if count > MAX_GROUP_ROWS and taken:  # the rest go in the next group
                    self._pending = pending[taken:]
                    pending = pending[:taken]
                    break
            else:
                self._pending = []
        return pending, self._carried + done if self._carried else done, since

    def _commit(
        self, pending: list[tuple[Sequence[NewRow], Callback]], done: list[int], since: float
    ) -> list[int]:
        """Write one group and answer its callbacks; the done marks to carry on failure."""
        rows = [row for part, _ in pending for row in part] if len(pending) != 1 else pending[0][0]
        outcome = commit_group(self.store, self.counters, rows, done)
        if done and isinstance(outcome, range):
            self.counters.done_lag(time.monotonic() - since)
        offset = 0
        for part, callback in pending:
            count = len(part)
            answer = (
                outcome[offset : offset + count] if isinstance(outcome, range) else outcome
            )
            offset += count
            try:
                callback(answer)
            except Exception:
                log.exception("journal %s: a commit callback failed", self.store.path)
        return done if isinstance(outcome, JournalError) else []


class GroupCounters:
    """What a process's commits did (the ``journal`` stats of either committer)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.commits = 0
        self.failed_commits = 0
        self.appended = 0
        self.done_marks = 0
        self.append_commits = 0
        self.max_group = 0
        self.last_commit_seconds = 0.0
        self.max_commit_seconds = 0.0
        self.last_done_lag = 0.0
        self.max_done_lag = 0.0

    def done_lag(self, seconds: float) -> None:
        """A group of done marks was committed ``seconds`` after the first of them came."""
        self.last_done_lag = seconds
        self.max_done_lag = max(self.max_done_lag, seconds)

    def as_dict(self, store: JournalStore) -> dict[str, Any]:
        """The counters, the rates derived from them and what the journal holds now."""
        pending, dead = store.counts()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        groups = self.append_commits
        return {
            "path": store.path,
            "pending": pending,
            "dead": dead,
            "bytes": store.size_bytes(),
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "commits_per_second": self.commits / elapsed,
            "appended": self.appended,
            "done_marks": self.done_marks,
            "groups": groups,
            "mean_group_size": self.appended / groups if groups else 0.0,
            "max_group_size": self.max_group,
            "last_commit_seconds": self.last_commit_seconds,
            "max_commit_seconds": self.max_commit_seconds,
            "last_done_lag_seconds": self.last_done_lag,
            "max_done_lag_seconds": self.max_done_lag,
        }


def commit_group(
    store: JournalStore,
    counters: GroupCounters,
    rows: Sequence[NewRow],
    done: list[int],
    ids: Sequence[tuple[str, str]] = (),
    keep_ids: int = 0,
) -> Outcome:
    """One transaction: append ``rows``, delete the ``done`` seqs; their seqs or the error.
    ``ids``, ``keep_ids``: see :meth:`JournalStore.commit`.

    The error names the file and the group (its ``__cause__`` is the store's error) and
    is logged; nothing raises.
    """
    started = time.perf_counter()
    try:
        seqs = store.commit(rows, done, ids, keep_ids)
    except Exception as exc:
        counters.failed_commits += 1
        error = JournalCommitError(
            f"journal {store.path}: the commit of a group of {len(rows)} event(s) "
            f"failed, none of them was accepted: {describe_error(exc)}"
        )
        error.__cause__ = exc
        log.error("%s", error)
        return error
    took = counters.last_commit_seconds = time.perf_counter() - started
    counters.max_commit_seconds = max(counters.max_commit_seconds, took)
    counters.commits += 1
    counters.appended += len(rows)
    counters.done_marks += len(done)
    if rows:
        counters.append_commits += 1
        counters.max_group = max(counters.max_group, len(rows))
    return seqs
