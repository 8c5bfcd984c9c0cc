"""When an open run has gone quiet for ``run_timeout``: one thread, asleep until then.

::

    event thread ── arm(run, due) ──▶ deadlines {run: due}   (at a run's first event, and
                                            │                 again when it was not quiet)
                                            │
    clock thread: wait on the condition until the earliest due ─▶ due: on_due(run)
                                                                  (hands it to the event
                                                                   thread: call_soon)

A run is armed once, at its first event; a later event only records its time (the run's
``last_event``), so events cost the clock nothing. When the deadline comes, ``on_due``
hands the run key to the event thread, which owns the runs: there
:meth:`rigger_mp.plugins.runs.Runs.idle` ends the run if it has been quiet for
``run_timeout``, else the run is armed again for ``last_event + run_timeout``. So the
thread wakes at most once per ``run_timeout`` per open run, and never polls: it sleeps on
its condition until the earliest deadline, woken early only by an earlier one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .. import printable

logger = printable.logger("rigger_mp")


class IdleClock:
    """Calls ``on_due(key)`` on its own thread once ``key``'s deadline has passed."""

    def __init__(self, name: str, on_due: Callable[[str], None]) -> None:
        self.name = name
        self.on_due = on_due
        self._deadlines: dict[str, float] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, key: str, due: float) -> None:
        """``key`` is due at ``due`` (``time.monotonic()``), replacing its earlier deadline."""
        with self._cond:
            if self._closed:
                return
            earliest = min(self._deadlines.values(), default=None)
            self._deadlines[key] = due
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"rigger_mp-{self.name}-clock", daemon=True
                )
                self._thread.start()
            elif earliest is None or due < earliest:
                self._cond.notify()

    def forget(self, key: str) -> None:
        """``key`` is no longer timed (its run ended)."""
        with self._cond:
            self._deadlines.pop(key, None)

    def close(self) -> None:
        """End the thread; no ``on_due`` is called after this returns."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                key = self._next_due()
                if key is None:
                    return
            try:
                self.on_due(key)
            except Exception:
                logger.exception("%s: handing over the idle run %r failed", self.name, key)

    def _next_due(self) -> str | None:
        """Wait (holding the condition) until a key is due; it leaves the deadlines.
        ``None`` once closed."""
        while not self._closed:
            if not self._deadlines:
                self._cond.wait()
                continue
            key, due = min(self._deadlines.items(), key=lambda item: item[1])
            left = due - time.monotonic()
            if left <= 0:
                del self._deadlines[key]
                return key
            self._cond.wait(left)
        return None
