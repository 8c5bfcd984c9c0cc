"""Task: a Future whose Condition is made only when someone waits or adds a callback."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future, InvalidStateError, as_completed
from typing import Any

import pytest

from rigger_mp import Task


def test_result_set_before_anyone_waits() -> None:
    task = Task("1", "ev")
    assert task.set_running_or_notify_cancel()
    task.set_result({"a": 1})
    assert task._lazy_condition is None  # nobody needed the Condition
    assert task.done() and task.result() == {"a": 1}


def test_waiter_racing_the_result_is_always_woken() -> None:
    # A waiter that makes the Condition just as the result is set must not miss it.
    for i in range(2000):
        task = Task(str(i), "ev")
        task.set_running_or_notify_cancel()
        got: list[object] = []
        waiter = threading.Thread(target=lambda t=task, g=got: g.append(t.result(timeout=10)))
        waiter.start()
        task.set_result({"i": i})
        waiter.join()
        assert got == [{"i": i}]


def test_exception_and_callbacks_after_lazy_condition() -> None:
    task = Task("1", "ev")
    seen: list[BaseException | None] = []
    task.add_done_callback(lambda t: seen.append(t.exception()))
    task.set_running_or_notify_cancel()
    task.set_exception(ValueError("x"))
    with pytest.raises(ValueError):
        task.result()
    assert isinstance(seen[0], ValueError)


def test_setting_twice_is_refused_on_both_paths() -> None:
    fast = Task("1", "ev")
    fast.set_running_or_notify_cancel()
    fast.set_result({})
    with pytest.raises(InvalidStateError):
        fast.set_result({})
    slow = Task("2", "ev")
    slow.add_done_callback(lambda t: None)
    slow.set_running_or_notify_cancel()
    slow.set_exception(ValueError())
    with pytest.raises(InvalidStateError):
        slow.set_exception(ValueError())


def test_cancel_before_running_and_as_completed() -> None:
    cancelled = Task("1", "ev")
    assert cancelled.cancel()
    assert not cancelled.set_running_or_notify_cancel()
    with pytest.raises(CancelledError):
        cancelled.result()
    finished = Task("2", "ev")
    finished.set_running_or_notify_cancel()
    threading.Thread(target=finished.set_result, args=({"x": 1},)).start()
    waited: list[Future[dict[str, Any]]] = [finished]
    assert [f.result() for f in as_completed(waited, timeout=10)] == [{"x": 1}]


def test_result_timeout_then_result() -> None:
    from concurrent.futures import TimeoutError as FutureTimeoutError

    task = Task("1", "ev")
    task.set_running_or_notify_cancel()
    with pytest.raises(FutureTimeoutError):
        task.result(timeout=0.01)
    task.set_result({"late": True})
    assert task.result(timeout=0) == {"late": True}


def test_cancel_wakes_a_waiter() -> None:
    task = Task("1", "ev")
    outcome: list[str] = []
    entered = threading.Event()

    def wait() -> None:
        entered.set()
        try:
            task.result(timeout=10)
        except CancelledError:
            outcome.append("cancelled")

    waiter = threading.Thread(target=wait)
    waiter.start()
    entered.wait()
    assert task.cancel()
    waiter.join()
    assert outcome == ["cancelled"]


def test_many_waiters_on_one_task_all_wake_with_the_exception() -> None:
    task = Task("1", "ev")
    task.set_running_or_notify_cancel()
    caught: list[BaseException] = []
    ready = threading.Barrier(9, timeout=10)

    def wait() -> None:
        ready.wait()
        try:
            task.result(timeout=10)
        except ValueError as exc:
            caught.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(8)]
    for waiter in waiters:
        waiter.start()
    ready.wait()
    task.set_exception(ValueError("shared"))
    for waiter in waiters:
        waiter.join()
    assert len(caught) == 8
    assert task.done() and task._lazy_condition is None
