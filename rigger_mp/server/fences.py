"""Fences: how the main process learns that every fire the server acked is queued.

::

    sync()/quiesce()            supervisor                server process       intake thread
    ----------------            ----------                --------------       -------------
    n = ask() ───────────────▶ sent(n, now) ─ Fence(n) ──▶ flushes its acks,
                                (owed since now)           writes FencePassed(n)
                                                           behind them ───────▶ passed(n)
    wait(n) ◀──────────────────────────────── notify ◀──────────────────────────────┘

A server process that dies answers every fence asked so far: its end-of-file means the
intake has read all it wrote (``passed()``). A fence owed by a process that has sent
nothing for ``limit`` seconds while the intake waited on its pipe marks that process as
unresponsive (:meth:`FenceLedger.unresponsive`): the supervisor kills it.

:class:`FenceLedger` is the bookkeeping alone (no clock, no thread); :class:`Fences`
puts it behind a condition for the threads that ask, answer and wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FenceLedger:
    """Fence numbers asked and answered, and the fences owed with the time each was sent."""

    __slots__ = ("_owed", "asked", "limit", "seen")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        """Seconds a process may owe a fence and send nothing before it is unresponsive."""
        self.asked = 0
        self.seen = 0
        self._owed: deque[tuple[int, float]] = deque()  # sent, unanswered: (n, when), in order

    def ask(self) -> int:
        """The number of a new fence."""
        self.asked += 1
        return self.asked

    def answered(self, n: int) -> bool:
        """Whether fence ``n`` is answered."""
        return self.seen >= n

    def sent(self, n: int, now: float) -> bool:
        """Record fence ``n`` as sent at ``now``; False (nothing owed) if already answered."""
        if n <= self.seen:
            return False
        self._owed.append((n, now))
        return True

    def passed(self, n: int | None = None) -> None:
        """Every fence up to ``n`` (None: every one asked so far) is answered."""
        self.seen = max(self.seen, self.asked if n is None else n)
        owed = self._owed
        while owed and owed[0][0] <= self.seen:
            owed.popleft()

    def outstanding(self) -> int:
        """The last fence asked if it is unanswered (a new server must answer it), else 0."""
        return self.asked if self.asked > self.seen else 0

    def owed_since(self) -> float | None:
        """When the oldest fence still owed was sent; None if none is owed."""
        return self._owed[0][1] if self._owed else None

    def unresponsive(self, now: float, silent_since: float | None) -> bool:
        """The silence rule: a fence is owed and, for ``limit`` seconds, the server has
        sent nothing while the intake waited on its pipe (since ``silent_since``; None:
        the intake is not waiting on it, so the server is not the one behind)."""
        owed_since = self.owed_since()
        if silent_since is None or owed_since is None:
            return False
        return now - max(silent_since, owed_since) >= self.limit


class Fences:
    """A :class:`FenceLedger` shared by the threads that ask, answer and wait for fences."""

    def __init__(self, limit: float) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._ledger = FenceLedger(limit)

    @property
    def limit(self) -> float:
        return self._ledger.limit

    def ask(self) -> int:
        with self._cond:
            return self._ledger.ask()

    def sent(self, n: int) -> bool:
        """Record fence ``n`` as sent now; False if it was answered meanwhile (don't send)."""
        with self._cond:
            return self._ledger.sent(n, time.monotonic())

    def passed(self, n: int | None = None) -> None:
        """Fence ``n`` (None: every one asked so far) is answered: wake the waiters."""
        with self._cond:
            self._ledger.passed(n)
            self._cond.notify_all()

    def wait(self, n: int, timeout: float | None) -> bool:
        """Wait until fence ``n`` is answered; False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ledger.answered(n), timeout)

    def outstanding(self) -> int:
        with self._cond:
            return self._ledger.outstanding()

    def owed(self) -> bool:
        """Whether a fence sent is still unanswered."""
        with self._cond:
            return self._ledger.owed_since() is not None

    def unresponsive(self, silent_since: float | None) -> bool:
        """:meth:`FenceLedger.unresponsive` now."""
        with self._cond:
            return self._ledger.unresponsive(time.monotonic(), silent_since)
