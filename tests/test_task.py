"""Task: a Future whose Condition is made only when someone waits or adds a callback."""

from __future__ import annotations

import dis
import threading
import types
from collections.abc import Callable
from concurrent.futures import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Future,
    InvalidStateError,
    _base,
    as_completed,
    wait,
)
from typing import Any

import pytest

from rigger_mp import Rigger, Task, WouldDeadlock
from tests.test_events import plugin_rigger

# The private fields of Future that Task recreates without calling Future.__init__.
FUTURE_FIELDS = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


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


# -- the parts of concurrent.futures Task depends on --------------------------------------


def _attributes(code: types.CodeType) -> set[str]:
    """Every attribute name ``code`` (and the code nested in it) loads, stores or deletes."""
    names = {
        str(ins.argval)
        for ins in dis.get_instructions(code)
        if ins.opname in ("LOAD_ATTR", "STORE_ATTR", "DELETE_ATTR", "LOAD_METHOD")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _attributes(const)
    return names


def test_future_still_has_the_fields_task_recreates() -> None:
    # Task skips Future.__init__: a field CPython adds or renames there breaks it.
    assert set(Future().__dict__) == FUTURE_FIELDS


def test_future_code_task_runs_uses_only_those_fields() -> None:
    # The Future methods (inherited, or reached through super()) and the module functions
    # that Task runs, and the private attributes they use: a change in CPython shows here.
    code = [f.__code__ for f in vars(Future).values() if isinstance(f, types.FunctionType)]
    code += [
        _base._AcquireFutures.__enter__.__code__,
        _base._AcquireFutures.__exit__.__code__,
        vars(_base)["_create_and_install_waiters"].__code__,  # not in typeshed
        vars(_base)["_yield_finished_futures"].__code__,
        _base.as_completed.__code__,
        _base.wait.__code__,
    ]
    private = {
        name
        for c in code
        for name in _attributes(c)
        if name.startswith("_") and not name.endswith("__")
    }
    assert private == FUTURE_FIELDS | {"_invoke_callbacks", "_Future__get_result"}
    inherited = {name for name in vars(Future) if name not in vars(Task)}
    assert inherited == {
        "__class_getitem__",
        "__dict__",
        "__weakref__",
        "_Future__get_result",
        "_invoke_callbacks",
        "add_done_callback",
    }


# -- waiting from an event thread ---------------------------------------------------------


def _futures(*tasks: Task) -> list[Future[dict[str, Any]]]:
    return list(tasks)


# Each with a timeout, so that a regression fails in seconds instead of hanging the run;
# the check does not depend on it (test_events waits without one).
WAYS: dict[str, Callable[[Task], object]] = {
    "result": lambda task: task.result(timeout=5),
    "exception": lambda task: task.exception(timeout=5),
    "wait": lambda task: wait([task], timeout=5),
    "wait(FIRST_COMPLETED)": lambda task: wait([task], timeout=5, return_when=FIRST_COMPLETED),
    "wait(FIRST_EXCEPTION)": lambda task: wait([task], timeout=5, return_when=FIRST_EXCEPTION),
    "as_completed": lambda task: next(as_completed(_futures(task), timeout=5)),
}


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_every_wait_on_an_unfinished_task_from_a_hook_raises(
    way: Callable[[Task], object],
) -> None:
    def outer(rigger: Rigger) -> None:
        way(rigger.fire_hook("inner"))

    rigger = plugin_rigger({"outer": outer, "inner": lambda: None})
    with rigger:
        rigger.global_data["rigger"] = rigger
        with pytest.raises(WouldDeadlock, match="'inner'"):
            rigger.fire_hook("outer").result(timeout=30)


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
def test_every_wait_on_a_finished_task_from_a_hook_returns(
    way: Callable[[Task], object],
) -> None:
    def outer(done: Task) -> None:
        way(done)

    rigger = plugin_rigger({"outer": outer, "inner": lambda: None})
    with rigger:
        done = rigger.fire_hook("inner")
        done.result(timeout=10)
        rigger.fire_hook("outer", done=done).result(timeout=10)


def test_add_done_callback_from_a_hook_does_not_wait_and_is_allowed() -> None:
    called: list[str] = []

    def outer(rigger: Rigger) -> None:
        rigger.fire_hook("inner").add_done_callback(lambda task: called.append(repr(task)))

    rigger = plugin_rigger({"outer": outer, "inner": lambda: None})
    with rigger:
        rigger.global_data["rigger"] = rigger
        rigger.fire_hook("outer").result(timeout=10)
    assert len(called) == 1  # stop() drained the inner event


def test_wait_on_a_task_from_another_thread_still_waits() -> None:
    task = Task("1", "ev", runners={threading.get_ident() + 1})
    task.set_running_or_notify_cancel()
    threading.Thread(target=task.set_result, args=({"x": 1},)).start()
    done, not_done = wait([task], timeout=10)
    assert done == {task} and not not_done
