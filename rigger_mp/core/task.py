"""The task handle ``fire_hook`` returns.

A :class:`Task` is a ``concurrent.futures.Future``, made cheaper for the two ways events
are used:

- Fired and never waited on (most events). A plain Future builds a
  ``threading.Condition`` and two lists when it is made and takes the Condition twice
  more to start and finish: a third of the cost of a whole event, and garbage-collector
  work that grew with every event still queued. A Task makes them only when somebody
  needs them (``add_done_callback``, ``cancel``, ``concurrent.futures.wait``).
- Fired and waited on. ``result()`` and ``exception()`` wait on a bare lock used as a
  gate, which the thread that finishes the task opens; ``Condition.wait`` runs several
  microseconds of Python first, long enough that the event thread, already woken, had to
  go back to sleep until the waiter let go of the interpreter.

One shared lock guards a task's state changes on the fast paths and the making of its
Condition and gate: a waiter either sees the task finished or made its gate before the
task finished, and the finisher opens what exists.

Every way of waiting on an unfinished task from a thread that runs events raises
:class:`~rigger_mp.errors.WouldDeadlock`: ``result()`` and ``exception()`` check first;
``concurrent.futures.wait`` and ``as_completed`` install their waiter through
``_waiters``, which checks too. This relies on the private fields of
``concurrent.futures.Future`` that the Future code Task runs uses;
tests/test_task.py pins them, so a CPython that changes them fails there.
"""

from __future__ import annotations

import threading
from collections.abc import Container
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from time import perf_counter
from typing import Any

from ..errors import WouldDeadlock

_lock = threading.Lock()
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class Task(Future[dict[str, Any]]):
    """A future for one event; its result is the event's final namespace.

    ``tid`` identifies the event; ``local`` holds its namespace until it runs. Waiting
    on an unfinished event from a thread that runs events (``runners``) would wait
    forever, so it raises :class:`WouldDeadlock`.
    """

    # Defaults shared by every task until a task sets its own: fewer stores per event.
    _result: Any = None
    _exception: BaseException | None = None
    _lazy_condition: threading.Condition | None = None
    _lazy_waiters: list[Any] | None = None
    _lazy_callbacks: list[Any] | None = None
    _gate: threading.Lock | None = None
    seq: int | None = None
    """The event's journal seq, when a journal holds it (see rigger_mp.core.journaling)."""

    def __init__(
        self,
        tid: str,
        hook_name: str,
        local: dict[str, Any] | None = None,
        runners: Container[int] = (),
    ) -> None:
        # Future.__init__'s state, less what is made on demand (see the module docstring).
        self._state = PENDING
        self.tid = tid
        self.hook_name = hook_name
        self.local = local
        self._runners = runners
        self.accepted_at = perf_counter()
        """When it was accepted (``time.perf_counter``): its queue wait and latency count
        from here."""

    # -- what Future's own code uses, made on first use --------------------------------

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is None:
            with _lock:
                condition = self._lazy_condition
                if condition is None:
                    self._lazy_waiters = []
                    self._lazy_callbacks = []
                    condition = self._lazy_condition = threading.Condition()
        return condition

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        # concurrent.futures.wait and as_completed add their waiter here (holding the
        # Conditions, which they release on the way out): where they can be refused.
        self._refuse_wait_from_runner()
        if self._lazy_waiters is None:
            self._condition  # noqa: B018  (makes the lists)
        assert self._lazy_waiters is not None
        return self._lazy_waiters

    @property
    def _done_callbacks(self) -> list[Any]:
        if self._lazy_callbacks is None:
            self._condition  # noqa: B018  (makes the lists)
        assert self._lazy_callbacks is not None
        return self._lazy_callbacks

    # -- state changes: the fast path while nobody made the Condition -------------------

    def set_running_or_notify_cancel(self) -> bool:
        with _lock:
            if self._lazy_condition is None:
                # Nobody can have cancelled it: cancel() makes the Condition.
                if self._state != PENDING:
                    raise RuntimeError(f"Task in unexpected state {self._state}")
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def set_result(self, result: dict[str, Any]) -> None:
        self._finish(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(None, exception)

    def _finish(self, result: Any, exception: BaseException | None) -> None:
        with _lock:
            if self._lazy_condition is None:  # no callback, no Condition waiter
                if self._state in _DONE:
                    raise InvalidStateError(f"{self._state}: {self!r}")
                if exception is None:
                    self._result = result
                else:
                    self._exception = exception
                self._state = FINISHED
                if self._gate is not None:
                    self._open_gate()
                return
        if exception is None:
            super().set_result(result)
        else:
            super().set_exception(exception)
        with _lock:
            self._open_gate()

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            with _lock:
                self._open_gate()
        return cancelled

    def _open_gate(self) -> None:
        """Let every ``result()`` waiter through; called with ``_lock`` held."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()

    # -- waiting ------------------------------------------------------------------------

    def done(self) -> bool:
        return self._state in _DONE

    def running(self) -> bool:  # Future's makes the Condition, which watched() counts
        return self._state == RUNNING

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def watched(self) -> bool:
        """Whether anyone has asked for the outcome: a ``result()`` or ``exception()``
        caller, a done-callback, ``concurrent.futures.wait``; else its failure is logged."""
        return self._gate is not None or self._lazy_condition is not None

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        self._settle(timeout)
        if self._exception is not None:
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # break the traceback cycle
        result: dict[str, Any] = self._result
        return result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._settle(timeout)
        return self._exception

    def _settle(self, timeout: float | None) -> None:
        """Wait until finished; ``CancelledError`` or ``TimeoutError`` if it is not."""
        if self._state not in _DONE:
            self._refuse_wait_from_runner()
            self._wait(timeout)
        state = self._state
        if state == FINISHED:
            return
        if state in (CANCELLED, CANCELLED_AND_NOTIFIED):
            raise CancelledError()
        raise FutureTimeoutError()

    def _refuse_wait_from_runner(self) -> None:
        """:class:`WouldDeadlock` if unfinished and this thread runs events: it never would."""
        if self._state not in _DONE and threading.get_ident() in self._runners:
            raise WouldDeadlock(
                f"a hook waited on event {self.hook_name!r} (tid {self.tid}), which "
                "runs only after the current event; fire it and do not wait"
            )

    def _wait(self, timeout: float | None) -> None:
        with _lock:
            if self._state in _DONE:
                return
            gate = self._gate
            if gate is None:
                gate = self._gate = threading.Lock()
                gate.acquire()
        if gate.acquire(timeout=-1 if timeout is None else timeout):
            gate.release()  # open for the next waiter too

    def __repr__(self) -> str:
        return f"<Task {self.tid} {self.hook_name!r} {self._state.lower()}>"
