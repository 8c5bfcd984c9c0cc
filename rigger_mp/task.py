"""The task handle ``fire_hook`` returns.

A :class:`Task` is a ``concurrent.futures.Future``. A plain Future builds a
``threading.Condition`` when it is made, and takes it twice more to start and finish;
that was a third of the cost of a whole event. Most events are fired and never
waited on, so a Task makes its Condition only when somebody first needs it (to wait,
to add a callback, to cancel). Until then, starting and finishing it take one shared
lock, which is also the lock that guards making the Condition: a waiter either sees the
task finished, or made the Condition before the task finished, and is woken by it.
"""

from __future__ import annotations

import threading
from collections.abc import Container
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any

from .errors import WouldDeadlock

_make_condition_lock = threading.Lock()


class Task(Future[dict[str, Any]]):
    """A future for one event; its result is the event's final namespace.

    ``tid`` identifies the event. Waiting on an unfinished event from a thread that
    runs events (``runners``) would wait forever, so it raises :class:`WouldDeadlock`.
    """

    def __init__(self, tid: str, hook_name: str, runners: Container[int] = ()) -> None:
        # Future.__init__'s state, less the Condition (see the module docstring).
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self._lazy_condition: threading.Condition | None = None
        self.tid = tid
        self.hook_name = hook_name
        self._runners = runners

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        condition = self._lazy_condition
        if condition is None:
            with _make_condition_lock:
                condition = self._lazy_condition
                if condition is None:
                    condition = self._lazy_condition = threading.Condition()
        return condition

    def set_running_or_notify_cancel(self) -> bool:
        with _make_condition_lock:
            if self._lazy_condition is None:
                # Nobody can have cancelled it: cancel() makes the Condition.
                if self._state != PENDING:
                    raise RuntimeError(f"Task in unexpected state {self._state}")
                self._state = RUNNING
                return True
        return super().set_running_or_notify_cancel()

    def set_result(self, result: dict[str, Any]) -> None:
        with _make_condition_lock:
            if self._lazy_condition is None:  # no waiter, no callback
                self._check_settable()
                self._result = result
                self._state = FINISHED
                return
        super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        with _make_condition_lock:
            if self._lazy_condition is None:  # no waiter, no callback
                self._check_settable()
                self._exception = exception
                self._state = FINISHED
                return
        super().set_exception(exception)

    def _check_settable(self) -> None:
        if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        if threading.get_ident() in self._runners and not self.done():
            raise WouldDeadlock(
                f"a hook waited on event {self.hook_name!r} (tid {self.tid}), which runs "
                "only after the current event; fire it and do not wait"
            )
        return super().result(timeout)

    def __repr__(self) -> str:
        return f"<Task {self.tid} {self.hook_name!r} {self._state.lower()}>"
