"""The I/O lane: ``async def`` hooks that wait on the network, run beside the events.

A hook bound with ``bg="io"`` (or of an instance with ``background: io``) is handed here
like a backgrounded hook (:class:`~rigger_mp.pool.background.Background` submits it
with a pickled snapshot of its arguments), but it runs in the main process, on the
dispatcher's :class:`~rigger_mp.coroutine_thread.CoroutineThread`: no worker process,
no manager queue, no thread per call. The lane is a
:class:`~rigger_mp.pool.interface.WorkerPool`, so results, failures, counters, waiting
and the journal's done marks are the backgrounded hooks' own::

    event thread                      coroutine thread
    ------------                      ----------------
    submit(items) ──room? (at most ──▶ hook(**snapshot), within io_timeout
      io_concurrency in flight; the        │
      next waits for room)                 ▼
                                      sink.completed(...) ──▶ the event thread merges
                                                              its global updates

Bounds: ``io_concurrency`` hooks in flight at once; the event thread waits for room
before it starts one more (nothing queues without bound). ``io_timeout`` seconds for
each, then it is cancelled and reported failed.
"""

from __future__ import annotations

import asyncio
import enum
import pickle
import threading
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ..deadline import Deadline
from ..lifecycle import move
from .interface import Failure, ResultSink, WorkerInfo, WorkItem

if TYPE_CHECKING:
    from ..core.plugin import PluginInstance
    from ..coroutine_thread import CoroutineThread


class Phase(enum.Enum):
    """Whether the lane takes hooks."""

    NEW = "new"
    OPEN = "open"
    STOPPED = "stopped"
    """:meth:`IoLane.stop` ran: hooks handed in now are reported not run."""


_EDGES: Final = {
    Phase.NEW: frozenset({Phase.OPEN, Phase.STOPPED}),
    Phase.OPEN: frozenset({Phase.STOPPED}),
}


class LaneTimeout(Exception):
    """An I/O-lane hook ran past ``io_timeout`` and was cancelled."""


class IoLane:
    """I/O-lane hooks of the main process's own plugin instances (a WorkerPool)."""

    def __init__(
        self,
        instances: Mapping[str, PluginInstance],
        coroutines: CoroutineThread,
        concurrency: int,
        timeout: float,
    ) -> None:
        self._instances = instances
        self._coroutines = coroutines
        self.concurrency = concurrency
        self.timeout = timeout
        self._room = threading.BoundedSemaphore(concurrency)
        self._cond = threading.Condition()  # guards the phase and _flying
        self._phase = Phase.NEW
        self._flying: dict[int, tuple[WorkItem, Future[Mapping[str, Any] | None]]] = {}
        self._handed_back: set[int] = set()  # by stop(), counted there as abandoned
        self._sink: ResultSink | None = None
        self.done = 0

    def start(self, sink: ResultSink) -> None:
        """Take hooks from now on; results go to ``sink``."""
        with self._cond:
            self._sink = sink
            self._phase = move(_EDGES, self._phase, Phase.OPEN)

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Start each item's hook; with ``io_concurrency`` in flight, wait for room first."""
        sink = self._sink
        assert sink is not None
        for item in items:
            self._room.acquire()  # the bound: the event thread waits for a hook to end
            with self._cond:
                if self._phase is not Phase.OPEN:
                    self._room.release()
                    sink.completed(1, [], [Failure.of(item, None, "the I/O lane is stopped")])
                    continue
                future = self._coroutines.submit(self._run(item), partial(self._ended, item))
                if not future.done():
                    self._flying[item.work_id] = (item, future)

    async def _run(self, item: WorkItem) -> Mapping[str, Any] | None:
        """Await one hook with its snapshot of the namespace; its global updates."""
        _, ident, event, payload = item
        callee = self._instances[ident].obj.callbacks[event].callee
        kwargs = pickle.loads(payload)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await asyncio.wait_for(callee.func(**kwargs), self.timeout)
        except asyncio.TimeoutError:
            if loop.time() - started < self.timeout:
                raise  # the hook's own time-out (a client's, say), not the lane's
            raise LaneTimeout(
                f"did not end within io_timeout ({self.timeout:g} s) and was cancelled"
            ) from None
        return callee.check(result)[1]  # like a backgrounded hook, no local updates

    def _ended(self, item: WorkItem, future: Future[Mapping[str, Any] | None]) -> None:
        """On the coroutine thread: give back its room and report it (unless stop() has
        already counted it as abandoned)."""
        self._room.release()
        with self._cond:
            # Not in flight yet is not handed back: it ended before submit() could add it.
            self._flying.pop(item.work_id, None)
            handed_back = item.work_id in self._handed_back
            self._handed_back.discard(item.work_id)
            self._cond.notify_all()
        if handed_back:
            return
        sink = self._sink
        assert sink is not None
        if future.cancelled():
            sink.completed(1, [], [Failure.of(item, None, "cancelled: the I/O lane stopped")])
            return
        exc = future.exception()
        if exc is None:
            update = future.result()
            self.done += 1
            sink.completed(1, [update] if update else [], [], [item.work_id])
        elif isinstance(exc, LaneTimeout):
            sink.completed(1, [], [Failure.of(item, None, str(exc))], [item.work_id])
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            sink.completed(1, [], [Failure.of(item, None, text)], [item.work_id])

    def running(self) -> int:
        """Hooks in flight now."""
        with self._cond:
            return len(self._flying)

    def workers(self) -> list[WorkerInfo]:
        """None: the lane runs in the main process."""
        return []

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        """Take no more hooks; let those in flight end (unless ``abandon``) until
        ``timeout``, then cancel the rest and return them, unreported (the caller counts
        them as abandoned)."""
        deadline = Deadline(timeout)
        with self._cond:
            if self._phase is not Phase.STOPPED:
                self._phase = move(_EDGES, self._phase, Phase.STOPPED)
            if not abandon:
                while self._flying and (left := deadline.left()) != 0.0:
                    self._cond.wait(left)
            left_over = list(self._flying.values())
            self._flying.clear()
            self._handed_back.update(item.work_id for item, _ in left_over)
        for _, future in left_over:
            future.cancel()
        return [item for item, _ in left_over]
