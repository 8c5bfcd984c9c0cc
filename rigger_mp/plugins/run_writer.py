"""Writing a run's files off the event thread.

Rendering the report of 100,000 tests takes seconds; on the event thread it would hold
up every event behind it. So ``finish_session`` only takes a :class:`~.runs.Snapshot` of
the run (which nothing changes any more) and hands it to a :class:`Writer`: one thread,
started on the first job and ended by :meth:`Writer.close`, that runs the jobs in order.
The dispatcher's ``stop()`` closes every plugin (``plugin_stop``) once the events have
drained, so a report being written is complete when ``stop()`` returns.

A job that raises is logged (nobody waits on it), and the next job runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all

from .. import printable

logger = printable.logger("rigger_mp")


class Writer:
    """Runs write jobs in order, on a thread of their own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()

    def submit(self, job: Callable[[], None], what: str) -> Future[None]:
        """Queue ``job``; ``what`` names it in the log if it fails."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"rigger_mp-{self.name}")
            future = self._executor.submit(self._run, job, what)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _run(self, job: Callable[[], None], what: str) -> None:
        try:
            job()
        except Exception:
            logger.exception("%s: writing %s failed", self.name, what)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued job has run; False if ``timeout`` ran out first."""
        with self._lock:
            pending = set(self._pending)
        return not wait_all(pending, timeout).not_done

    def close(self, timeout: float | None = None) -> bool:
        """Run what is queued (for at most ``timeout`` seconds), then end the thread.

        Returns False (and logs what was left) if the jobs did not end in time; the
        thread then ends after them."""
        finished = self.wait(timeout)
        with self._lock:
            executor, self._executor = self._executor, None
            left = len(self._pending)
        if executor is not None:
            executor.shutdown(wait=finished)
        if not finished:
            logger.warning(
                "%s: %d file(s) still being written when the stop's time ran out",
                self.name,
                left,
            )
        return finished
