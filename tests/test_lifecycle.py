"""Lifecycle: start, stop draining what was accepted, stop timeouts, exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from rigger_mp import Rigger, RiggerBasePlugin, RiggerError, ShuttingDown, WouldDeadlock
from rigger_mp.core.rigger import parts_of
from tests.conftest import rigger_threads


class Counter(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.count = 0
        self.register_plugin_hook("tick")

    def tick(self) -> None:
        self.count += 1


def holding(gate: threading.Event) -> Callable[[], None]:
    """A callback that holds the event queue until ``gate`` is set."""

    def hold() -> None:
        gate.wait()

    return hold


def counter_rigger() -> Rigger:
    rigger = Rigger({"plugins": {"c": {"plugin": "c"}}})
    rigger.register_plugin(Counter, "c")
    return rigger


def test_stop_drains_10000_queued_events_and_leaves_no_thread() -> None:
    gate = threading.Event()
    rigger = counter_rigger()
    rigger.register_hook_callback("hold", "pre", holding(gate))
    rigger.start()
    rigger.fire_hook("hold")
    tasks = [rigger.fire_hook("tick") for _ in range(10_000)]
    assert rigger.stats()["events"]["queued"] >= 9_999
    threading.Timer(0, gate.set).start()  # released only once stop() is waiting
    rigger.stop()
    obj = rigger.get_instance_obj("c")
    assert isinstance(obj, Counter)
    assert obj.count == 10_000
    assert all(t.done() and not t.exception() for t in tasks)
    assert rigger.stats()["events"]["done"] == 10_001
    assert rigger_threads() == []


def test_fire_before_start_or_after_stop_is_refused() -> None:
    rigger = counter_rigger()
    with pytest.raises(ShuttingDown, match="new"):
        rigger.fire_hook("tick")
    with rigger:
        rigger.fire_hook("tick").result()
    with pytest.raises(ShuttingDown, match="stopped"):
        rigger.fire_hook("tick")


def test_start_twice_is_an_error_and_stop_twice_is_harmless() -> None:
    rigger = counter_rigger()
    rigger.start()
    with pytest.raises(RiggerError, match="already running"):
        rigger.start()
    rigger.stop()
    rigger.stop()
    assert not rigger.running


def test_stop_timeout_fails_what_is_queued_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    rigger = counter_rigger()
    rigger.register_hook_callback("hold", "pre", holding(gate))
    rigger.start()
    held = rigger.fire_hook("hold")
    queued = [rigger.fire_hook("tick") for _ in range(5)]
    rigger.call_soon(lambda: rigger.global_data.update(merged=True))
    rigger.stop(timeout=0.05)
    for task in queued:
        with pytest.raises(ShuttingDown, match="abandoned"):
            task.result()
    assert rigger.stats()["events"]["abandoned"] == 5
    assert "5 queued event(s) abandoned" in caplog.text
    gate.set()
    assert held.result(timeout=10) == {}
    for thread in rigger_threads():
        thread.join(timeout=10)
    assert rigger.global_data == {"merged": True}  # the queued internal job still ran


def test_stop_from_inside_a_hook_is_refused() -> None:
    errors: list[BaseException] = []

    class Stopper(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("halt")

        def halt(self, rigger: Rigger) -> None:
            try:
                rigger.stop()
            except WouldDeadlock as exc:
                errors.append(exc)

    rigger = Rigger({"plugins": {"s": {"plugin": "s"}}})
    rigger.register_plugin(Stopper, "s")
    with rigger:
        rigger.fire_hook("halt", rigger=rigger).result()
    assert len(errors) == 1


def test_a_rigger_never_stopped_is_drained_at_interpreter_exit(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = textwrap.dedent(
        f"""
        import threading
        from rigger_mp import Rigger
        gate = threading.Event()
        rigger = Rigger()
        lines = []
        rigger.register_hook_callback("hold", "pre", lambda: gate.wait() and None)
        rigger.register_hook_callback("line", "pre", lambda n: lines.append(n))
        rigger.register_hook_callback(
            "flush", "pre", lambda: open({str(out)!r}, "w").write(str(len(lines))))
        rigger.start()
        rigger.fire_hook("hold")
        for n in range(1000):
            rigger.fire_hook("line", n=n)
        rigger.fire_hook("flush")
        gate.set()
        # no stop(): the interpreter exits with events still queued
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_text() == "1000"


def test_stats_give_uptime_and_events_per_second() -> None:
    rigger = Rigger()
    assert rigger.stats()["uptime"] == 0.0
    with rigger:
        rigger.fire_hook("noop").result(timeout=10)
        running = rigger.stats()
        assert running["uptime"] > 0
        assert running["events_per_second"] == pytest.approx(1 / running["uptime"], rel=0.5)
    stopped = rigger.stats()["uptime"]
    assert stopped >= running["uptime"]
    assert rigger.stats()["uptime"] == stopped  # frozen once stopped


def test_a_second_stop_waits_for_the_first_to_finish_draining() -> None:
    gate = threading.Event()
    rigger = counter_rigger()
    rigger.register_hook_callback("hold", "pre", holding(gate))
    rigger.start()
    rigger.fire_hook("hold")
    tasks = [rigger.fire_hook("tick") for _ in range(3)]
    # Learn when the first stop() has begun: it queues the stop signal once it is stopping.
    loop = parts_of(rigger).events
    queue, stopping = loop._queue, threading.Event()

    class Watched:
        def put(self, item: object) -> None:
            queue.put(item)
            stopping.set()

        def __getattr__(self, name: str) -> object:
            return getattr(queue, name)

    loop._queue = Watched()  # type: ignore[assignment]
    first = threading.Thread(target=rigger.stop)
    first.start()
    stopping.wait()
    threading.Timer(0, gate.set).start()
    rigger.stop()  # must not return before the drain has finished
    assert all(task.done() for task in tasks)
    first.join()


def test_log_message_carries_start_and_stop_news() -> None:
    news: list[str] = []

    class Logged(Rigger):
        def log_message(self, msg: str) -> None:
            news.append(msg)

    with Logged():
        pass
    assert news[0].startswith("started with")
    assert news[-1].startswith("stopped: 0 event(s) done")


def test_stats_before_start_are_zero_with_the_keys_of_a_running_rigger() -> None:
    rigger = Rigger()
    before = rigger.stats()
    zero = {"queued": 0, "running": 0, "done": 0, "failed": 0, "abandoned": 0}
    assert before["background"] == zero
    assert before["workers"] == []
    events = ["accepted", "done", "failed", "abandoned", "in_flight", "queued"]
    assert before["events"] == dict.fromkeys(events, 0)
    with rigger:
        assert rigger.stats().keys() == before.keys()
        assert rigger.stats()["background"].keys() == before["background"].keys()


class Stopped(RiggerBasePlugin):
    """Records its ``plugin_stop`` calls; ``fail: true`` makes its construction fail."""

    stops: ClassVar[list[str]] = []

    def plugin_initialize(self) -> None:
        if self.data.get("fail"):
            raise RuntimeError("cannot build")

    def plugin_stop(self, timeout: float | None) -> None:
        Stopped.stops.append(self.ident)


def test_a_failed_start_stops_the_plugins_it_had_built(tmp_path: Path) -> None:
    from rigger_mp.journal import JournalStore

    Stopped.stops = []
    path = tmp_path / "j.db"
    holder = JournalStore.open(path)  # the journal is taken: start() fails after the build
    rigger = Rigger({"journal": str(path), "plugins": {"a": {"plugin": "s"}}})
    rigger.register_plugin(Stopped, "s")
    with pytest.raises(RiggerError, match=r"j\.db"):
        rigger.start()
    assert Stopped.stops == ["a"] and rigger.instances == {}
    holder.close()
    rigger.start()  # again: a new instance, stopped once by stop()
    rigger.stop()
    assert Stopped.stops == ["a", "a"]


def test_an_instance_that_cannot_be_built_stops_those_built_before_it() -> None:
    Stopped.stops = []
    config = {"plugins": {"a": {"plugin": "s"}, "b": {"plugin": "s", "fail": True}}}
    rigger = Rigger(config)
    rigger.register_plugin(Stopped, "s")
    with pytest.raises(RiggerError, match=r"instance .b.*cannot build"):
        rigger.start()
    assert Stopped.stops == ["a"]


def test_an_unknown_plugin_further_down_the_config_stops_those_built_before_it() -> None:
    Stopped.stops = []
    rigger = Rigger({"plugins": {"a": {"plugin": "s"}, "b": {"plugin": "no_such_plugin"}}})
    rigger.register_plugin(Stopped, "s")
    with pytest.raises(RiggerError, match="no_such_plugin"):
        rigger.start()
    assert Stopped.stops == ["a"]
