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
carried into the next group (deleting a row twice is harmless). Done marks never wait.
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
        self._queue: queue.SimpleQueue[tuple[Sequence[NewRow], Callback] | int | None]
        self._queue = queue.SimpleQueue()
        self._gate = threading.Lock()  # makes "not closed, then put" one step
        self._closed = False
        self._started = time.monotonic()
        self.commits = 0
        self.failed_commits = 0
        self.appended = 0
        self.done_marks = 0
        self.done_marks_dropped = 0
        self._append_commits = 0
        self.max_group = 0
        self.last_commit_seconds = 0.0
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
        """Mark an event done; it goes with the next group and nobody waits for it."""
        with self._gate:
            if self._closed:
                self.done_marks_dropped += 1  # it will be replayed: at-least-once
                return
            self._queue.put(seq)

    def close(self) -> None:
        """Commit what was queued, then stop the thread (the store stays open)."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def stats(self) -> dict[str, Any]:
        """Counters of this committer and what the journal holds now."""
        pending, dead = self.store.counts()
        elapsed = max(time.monotonic() - self._started, 1e-9)
        groups = self._append_commits
        return {
            "path": self.store.path,
            "pending": pending,
            "dead": dead,
            "bytes": self.store.size_bytes(),
            "commits": self.commits,
            "failed_commits": self.failed_commits,
            "commits_per_second": self.commits / elapsed,
            "appended": self.appended,
            "done_marks": self.done_marks,
            "done_marks_dropped": self.done_marks_dropped,
            "mean_group_size": self.appended / groups if groups else 0.0,
            "max_group_size": self.max_group,
            "last_commit_seconds": self.last_commit_seconds,
        }

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
            while True:
                if item is None:
                    stop = True
                    break
                if isinstance(item, int):
                    done.append(item)
                elif rows and len(rows) + len(item[0]) > MAX_GROUP_ROWS:
                    held = item  # first of the next group
                    break
                else:
                    rows.extend(item[0])
                    callbacks.append((item[1], len(item[0])))
                try:
                    item = get_nowait()  # drain what queued meanwhile: never waits
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
        started = time.perf_counter()
        outcome: range | JournalError
        try:
            outcome = self.store.commit(rows, done)
        except Exception as exc:
            self.failed_commits += 1
            outcome = JournalCommitError(
                f"journal {self.store.path}: the commit of a group of {len(rows)} event(s) "
                f"failed, none of them was accepted: {describe_error(exc)}"
            )
            outcome.__cause__ = exc
            log.error("%s", outcome)
            carry = done
        else:
            self.last_commit_seconds = time.perf_counter() - started
            self.commits += 1
            self.appended += len(rows)
            self.done_marks += len(done)
            if rows:
                self._append_commits += 1
                self.max_group = max(self.max_group, len(rows))
            carry = []
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
        return carry
