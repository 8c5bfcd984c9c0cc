"""Running one event: pre callbacks, then the plugins' hooks, then post callbacks.

Each stage's callables all see the namespace as it was when the stage began; their
updates are merged when the whole stage has finished (the order of callables within a
stage is not promised, so no callable may depend on another's updates in that stage).

A stage with ``async def`` callables (:meth:`EventRunner.stage_async`) starts them all
on the dispatcher's :class:`~rigger_mp.coroutine_thread.CoroutineThread`, where they run
concurrently, runs its plain callables meanwhile, and ends when the last has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from ..coroutine_thread import CoroutineThread
from ..merge import recursive_update
from .calling import Callee, Updates

ExcInfo = tuple[type[BaseException], BaseException, Any]
FailureHandler = Callable[[ExcInfo], None]


def annotate(exc: BaseException, text: str) -> None:
    """Attach where a failure happened to the exception (shown in its traceback)."""
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(text)


def _as_failure(outcome: BaseException, callee: Callee) -> Exception:
    """What an awaited callable raised, as the failure of its stage: a cancellation (the
    dispatcher stopped under it), or SystemExit or KeyboardInterrupt raised in it, becomes
    an error naming the callable."""
    if isinstance(outcome, Exception):
        return outcome
    if isinstance(outcome, asyncio.CancelledError):
        return RuntimeError(f"{callee.label} was cancelled ({type(outcome).__name__})")
    failure = RuntimeError(f"{callee.label} raised {type(outcome).__name__}: {outcome}")
    failure.__cause__ = outcome
    return failure


class EventRunner:
    """Runs the stages of events against one global namespace.

    Only the thread that runs events calls :meth:`stage`; it is therefore the only
    writer of the global namespace.
    """

    def __init__(
        self,
        global_data: dict[str, Any],
        squash_exceptions: bool,
        on_failure: FailureHandler,
        executor: Executor | None,
        coroutines: CoroutineThread | None = None,
    ) -> None:
        self.global_data = global_data
        self.squash_exceptions = squash_exceptions
        self.on_failure = on_failure
        self.executor = executor
        self.coroutines = coroutines or CoroutineThread()

    def stage(self, callees: Sequence[Callee], local: dict[str, Any], event: str) -> None:
        """Run one stage and merge its updates into ``local`` and the globals."""
        if not callees:
            return
        if len(callees) == 1:
            updates = self._call(callees[0], local, event)
            if updates is not None:
                local_updates, global_updates = updates
                if local_updates:
                    recursive_update(local, local_updates)
                if global_updates:
                    recursive_update(self.global_data, global_updates)
            return
        if self.executor is not None:
            results = self._call_concurrently(callees, local, event)
        else:
            results = [self._call(callee, local, event) for callee in callees]
        self._merge(results, local)

    def stage_async(self, callees: Sequence[Callee], local: dict[str, Any], event: str) -> None:
        """Run one stage that has ``async def`` callables: they are awaited concurrently on
        the coroutine thread while the plain ones run here; every one has ended before the
        stage's updates merge or its first failure is raised."""
        glob = self.global_data
        awaited: list[Callee] = []
        coroutines = []
        results: list[Updates | None] = []
        first: Exception | None = None
        for callee in callees:
            if callee.is_async:
                try:
                    coroutines.append(callee.func(**callee.arguments(local, glob)))
                    awaited.append(callee)
                except Exception as exc:  # missing arguments: fails as a plain call would
                    first = self._failed_in_stage(exc, callee, event, first)
        pending = self.coroutines.start_all(coroutines) if coroutines else None
        for callee in callees:
            if not callee.is_async:
                try:
                    results.append(callee.call(local, glob))
                except Exception as exc:
                    first = self._failed_in_stage(exc, callee, event, first)
        outcomes = pending.result() if pending is not None else []
        for callee, outcome in zip(awaited, outcomes, strict=True):
            try:
                if isinstance(outcome, BaseException):
                    raise _as_failure(outcome, callee)
                results.append(callee.check(outcome))
            except Exception as exc:
                first = self._failed_in_stage(exc, callee, event, first)
        if first is not None:
            raise first
        self._merge(results, local)

    def _failed_in_stage(
        self, exc: Exception, callee: Callee, event: str, first: Exception | None
    ) -> Exception | None:
        """The stage's first error to raise once every callable has ended; a failure after
        it is logged, so that nothing is lost."""
        if first is None:
            try:
                self._failed(exc, callee, event)
            except Exception as raised:
                return raised
            return None
        annotate(exc, f"rigger_mp: raised by {callee.label} during event {event!r}")
        self.on_failure((type(exc), exc, exc.__traceback__))
        return first

    def _merge(self, results: Sequence[Updates | None], local: dict[str, Any]) -> None:
        """Merge a stage's updates into ``local`` and the globals, once it has ended."""
        local_acc: dict[str, Any] = {}
        global_acc: dict[str, Any] = {}
        for updates in results:
            if updates is not None:
                recursive_update(local_acc, updates[0])
                recursive_update(global_acc, updates[1])
        recursive_update(local, local_acc)
        recursive_update(self.global_data, global_acc)

    def _call(self, callee: Callee, local: dict[str, Any], event: str) -> Updates | None:
        try:
            return callee.call(local, self.global_data)
        except Exception as exc:
            self._failed(exc, callee, event)
            return None

    def _failed(self, exc: Exception, callee: Callee, event: str) -> None:
        """Raise ``exc`` to the waiter, or hand it to the failure handler when squashing."""
        annotate(exc, f"rigger_mp: raised by {callee.label} during event {event!r}")
        if not self.squash_exceptions:
            raise exc
        self.on_failure((type(exc), exc, exc.__traceback__))

    def _call_concurrently(
        self, callees: Sequence[Callee], local: dict[str, Any], event: str
    ) -> list[Updates | None]:
        assert self.executor is not None
        futures: list[Future[Updates]] = [
            self.executor.submit(callee.call, local, self.global_data) for callee in callees
        ]
        results: list[Updates | None] = []
        first_error: Exception | None = None
        for callee, future in zip(callees, futures, strict=True):
            exc = future.exception()
            if exc is None:
                results.append(future.result())
            elif not isinstance(exc, Exception):
                raise exc
            elif first_error is None:
                # Every hook has finished before an error leaves the stage.
                try:
                    self._failed(exc, callee, event)
                except Exception as raised:
                    first_error = raised
            else:  # a second failure in a stage already failing: log it, lose nothing
                annotate(exc, f"rigger_mp: raised by {callee.label} during event {event!r}")
                self.on_failure((type(exc), exc, exc.__traceback__))
            del exc
        if first_error is not None:
            raise first_error
        return results
