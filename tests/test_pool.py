"""The worker pool: backgrounded hooks in other processes, faults, recycling, stopping.

Most tests run under both ``forkserver`` and ``spawn``. Nothing sleeps to wait: tests
wait on ``wait_background``, on FIFOs a hook writes to, or on processes (psutil).
"""

from __future__ import annotations

import json
import logging
import multiprocessing.forkserver
import os
import queue
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from rigger_mp import PluginError, Rigger, RiggerBasePlugin
from rigger_mp.pool.interface import Failure, WorkItem
from rigger_mp.pool.local import STARTUP_FAILURES, LocalPool
from rigger_mp.pool.processes import default_start_method, exit_cause
from tests.conftest import Dispatchers, assert_processes_gone, child_processes

PLUGINS = "tests.pool_plugins"
METHODS = ["forkserver", "spawn"]


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """Start the stdlib's forkserver and resource tracker before any test counts processes.

    They serve the whole interpreter and live until it exits; they are not rigger_mp's.
    """
    multiprocessing.forkserver.ensure_running()


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


def config(method: str, plugins: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"start_method": method, "workers": 2, **settings, "plugins": plugins}


def plugin(name: str, **data: Any) -> dict[str, Any]:
    return {"plugin": f"{PLUGINS}:{name}", **data}


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO a blocking hook writes its pid to, and the one it then blocks on."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    os.mkfifo(f"{path}.never")
    return path


def read_pid(fifo: Path) -> int:
    """Block until a hook has opened the FIFO and written its pid."""
    with open(fifo) as stream:
        return int(stream.readline())


@pytest.fixture
def started(dispatchers: Dispatchers) -> Dispatchers:
    """The shared fixture, each stop bounded: a pool that hangs fails its test, not the run."""
    dispatchers.stop_timeout = 10
    return dispatchers


def run(started: Dispatchers, cfg: dict[str, Any]) -> Rigger:
    return started.start(cfg)


def test_backgrounded_hooks_run_in_workers(method: str, started: Dispatchers) -> None:
    rigger = run(started, config(method, {"p": plugin("PidPlugin")}))
    rigger.register_hook_callback("work", "pre", lambda n: ({"artifact_path": f"/a/{n}"}, None))
    post_saw: list[set[str]] = []
    rigger.register_hook_callback("work", "post", lambda **kw: post_saw.append(set(kw)))
    for n in range(6):
        rigger.fire_hook("work", n=n)
    assert rigger.wait_background(60)
    glob = rigger.global_data
    worker_pids = {w["pid"] for w in rigger.stats()["workers"]}
    assert len(glob["pids"]) == 6
    assert os.getpid() not in glob["pids"]
    assert set(glob["pids"]) <= worker_pids
    # the snapshot was taken after the pre callbacks
    assert sorted(glob["seen"]) == [(n, f"/a/{n}") for n in range(6)]
    # post callbacks never see a backgrounded hook's locals
    assert post_saw and all("bg_local" not in keys for keys in post_saw)
    stats = rigger.stats()
    assert stats["background"] == {
        "queued": 0,
        "running": 0,
        "done": 6,
        "failed": 0,
        "abandoned": 0,
    }
    assert stats["events"]["done"] == 6
    assert sum(w["tasks_done"] for w in stats["workers"]) == 6
    for worker in stats["workers"]:
        assert worker["rss_bytes"] > 0
        assert isinstance(worker["cpu_percent"], float)


def test_instance_background_flag_builds_instances_in_workers(
    method: str, started: Dispatchers
) -> None:
    rigger = run(
        started, config(method, {"i": plugin("InstancePlugin", background=True)}, workers=1)
    )
    rigger.fire_hook("work")
    rigger.fire_hook("work")
    assert rigger.wait_background(60)
    (pid, built_in), (pid2, built_in2) = rigger.global_data["instance_pids"]
    assert pid == built_in == pid2 == built_in2 != os.getpid()  # built once, in the worker


def test_killed_worker_is_replaced_and_its_hook_failed(
    method: str, started: Dispatchers, fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rigger = run(
        started,
        config(method, {"f": plugin("FifoPlugin"), "p": plugin("PidPlugin")}, workers=1),
    )
    rigger.fire_hook("block", fifo=str(fifo))
    victim = read_pid(fifo)
    rigger.fire_hook("work", n=1)  # queued behind the blocked hook
    os.kill(victim, signal.SIGKILL)
    assert rigger.wait_background(60)
    stats = rigger.stats()
    assert stats["background"]["failed"] == 1
    assert stats["background"]["done"] == 1
    (replacement,) = rigger.global_data["pids"]
    assert replacement != victim
    assert [w["pid"] for w in stats["workers"]] == [replacement]
    assert not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie"
    text = caplog.text
    assert "'block' of instance 'f'" in text
    assert f"worker {victim}" in text
    assert "SIGKILL" in text


def test_exit_and_exception_in_worker_are_reported(
    method: str, started: Dispatchers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rigger_mp")
    rigger = run(
        started,
        config(method, {"f": plugin("FifoPlugin"), "p": plugin("PidPlugin")}, workers=1),
    )
    rigger.fire_hook("boom")
    rigger.fire_hook("exit", code=3)
    rigger.fire_hook("work", n=2)
    assert rigger.wait_background(60)
    assert rigger.stats()["background"]["failed"] == 2
    assert rigger.stats()["background"]["done"] == 1
    assert len(rigger.global_data["pids"]) == 1
    text = caplog.text
    assert "ValueError: boom from the worker" in text  # the traceback from the worker
    assert 'in boom\n    raise ValueError("boom from the worker")' in text
    assert "exited with code 3" in text


def test_recycling_by_task_count(method: str, started: Dispatchers) -> None:
    rigger = run(
        started,
        config(method, {"p": plugin("PidPlugin")}, workers=1, max_tasks_per_worker=2),
    )
    for n in range(5):
        rigger.fire_hook("work", n=n)
    assert rigger.wait_background(60)
    pids = rigger.global_data["pids"]
    assert [n for n, _ in rigger.global_data["seen"]] == [0, 1, 2, 3, 4]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert rigger.stats()["background"]["failed"] == 0


def test_recycling_by_memory(method: str, started: Dispatchers) -> None:
    rigger = run(
        started,
        config(method, {"m": plugin("MemoryPlugin")}, workers=1, worker_memory_limit_mb=100),
    )
    for mb in (0, 0, 150, 0):
        rigger.fire_hook("grow", mb=mb)
    assert rigger.wait_background(60)
    pids = rigger.global_data["grow_pids"]
    assert pids[0] == pids[1] == pids[2] != pids[3]  # recycled after the task that grew
    assert rigger.stats()["background"] == {
        "queued": 0,
        "running": 0,
        "done": 4,
        "failed": 0,
        "abandoned": 0,
    }


def test_stop_leaves_no_worker_or_manager(method: str) -> None:
    before = child_processes()
    rigger = Rigger(config(method, {"p": plugin("PidPlugin")})).start()
    ours = child_processes() - before
    workers = {w["pid"] for w in rigger.stats()["workers"]}
    assert len(workers) == 2
    assert len(ours) == 3 and workers < ours  # two workers and the manager
    rigger.fire_hook("work", n=1)
    rigger.stop()
    assert rigger.stats()["background"]["done"] == 1
    assert_processes_gone(ours, timeout=10)


def test_stop_timeout_abandons_and_counts(
    started: Dispatchers, fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = child_processes()
    rigger = Rigger(config(default_start_method(), {"f": plugin("FifoPlugin")})).start()
    rigger.fire_hook("block", fifo=str(fifo))
    read_pid(fifo)
    assert rigger.wait_background(0.2) is False
    assert rigger.stats()["background"]["running"] == 1
    rigger.stop(timeout=0.5)
    assert rigger.stats()["background"]["abandoned"] == 1
    assert "abandoned 1 backgrounded hook" in caplog.text
    assert_processes_gone(child_processes() - before)


def test_fire_hook_in_worker_fires_in_main(method: str, started: Dispatchers) -> None:
    rigger = run(started, config(method, {"j": plugin("FirePlugin")}, workers=1))
    fired: list[tuple[str, int]] = []
    rigger.register_hook_callback(
        "job_fired", "pre", lambda job, from_pid: fired.append((job, from_pid))
    )
    rigger.fire_hook("start_job", job="j1")
    assert rigger.wait_background(60)  # also waits for the event the worker fired
    assert [job for job, _ in fired] == ["j1"]
    assert fired[0][1] != os.getpid()
    assert rigger.stats()["events"]["done"] == 2


def test_unimportable_plugin_class_fails_at_start() -> None:
    class Hidden(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("work", self.work, bg=True)

        def work(self) -> None:
            pass

    rigger = Rigger({"plugins": {"hidden": {"plugin": "hidden"}}})
    rigger.register_plugin(Hidden, "hidden")
    with pytest.raises(PluginError, match=r"instance 'hidden'.*defined inside a function"):
        rigger.start()
    assert not rigger.running

    rigger = Rigger({"plugins": {"lam": plugin("LambdaPlugin")}})
    with pytest.raises(PluginError, match=r"instance 'lam'.*event 'work'.*lambda"):
        rigger.start()


def test_no_pool_without_backgrounded_hooks() -> None:
    before = child_processes()
    with Rigger({"plugins": {"a": {"plugin": "archive", "background": False}}}) as rigger:
        assert child_processes() == before
        assert rigger.stats()["workers"] == []
        assert rigger.wait_background(5)


class Sink:
    """A ResultSink that keeps the failures it is given."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def completed(
        self,
        count: int,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        ids: Sequence[int] = (),
    ) -> None:
        self.failures.extend(failures)

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        raise AssertionError(hook_name)


def test_workers_dying_before_any_work_break_the_pool() -> None:
    pool = LocalPool({}, workers=1)
    ends: queue.SimpleQueue[None] = queue.SimpleQueue()
    handle_end = pool._ended

    def ended(worker: Any) -> None:  # a worker's end is handled: its replacement started
        handle_end(worker)
        ends.put(None)

    pool._ended = ended  # type: ignore[method-assign]
    sink = Sink()
    pool.start(sink)
    try:
        for _ in range(STARTUP_FAILURES):
            [worker] = pool.workers()
            os.kill(worker.pid, signal.SIGKILL)
            ends.get(timeout=60)
        assert pool.workers() == []  # broken: no replacement for the last one
        pool.submit([WorkItem(1, "p", "pack", b"")])
        [failure] = sink.failures
        assert failure.work_id == 1
        assert failure.text == (
            f"the worker pool is broken: {STARTUP_FAILURES} workers in a row ended before "
            "taking any work (last one was killed by signal SIGKILL (9))"
        )
    finally:
        assert pool.stop(abandon=True, timeout=10) == []


def test_helpers() -> None:
    assert default_start_method() == "forkserver"
    assert exit_cause(-9) == "was killed by signal SIGKILL (9)"
    assert exit_cause(3) == "exited with code 3"


MAIN = """
import json, os, sys, threading
import psutil
from rigger_mp import Rigger

if __name__ == "__main__":
    rigger = Rigger({"start_method": sys.argv[1], "workers": 2, "plugins": {
        "f": {"plugin": "tests.pool_plugins:FifoPlugin"}}}).start()
    rigger.fire_hook("block", fifo=sys.argv[2])
    pids = [p.pid for p in psutil.Process().children(recursive=True)]
    print(json.dumps(pids), flush=True)
    threading.Event().wait()
"""


def test_sigterm_of_main_process_leaves_nothing(method: str, tmp_path: Path, fifo: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(MAIN))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    main = subprocess.Popen(
        [sys.executable, str(script), method, str(fifo)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert main.stdout is not None
        busy = read_pid(fifo)  # a worker is running a hook
        descendants = set(json.loads(main.stdout.readline()))
        assert busy in descendants and len(descendants) >= 3
        main.send_signal(signal.SIGTERM)
        assert main.wait(30) == -signal.SIGTERM
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
        if main.stdout is not None:
            main.stdout.close()
    assert_processes_gone(descendants, timeout=15)  # workers, manager, forkserver, tracker


NEVER_STOPPED = """
import json, sys
from rigger_mp import Rigger
rigger = Rigger({
    "start_method": sys.argv[1], "workers": 2,
    "plugins": {"p": {"plugin": "tests.pool_plugins:PidPlugin"}},
})
rigger.register_hook_callback(
    "done", "pre", lambda seen: open(sys.argv[2], "w").write(json.dumps(len(seen))))
rigger.start()
for n in range(50):
    rigger.fire_hook("work", n=n)
rigger.wait_background()
rigger.fire_hook("done")
# no stop(): the interpreter must still exit, after draining
"""


def test_a_pool_rigger_never_stopped_exits_and_drains(method: str, tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", NEVER_STOPPED, method, str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == 50


UNGUARDED = """
from rigger_mp import Rigger
import sys
rigger = Rigger({
    "start_method": sys.argv[1], "workers": 1,
    "plugins": {"p": {"plugin": "tests.pool_plugins:PidPlugin"}},
})
rigger.start()  # no main guard: each new process runs this again
rigger.stop()
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_script_without_main_guard_gets_an_error_that_says_so(
    start_method: str, tmp_path: Path
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, str(script), start_method],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rigger_mp.errors.PluginError:"), proc.stderr
    assert "if __name__ == '__main__':" in last and repr(start_method) in last
