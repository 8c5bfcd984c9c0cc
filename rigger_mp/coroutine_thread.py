"""One asyncio loop in a thread of its own, started on first use, for ``async def`` hooks.

The event thread runs events one at a time and must not block on the network; an
``async def`` hook, callback or I/O-lane hook is a coroutine that waits cheaply. A
dispatcher owns one :class:`CoroutineThread`; nothing starts until the first coroutine
is handed to it, so a dispatcher with no async callable has no such thread and pays
nothing::

    event thread                         coroutine thread (asyncio loop)
    ------------                         -------------------------------
    start_all([c1, c2, c3]) ─schedule─▶  gather(c1, c2, c3): run concurrently
          │ waits on the Future              │
          ◀──────── their results ───────────┘  (a stage keeps its order: the event
                                                 thread waits for all before the next)
    submit(coro, done) ──schedule──▶     coro runs; done(result or exception) is called
                                         on the coroutine thread (the I/O lane)
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from .lifecycle import move

T = TypeVar("T")

THREAD_NAME: Final = "rigger_mp-coroutines"


class Phase(enum.Enum):
    """Whether the loop runs."""

    IDLE = "idle"
    """Not started: nothing was handed to it yet."""
    RUNNING = "running"
    STOPPED = "stopped"
    """Stopped for good; coroutines handed to it now raise RuntimeError."""


_EDGES: Final = {
    Phase.IDLE: frozenset({Phase.RUNNING, Phase.STOPPED}),
    Phase.RUNNING: frozenset({Phase.STOPPED}),
}


class CoroutineThread:
    """The dispatcher's asyncio loop, in its own thread, started by the first coroutine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the phase and the start
        self._phase = Phase.IDLE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        """Whether the loop's thread was ever started."""
        return self._thread is not None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started now if this is the first use."""
        with self._lock:
            if self._phase is Phase.RUNNING:
                assert self._loop is not None
                return self._loop
            if self._phase is Phase.STOPPED:
                raise RuntimeError("the dispatcher's coroutine thread is stopped")
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name=THREAD_NAME, daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            self._phase = move(_EDGES, self._phase, Phase.RUNNING)
            return loop

    def _loop_for(
        self, coroutines: Sequence[Coroutine[Any, Any, Any]]
    ) -> asyncio.AbstractEventLoop:
        """The running loop; if it is stopped, ``coroutines`` are closed (never to run) and
        RuntimeError raised."""
        try:
            return self._running_loop()
        except RuntimeError:
            for coroutine in coroutines:
                coroutine.close()
            raise

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            while True:
                try:
                    loop.run_forever()
                    break  # stop() stopped it
                except (SystemExit, KeyboardInterrupt):
                    # A coroutine raised it: asyncio re-raises it out of the loop, which
                    # would end this thread and leave every waiter waiting for ever; the
                    # task that raised it holds it as its outcome, so run on.
                    continue
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start_all(
        self, coroutines: Sequence[Coroutine[Any, Any, T]]
    ) -> Future[list[T | BaseException]]:
        """Start ``coroutines`` to run concurrently; a future of every one's result or the
        exception it raised, in order, set once the last has ended."""
        loop = self._loop_for(coroutines)

        async def gather() -> list[T | BaseException]:
            return await asyncio.gather(*coroutines, return_exceptions=True)

        return asyncio.run_coroutine_threadsafe(gather(), loop)

    def run_all(self, coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
        """:meth:`start_all`, then wait for the last to end (from a thread other than the
        loop's, which would wait on itself)."""
        return self.start_all(coroutines).result()

    def submit(
        self, coroutine: Coroutine[Any, Any, T], done: Callable[[Future[T]], None]
    ) -> Future[T]:
        """Start ``coroutine`` and return at once; ``done`` is called with its future when it
        ends (on the loop's thread, or on the caller's if it was cancelled first)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop_for([coroutine]))
        future.add_done_callback(done)
        return future

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel what still runs, stop the loop and join its thread; False if the thread
        did not end within ``timeout``. Later coroutines are refused."""
        with self._lock:
            if self._phase is Phase.STOPPED:
                return True
            self._phase = move(_EDGES, self._phase, Phase.STOPPED)
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return True

        def cancel_and_stop() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_soon(loop.stop)  # after the cancellations are delivered

        loop.call_soon_threadsafe(cancel_and_stop)
        thread.join(timeout)
        return not thread.is_alive()
