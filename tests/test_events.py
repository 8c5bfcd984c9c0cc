"""Event flow: order, stages, nested events, threaded hooks, failures, callbacks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rigger_mp import Rigger, RiggerBasePlugin, ShuttingDown, WouldDeadlock
from rigger_mp.core.rigger import parts_of


def plugin_rigger(hooks: dict[str, Callable[..., Any]], **config: Any) -> Rigger:
    """A Rigger whose one instance ``p`` binds ``hooks``."""

    class Plugin(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            for event, hook in hooks.items():
                self.register_plugin_hook(event, hook)

    rigger = Rigger({"plugins": {"p": {"plugin": "p"}}, **config})
    rigger.register_plugin(Plugin, "p")
    return rigger


def test_fire_hook_returns_a_task_at_once_and_events_run_in_order() -> None:
    gate = threading.Event()
    order: list[int] = []

    def hook(n: int) -> None:
        gate.wait()
        order.append(n)

    rigger = plugin_rigger({"ev": hook})
    with rigger:
        tasks = [rigger.fire_hook("ev", n=n) for n in range(200)]
        assert not tasks[-1].done()  # returned before any ran: the first is held
        gate.set()
        results = [t.result() for t in tasks]
    assert order == list(range(200))
    assert [r["n"] for r in results] == list(range(200))
    assert len({t.tid for t in tasks}) == 200


def test_pre_finish_before_hooks_and_hooks_before_post() -> None:
    log: list[str] = []
    rigger = Rigger({"plugins": {"a": {"plugin": "p"}, "b": {"plugin": "p"}}})

    class Plugin(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev", lambda: log.append(f"hook-{self.ident}"))

    rigger.register_plugin(Plugin, "p")
    for i in range(3):
        rigger.register_hook_callback("ev", "pre", lambda i=i: log.append(f"pre{i}"))
        rigger.register_hook_callback("ev", "post", lambda i=i: log.append(f"post{i}"))
    with rigger:
        rigger.fire_hook("ev").result()
    assert sorted(log[:3]) == ["pre0", "pre1", "pre2"]
    assert sorted(log[3:5]) == ["hook-a", "hook-b"]
    assert sorted(log[5:]) == ["post0", "post1", "post2"]


def test_nested_fire_hook_is_queued_behind_the_current_event() -> None:
    order: list[str] = []

    class Nesting(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("outer")
            self.register_plugin_hook("inner")

        def outer(self) -> None:
            self.nested = self.fire_hook("inner", depth=1)
            order.append("outer")

        def inner(self, depth: int) -> tuple[None, dict[str, Any]]:
            order.append(f"inner{depth}")
            return None, {"inner_ran": True}

    rigger = Rigger({"plugins": {"n": {"plugin": "n"}}})
    rigger.register_plugin(Nesting, "n")
    with rigger:
        rigger.fire_hook("outer").result()
        obj = rigger.get_instance_obj("n")
        assert isinstance(obj, Nesting)
        assert obj.nested.result()["depth"] == 1
    assert order == ["outer", "inner1"]


def test_waiting_on_a_nested_event_from_a_hook_raises_instead_of_hanging() -> None:
    def outer(rigger: Rigger) -> None:
        rigger.fire_hook("inner").result()

    rigger = plugin_rigger({"outer": outer})
    with rigger:
        rigger.global_data["rigger"] = rigger
        with pytest.raises(WouldDeadlock, match="'inner'"):
            rigger.fire_hook("outer").result()


def test_nested_events_fired_while_stopping_still_run() -> None:
    ran: list[int] = []

    class Chain(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("step")

        def step(self, n: int) -> None:
            ran.append(n)
            if n < 5:
                self.fire_hook("step", n=n + 1)

    rigger = Rigger({"plugins": {"c": {"plugin": "c"}}})
    rigger.register_plugin(Chain, "c")
    rigger.start()
    rigger.fire_hook("step", n=0)
    rigger.stop()
    assert ran == [0, 1, 2, 3, 4, 5]


def test_threaded_hooks_really_overlap_and_their_updates_merge() -> None:
    instances = 4
    barrier = threading.Barrier(instances, timeout=10)

    class Overlap(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev")

        def ev(self) -> tuple[dict[str, Any], dict[str, Any]]:
            # Passes only if all four hooks run at the same time.
            barrier.wait()
            return {"who": [self.ident]}, {"threads": [threading.get_ident()]}

    config = {"threaded": True, "plugins": {f"i{n}": {"plugin": "o"} for n in range(instances)}}
    rigger = Rigger(config)
    rigger.register_plugin(Overlap, "o")
    with rigger:
        result = rigger.fire_hook("ev").result()
        second = rigger.fire_hook("ev").result()
    assert sorted(result["who"]) == ["i0", "i1", "i2", "i3"]
    assert len(set(second["threads"][:instances])) == instances
    assert len(rigger.global_data["threads"]) == 2 * instances


def test_threaded_failure_waits_for_all_hooks_then_fails_the_event() -> None:
    finished: list[str] = []

    class Mixed(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev")

        def ev(self) -> None:
            if self.ident == "bad":
                raise RuntimeError("bad hook")
            finished.append(self.ident)

    rigger = Rigger(
        {"threaded": True, "plugins": {n: {"plugin": "m"} for n in ("bad", "g1", "g2")}}
    )
    rigger.register_plugin(Mixed, "m")
    with rigger:
        with pytest.raises(RuntimeError, match="bad hook"):
            rigger.fire_hook("ev").result()
        assert sorted(finished) == ["g1", "g2"]
        assert rigger.fire_hook("next").result() == {}


def test_failing_hook_fails_its_event_and_the_next_event_runs() -> None:
    def hook(n: int) -> tuple[dict[str, Any], None]:
        if n == 1:
            raise ValueError("boom")
        return {"ok": n}, None

    post_ran: list[int] = []
    rigger = plugin_rigger({"ev": hook})
    rigger.register_hook_callback("ev", "post", lambda n: post_ran.append(n))
    with rigger:
        tasks = [rigger.fire_hook("ev", n=n) for n in range(3)]
        with pytest.raises(ValueError, match="boom") as info:
            tasks[1].result()
        assert tasks[0].result()["ok"] == 0
        assert tasks[2].result()["ok"] == 2
    assert post_ran == [0, 2]  # the failing event stopped at its failing stage
    notes = getattr(info.value, "__notes__", [])
    assert any("hook 'ev' of instance 'p'" in note for note in notes)
    assert rigger.stats()["events"] | {} == {
        "accepted": 3,
        "done": 2,
        "failed": 1,
        "abandoned": 0,
        "in_flight": 0,
        "queued": 0,
    }


def test_squashed_failure_is_logged_with_traceback_and_event_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    post_ran: list[int] = []

    def hook(n: int) -> None:
        raise ValueError("squashed boom")

    rigger = plugin_rigger({"ev": hook}, squash_exceptions=True)
    rigger.register_hook_callback("ev", "post", lambda n: post_ran.append(n))
    with caplog.at_level(logging.ERROR, logger="rigger_mp"), rigger:
        assert rigger.fire_hook("ev", n=7).result() == {"n": 7}
    assert post_ran == [7]
    record = next(r for r in caplog.records if r.exc_info)
    assert record.name == "rigger_mp"
    assert "squashed boom" in caplog.text
    assert "Traceback" in caplog.text


def test_handle_failure_can_be_overridden() -> None:
    caught: list[BaseException] = []

    class MyRigger(Rigger):
        def handle_failure(self, exc_info: Any) -> None:
            caught.append(exc_info[1])

    class Plugin(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev", self.ev)

        def ev(self) -> None:
            raise KeyError("k")

    rigger = MyRigger({"squash_exceptions": True, "plugins": {"p": {"plugin": "p"}}})
    rigger.register_plugin(Plugin, "p")
    with rigger:
        rigger.fire_hook("ev").result()
    assert len(caught) == 1 and isinstance(caught[0], KeyError)


def test_callbacks_register_by_name_and_unregister() -> None:
    calls: list[str] = []
    rigger = Rigger()
    name = rigger.register_hook_callback("ev", "pre", lambda: calls.append("anon"))
    rigger.register_hook_callback("ev", "post", lambda: calls.append("named"), name="mine")
    with rigger:
        rigger.fire_hook("ev").result()
        rigger.unregister_hook_callback("ev", "pre", name)
        rigger.unregister_hook_callback("ev", "post", "mine")
        rigger.fire_hook("ev").result()
        with pytest.raises(KeyError, match="mine"):
            rigger.unregister_hook_callback("ev", "post", "mine")
    assert calls == ["anon", "named"]
    with pytest.raises(ValueError, match="ctype"):
        rigger.register_hook_callback("ev", "middle", print)


def test_task_handle_is_a_future_with_callbacks_and_tid() -> None:
    from concurrent.futures import Future, wait

    done: list[int] = []
    rigger = Rigger()
    with rigger:
        task = rigger.fire_hook("ev", x=1)
        task.add_done_callback(lambda t: done.append(t.result()["x"]))
        assert isinstance(task, Future)
        wait([task], timeout=10)
        assert task.result(timeout=10) == {"x": 1}
        assert task.tid == "1"
    assert done == [1]


def test_many_threads_waiting_on_tasks_all_wake() -> None:
    gate = threading.Event()

    def hook() -> None:
        gate.wait()

    rigger = plugin_rigger({"ev": hook})
    results: list[dict[str, Any]] = []
    with rigger:
        tasks = [rigger.fire_hook("ev", i=i) for i in range(20)]
        waiters = [threading.Thread(target=lambda t=t: results.append(t.result())) for t in tasks]
        for waiter in waiters:
            waiter.start()
        gate.set()
        for waiter in waiters:
            waiter.join()
    assert sorted(r["i"] for r in results) == list(range(20))


def test_a_queued_task_can_be_cancelled() -> None:
    gate = threading.Event()
    ran: list[int] = []

    def hook(n: int) -> None:
        gate.wait()
        ran.append(n)

    rigger = plugin_rigger({"ev": hook})
    with rigger:
        first = rigger.fire_hook("ev", n=1)
        second = rigger.fire_hook("ev", n=2)
        assert second.cancel()
        gate.set()
        first.result()
    assert ran == [1]
    assert second.cancelled()


def test_call_soon_runs_on_the_event_thread_in_order_with_events() -> None:
    order: list[str] = []
    threads: set[int] = set()
    rigger = Rigger()
    rigger.register_hook_callback("ev", "pre", lambda n: order.append(f"event{n}"))

    def job() -> None:
        threads.add(threading.get_ident())
        order.append("job")
        rigger.global_data["from_job"] = True

    with rigger:
        rigger.fire_hook("ev", n=1)
        rigger.call_soon(job)
        result = rigger.fire_hook("ev", n=2).result()
    assert order == ["event1", "job", "event2"]
    assert result["from_job"] is True
    assert threads != {threading.get_ident()}


def test_fire_batch_queues_in_order_with_the_tids_given_between_single_fires() -> None:
    gate = threading.Event()
    order: list[int] = []

    def hook(n: int) -> None:
        gate.wait()
        order.append(n)

    rigger = plugin_rigger({"ev": hook})
    with rigger:
        first = rigger.fire_hook("ev", n=0)
        port = parts_of(rigger).port  # what the TCP intake queues its batches through
        batch = port.accept_batch([(f"b{n}", "ev", {"n": n}) for n in range(1, 100)])
        last = rigger.fire_hook("ev", n=100)
        assert not batch[-1].done()  # returned before any ran: the first is held
        gate.set()
        results = [t.result() for t in (first, *batch, last)]
        assert port.accept_batch([]) == []
    assert order == list(range(101))
    assert [r["n"] for r in results] == list(range(101))
    assert [t.tid for t in batch] == [f"b{n}" for n in range(1, 100)]
    assert first.tid != last.tid and rigger.stats()["events"]["accepted"] == 101


def test_fire_batch_after_stop_accepts_nothing() -> None:
    """A batch before start is refused by the event thread (test_event_thread): the port
    the intake uses exists only once the Rigger has started."""
    rigger = plugin_rigger({"ev": lambda: None})
    with rigger:
        port = parts_of(rigger).port
        port.accept_batch([("t2", "ev", {})])[0].result()
    with pytest.raises(ShuttingDown, match="stopped"):
        port.accept_batch([("t3", "ev", {}), ("t4", "ev", {})])
    assert rigger.stats()["events"]["accepted"] == 1
