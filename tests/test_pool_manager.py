"""The local pool outlives its manager process: a dead manager is noticed and the pool rebuilt.

A real ``Manager()`` process is SIGKILLed (alone, or followed by every worker) while a
worker runs a hook that blocks and more hooks wait in the queues that lived in the
manager. Nothing sleeps: the tests wait on FIFOs, on ``wait_background`` and on
processes (psutil).
"""

from __future__ import annotations

import logging
import multiprocessing.forkserver
import os
import signal
import threading
from pathlib import Path

import psutil
import pytest

from rigger_mp import Rigger
from tests.conftest import assert_processes_gone, child_processes

PLUGINS = "tests.pool_plugins"


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver serves the whole interpreter: started before any count."""
    multiprocessing.forkserver.ensure_running()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO a blocking hook writes its pid to, and the one it then blocks on."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    os.mkfifo(f"{path}.never")
    return path


def read_pid(fifo: Path) -> int:
    with open(fifo) as stream:
        return int(stream.readline())


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("kill_workers", [False, True], ids=["manager", "manager-then-workers"])
def test_a_killed_manager_is_replaced_and_the_queued_hooks_run(
    kill_workers: bool, fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "rigger_mp")
    before = child_processes()
    rigger = Rigger(
        {
            "workers": 1,
            "plugins": {
                "f": {"plugin": f"{PLUGINS}:FifoPlugin"},
                "p": {"plugin": f"{PLUGINS}:PidPlugin"},
            },
        }
    ).start()
    try:
        ours = child_processes() - before
        workers = {w["pid"] for w in rigger.stats()["workers"]}
        (manager,) = ours - workers
        rigger.fire_hook("block", fifo=str(fifo))
        busy = read_pid(fifo)  # the worker runs a hook that never returns
        for n in range(3):  # queued: in the pool, and in the worker's manager queue
            rigger.fire_hook("work", n=n)
        os.kill(manager, signal.SIGKILL)
        if kill_workers:
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
        assert rigger.wait_background(60)
        stats = rigger.stats()
        assert stats["background"] == {
            "queued": 0,
            "running": 0,
            "done": 3,
            "failed": 1,
            "abandoned": 0,
        }
        assert sorted(n for n, _ in rigger.global_data["seen"]) == [0, 1, 2]
        fresh = {w["pid"] for w in stats["workers"]}
        assert len(fresh) == 1 and not fresh & workers
        assert set(rigger.global_data["pids"]) == fresh  # the queued hooks ran on the new one
        assert gone(manager) and gone(busy)
        text = caplog.text
        assert f"manager process {manager} died" in text
        assert "backgrounded hook 'block' of instance 'f' failed" in text
        assert "while running this hook" in text
        # backgrounded hooks run again, on the new manager's queues
        for n in range(3, 6):
            rigger.fire_hook("work", n=n)
        assert rigger.wait_background(60)
        assert rigger.stats()["background"]["done"] == 6
        now = child_processes() - before
    finally:
        rigger.stop(timeout=30)
    # stop() waited on no hook: nothing was left for it to abandon, and every process,
    # the new manager and worker among them, has ended
    assert rigger.stats()["background"]["abandoned"] == 0
    assert_processes_gone(now | ours)


def test_stop_right_after_the_manager_and_workers_die_waits_on_nothing(fifo: Path) -> None:
    """stop() may begin while the pool is noticing the deaths or rebuilding: with no
    timeout it still returns, and every hook is counted (none queued, none running)."""
    before = child_processes()
    rigger = Rigger(
        {
            "workers": 2,
            "plugins": {
                "f": {"plugin": f"{PLUGINS}:FifoPlugin"},
                "p": {"plugin": f"{PLUGINS}:PidPlugin"},
            },
        }
    ).start()
    ours = child_processes() - before
    workers = {w["pid"] for w in rigger.stats()["workers"]}
    (manager,) = ours - workers
    rigger.fire_hook("block", fifo=str(fifo))
    read_pid(fifo)
    for n in range(20):
        rigger.fire_hook("work", n=n)
    os.kill(manager, signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    stopper = threading.Thread(target=rigger.stop)  # no timeout
    stopper.start()
    stopper.join(120)
    if stopper.is_alive():
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
        stopper.join()
        pytest.fail("stop() waited on hooks no process could run")
    background = rigger.stats()["background"]
    assert background["queued"] == background["running"] == 0
    assert background["done"] + background["failed"] + background["abandoned"] == 21
    assert background["failed"] >= 1  # the blocked hook, whose worker was killed
    assert_processes_gone(child_processes() - before | ours)


def test_every_worker_killed_at_once_is_replaced_and_the_queued_hooks_run(
    tmp_path: Path, fifo: Path
) -> None:
    """The manager lives: each dead worker is replaced; the hooks they ran fail, the
    queued ones run on the replacements."""
    before = child_processes()
    rigger = Rigger(
        {
            "workers": 2,
            "plugins": {
                "f": {"plugin": f"{PLUGINS}:FifoPlugin"},
                "p": {"plugin": f"{PLUGINS}:PidPlugin"},
            },
        }
    ).start()
    try:
        workers = {w["pid"] for w in rigger.stats()["workers"]}
        fifos = [fifo, tmp_path / "fifo2"]  # one each: two writers could meet one reader
        os.mkfifo(fifos[1])
        os.mkfifo(f"{fifos[1]}.never")
        for path in fifos:
            rigger.fire_hook("block", fifo=str(path))
        assert {read_pid(path) for path in fifos} == workers  # both busy
        for n in range(4):
            rigger.fire_hook("work", n=n)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert rigger.wait_background(60)
        background = rigger.stats()["background"]
        assert (background["done"], background["failed"]) == (4, 2)
        assert not set(rigger.global_data["pids"]) & workers
        assert len(rigger.stats()["workers"]) == 2
    finally:
        rigger.stop(timeout=30)
    assert rigger.stats()["background"]["abandoned"] == 0
    assert_processes_gone(child_processes() - before)
