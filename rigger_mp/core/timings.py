"""Histograms of how long events and hooks take, kept in the main process for ``stats()``.

::

    accept (Task made: accepted_at) ──queue wait──▶ event thread takes it ──run──▶ ended
                                    └──────────── event latency ───────────────────┘
                                                  plugin hook (plain, on this thread)
                                                  └─ hook duration, by (plugin, hook)

The event thread is the only writer of :attr:`Timings.queue_wait` and
:attr:`Timings.event_latency`, so an observation is a ``bisect`` and two additions on
plain lists, with no lock; what an event pays is mostly its clock readings (one at its
acceptance, one as it starts, one as it ends, two around each timed hook). A reader
(``stats()``, any thread) copies the lists; a copy taken between the two additions may
miss the last observation in ``sum`` but never breaks the buckets' order. Hook histograms
are keyed by the plugin instance's name and the event its hook binds, both taken from
the loaded plugins (never from a client's event name), so their number is bounded by the
plugins' bindings. With ``threaded`` hooks (a thread pool runs a stage's hooks) several
threads observe a hook histogram, so those take a lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Final

from .calling import Callee, Updates

LATENCY_BOUNDS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Bucket upper bounds in seconds (``le``), 100 µs to a minute; ``+Inf`` is implied."""


class Histogram:
    """Observations counted into buckets: ``counts[i]`` holds those at most
    ``bounds[i]`` and above ``bounds[i - 1]``; the last count those above every bound."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (its writer's thread only: see the module docstring)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> dict[str, Any]:
        """Its figures as plain JSON: ``bounds``, per-bucket ``counts`` (not cumulative,
        one more than the bounds: the last is above them all) and ``sum``."""
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.total}


class TimedCallee(Callee):
    """A plugin's plain hook that counts how long each call takes into ``histogram``."""

    __slots__ = ("histogram", "lock")

    def __init__(self, inner: Callee, histogram: Histogram, lock: threading.Lock | None) -> None:
        # The inner callee's signature was read when it was registered: copied, not read again.
        for name in Callee.__slots__:
            setattr(self, name, getattr(inner, name))
        self.histogram = histogram
        self.lock = lock

    def call(self, local: Mapping[str, Any], glob: Mapping[str, Any]) -> Updates:
        # Callee.call's body, not a call of it: one Python frame less per hook.
        start = perf_counter()
        try:
            result = self.func(**self.arguments(local, glob))
        finally:
            elapsed = perf_counter() - start
            if self.lock is None:
                self.histogram.observe(elapsed)
            else:
                with self.lock:
                    self.histogram.observe(elapsed)
        return (None, None) if result is None else self.check(result)


class Timings:
    """The event thread's histograms and one per plugin hook bound."""

    def __init__(self) -> None:
        self.queue_wait = Histogram()
        """From an event's acceptance to the event thread taking it (counted once it ended)."""
        self.event_latency = Histogram()
        """From an event's acceptance to the end of its run (done or failed)."""
        self._hooks: dict[tuple[str, str], Histogram] = {}
        self._lock = threading.Lock()  # makes hook histograms and guards threaded ones

    def ran(self, accepted: float, started: float, ended: float) -> None:
        """One event ran (done or failed): count its queue wait and its latency, from the
        ``perf_counter`` readings at its acceptance, start and end. The event thread only;
        :meth:`Histogram.observe` written out twice, as this runs once per event."""
        wait, latency = started - accepted, ended - accepted
        histogram = self.queue_wait
        histogram.counts[bisect_left(histogram.bounds, wait)] += 1
        histogram.total += wait
        histogram = self.event_latency
        histogram.counts[bisect_left(histogram.bounds, latency)] += 1
        histogram.total += latency

    def timed(self, plugin: str, hook: str, callee: Callee, threaded: bool) -> Callee:
        """``callee`` (instance ``plugin``'s hook bound to ``hook``) counting its calls'
        durations; an ``async def`` hook is returned as it is (its time is spent on the
        coroutine thread, not in the call)."""
        if callee.is_async:
            return callee
        with self._lock:
            histogram = self._hooks.setdefault((plugin, hook), Histogram())
        return TimedCallee(callee, histogram, self._lock if threaded else None)

    def snapshot(self) -> dict[str, Any]:
        """The ``timings`` entry of ``stats()``."""
        with self._lock:
            hooks = list(self._hooks.items())
        return {
            "queue_wait_seconds": self.queue_wait.snapshot(),
            "event_latency_seconds": self.event_latency.snapshot(),
            "hook_duration_seconds": [
                {"plugin": plugin, "hook": hook, **histogram.snapshot()}
                for (plugin, hook), histogram in sorted(hooks)
            ],
        }
