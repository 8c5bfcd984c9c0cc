"""Group commit: one thread writes the journal; callers wait only for their group's commit.

::

    fire_hook / server read ── append(rows) ──┐
                                              ├─▶ SimpleQueue ─▶ rigger_mp-journal thread
    event + its background hooks done ─ done(seq)                 takes one item (blocking),
                                                                  then all that queued meanwhile,
                                                                  one transaction, one fsync,
    waiters ◀── seqs, or the commit's error ◀───────────────────  then every callback of the group

While one commit runs, everything that arrives queues up and goes into the next: the
group grows with the load, so throughput follows the writer's transaction rate rather
than its fsync rate. A failed commit fails every append of its group; its done marks are
carried into the next group (deleting a row twice is harmless). Done marks never make
anyone wait; alone, they linger up to :data:`DONE_LINGER` for more to share a commit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import describe_error
from .codec import encode
from .errors import JournalCommitError, JournalError
from .store import JournalStore, NewRow

log = logging.getLogger("rigger_mp.journal")

MAX_GROUP_ROWS = 8192
"""Most rows per transaction, so one commit's latency stays bounded under a flood."""

DONE_LINGER = 0.02
"""Seconds a group of done marks alone waits for more (or for an append to ride with):
done marks cost one transaction per this interval, not one per finished event."""
DONE_BATCH = 4096
"""Done marks that are written at once, without lingering."""

Outcome = range | JournalError
"""What an append's callback gets: the seqs of its rows, in order, or the commit's error."""
Callback = Callable[[Outcome], None]


class _Waiter:
    """A caller blocked on its append: a lock the commit thread releases."""

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


class GroupCommitter:
    """The journal's writer thread in one process (main or server) over one store."""

    def __init__(self, store: JournalStore, name: str = "rigger_mp-journal") -> None:
        self.store = store
        self._queue: queue.SimpleQueue[tuple[Sequence[NewRow], Callback] | list[int] | None]
        self._queue = queue.SimpleQueue()
        self._gate = threading.Lock()  # makes "not closed, then put" one step
        self._closed = False
        self.counters = GroupCounters()
        self.done_marks_dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------

    def submit(self, rows: Sequence[NewRow], callback: Callback) -> None:
        """Queue rows for the next group; ``callback`` runs on the commit thread after it.

        The server process's entry point (its callback hands the outcome to its event
        loop). ``callback`` must not block: every other waiter of the group waits on it.
        """
        with self._gate:
            if self._closed:
                raise JournalError(f"journal {self.store.path}: closed, nothing more is accepted")
            self._queue.put((rows, callback))

    def append_rows(self, rows: Sequence[NewRow]) -> range:
        """Append and block until committed; their seqs. Raises the group's error."""
        waiter = _Waiter()
        self.submit(rows, waiter)
        return waiter.wait()

    def append(self, tid: str, hook_name: str, data: Mapping[str, Any]) -> int:
        """Journal one event (encoded in the calling thread) once committed; its seq.

        Raises :class:`~.errors.JournalEncodeError` before queueing for data that is
        neither JSON nor picklable, :class:`JournalCommitError` if its group failed.
        """
        fmt, blob = encode(hook_name, data)
        return self.append_rows([(tid, hook_name, fmt, blob)])[0]

    def done(self, seq: int) -> None:
        """Mark one event done (see :meth:`done_many`)."""
        self.done_many([seq])

    def done_many(self, seqs: list[int]) -> None:
        """Mark events done; they go with the next group and nobody waits for them.

        One call per batch of finished events (the event thread collects them), so the
        commit thread is woken once per batch, not once per event.
        """
        if not seqs:
            return
        with self._gate:
            if self._closed:
                self.done_marks_dropped += len(seqs)  # they will be replayed: at-least-once
                return
            self._queue.put(seqs)

    def close(self) -> None:
        """Commit what was queued, then stop the thread (the store stays open)."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

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

    # -- the commit thread ----------------------------------------------------------

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        carried: list[int] = []
        held: tuple[Sequence[NewRow], Callback] | None = None
        while True:
            rows: list[NewRow] = []
            callbacks: list[tuple[Callback, int]] = []
            done = carried
            carried = []
            stop = False
            item = held if held is not None else get()
            held = None
            linger: float | None = None  # until when a group of done marks alone waits
            while True:
                if item is None:
                    stop = True
                    break
                if isinstance(item, list):
                    done.extend(item)
                elif rows and len(rows) + len(item[0]) > MAX_GROUP_ROWS:
                    held = item  # first of the next group
                    break
                else:
                    rows.extend(item[0])
                    callbacks.append((item[1], len(item[0])))
                wait = 0.0
                if not rows and len(done) < DONE_BATCH:
                    # Done marks alone: nobody waits for them, so let more gather (or an
                    # append come, which they ride with) for up to DONE_LINGER.
                    now = time.monotonic()
                    linger = now + DONE_LINGER if linger is None else linger
                    wait = linger - now
                try:  # what queued meanwhile; appends never wait
                    item = get(timeout=wait) if wait > 0 else get_nowait()
                except queue.Empty:
                    break
            if rows or done:
                carried = self._commit(rows, callbacks, done)
            if stop:
                if carried:
                    log.warning(
                        "journal %s: %d done mark(s) not written at close; those events "
                        "will run again at the next start",
                        self.store.path,
                        len(carried),
                    )
                return

    def _commit(
        self, rows: list[NewRow], callbacks: list[tuple[Callback, int]], done: list[int]
    ) -> list[int]:
        """Write one group and answer its callbacks; the done marks to carry on failure."""
        outcome = commit_group(self.store, self.counters, rows, done)
        offset = 0
        for callback, count in callbacks:
            part = (
                outcome[offset : offset + count] if isinstance(outcome, range) else outcome
            )
            offset += count
            try:
                callback(part)
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
        }


def commit_group(
    store: JournalStore, counters: GroupCounters, rows: list[NewRow], done: list[int]
) -> Outcome:
    """One transaction: append ``rows``, delete the ``done`` seqs; their seqs or the error.

    The error names the file and the group (its ``__cause__`` is the store's error) and
    is logged; nothing raises.
    """
    started = time.perf_counter()
    try:
        seqs = store.commit(rows, done)
    except Exception as exc:
        counters.failed_commits += 1
        error = JournalCommitError(
            f"journal {store.path}: the commit of a group of {len(rows)} event(s) "
            f"failed, none of them was accepted: {describe_error(exc)}"
        )
        error.__cause__ = exc
        log.error("%s", error)
        return error
    counters.last_commit_seconds = time.perf_counter() - started
    counters.commits += 1
    counters.appended += len(rows)
    counters.done_marks += len(done)
    if rows:
        counters.append_commits += 1
        counters.max_group = max(counters.max_group, len(rows))
    return seqs
