"""Background's phases on their own: a fake port and an in-memory pool, no processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from rigger_mp import RiggerBasePlugin
from rigger_mp.core.config import InstanceConfig
from rigger_mp.core.event_runner import ExcInfo
from rigger_mp.core.plugin import PluginInstance
from rigger_mp.core.task import Task
from rigger_mp.pool.background import Background, Settled
from rigger_mp.pool.interface import ResultSink, WorkerInfo, WorkItem


class Port:
    """An EventPort whose 'event thread' runs each job at once, on the caller's thread."""

    def __init__(self) -> None:
        self.global_data: dict[str, Any] = {}
        self.jobs = 0
        self.failures: list[BaseException] = []
        self.fired: list[str] = []

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        self.fired.append(hook_name)
        return Task("1", hook_name)

    def accept_batch(
        self, events: Sequence[tuple[str, str, dict[str, Any]]], seqs: Sequence[int] | None = None
    ) -> list[Task]:
        raise NotImplementedError

    def server_gone(self) -> None:
        raise NotImplementedError

    def call_soon(self, func: Callable[[], None]) -> None:
        self.jobs += 1
        func()

    def backlog(self) -> int:
        return 0

    def accepted_count(self) -> int:
        return 0

    def report_failure(self, exc_info: ExcInfo) -> None:
        self.failures.append(exc_info[1])

    def on_event_thread(self) -> bool:
        return False

    def adopt_thread(self) -> None:
        pass

    def events_running(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {}

    def stop(self, timeout: float | None = None) -> None:
        pass


class Pool:
    """A WorkerPool that holds what it is given until the test finishes it."""

    def __init__(self) -> None:
        self.sink: ResultSink | None = None
        self.held: list[WorkItem] = []
        self.stops = 0

    def start(self, sink: ResultSink) -> None:
        self.sink = sink

    def submit(self, items: Sequence[WorkItem]) -> None:
        self.held.extend(items)

    def running(self) -> int:
        return len(self.held)

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(1, 0, 0.0, 0)]

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        self.stops += 1
        left, self.held = self.held, []
        return left

    def finish(self, updates: list[Mapping[str, Any]]) -> None:
        assert self.sink is not None
        self.sink.completed(len(self.held), updates, [])
        self.held = []


class Plugin(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("pack", bg=True)

    def pack(self, name: str) -> None:
        pass


def hooks() -> tuple[Any, ...]:
    obj = Plugin("p", {})
    instance = PluginInstance("p", obj, {}, InstanceConfig("p", "p", True, True, {}))
    return ((instance, obj.callbacks["pack"]),)


@pytest.fixture
def setup() -> tuple[Port, Pool, Background]:
    port, pool = Port(), Pool()
    background = Background(port, pool)
    pool.start(background)
    return port, pool, background


def test_settle_says_the_events_ran_while_a_hook_is_still_in_the_pool(
    setup: tuple[Port, Pool, Background],
) -> None:
    port, pool, background = setup
    background.submit(hooks(), {"name": "t"}, "pack")
    assert background.settle(0) == Settled(done=False, events_ran=True)
    assert background.wait(0) is False
    pool.finish([{"packed": 1}])
    assert background.settle(0) == Settled(done=True, events_ran=True)
    assert port.global_data == {"packed": 1}


def test_closing_ends_the_pool_once_and_fails_later_work(
    setup: tuple[Port, Pool, Background],
) -> None:
    port, pool, background = setup
    background.submit(hooks(), {"name": "t"}, "pack")
    background.close(drained=False)
    background.close(drained=True)
    assert pool.stops == 1
    stats = background.stats()
    assert stats["workers"] == []
    assert stats["background"]["abandoned"] == 1
    background.submit(hooks(), {"name": "t"}, "pack")
    assert "the worker pool is stopped" in str(port.failures[-1])
    assert background.stats()["background"]["failed"] == 1


def test_once_the_events_ended_results_settle_where_they_arrive(
    setup: tuple[Port, Pool, Background],
) -> None:
    port, pool, background = setup
    background.submit(hooks(), {"name": "t"}, "pack")
    background.events_ended()
    jobs = port.jobs
    pool.finish([{"packed": 1}])
    assert port.global_data == {"packed": 1}
    assert port.jobs == jobs  # merged on this thread: no job for the event thread
    background.fire("late", {})
    assert port.fired == []  # dropped (and logged): no event thread runs it
    background.close(drained=True)
    with pytest.raises(RuntimeError, match="no move from ENDED to ENDED"):
        background.events_ended()


def test_the_pool_may_end_before_the_events_do(setup: tuple[Port, Pool, Background]) -> None:
    port, _, background = setup
    background.close(drained=True)
    background.fire("still", {})
    assert port.fired == ["still"]  # the event thread still runs: the event is fired
    background.events_ended()
    with pytest.raises(RuntimeError, match="no move from ENDED"):
        background.events_ended()
