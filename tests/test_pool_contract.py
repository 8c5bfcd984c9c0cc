"""The WorkerPool contract, run against every pool: LocalPool and DaskPool.

Each test gets a config fragment for one pool (``pool_config``): the local pool with 2
workers, or a Dask pool on a 2-worker ``LocalCluster(processes=True)`` started by these
tests (one per module; the kill test starts its own, as a nanny replaces the worker it
kills). The Dask cases skip when the ``dask`` extra is not installed. Nothing sleeps:
tests wait on ``wait_background``, on FIFOs a hook writes to, or on processes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing.forkserver
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import Rigger
from rigger_mp.core.rigger import parts_of
from tests.conftest import Dispatchers

POOLS = ["local", "dask"]
PLUGINS = "tests.contract_plugins"
PoolConfig = Callable[[], dict[str, Any]]


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver serves the whole interpreter: start it before any test
    counts processes (it is not rigger_mp's)."""
    multiprocessing.forkserver.ensure_running()


def start_cluster(workers: int = 2) -> Any:
    """A LocalCluster of worker processes, 1 thread each, on this host only."""
    distributed = pytest.importorskip("distributed")
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # any free port: never a clash on 8787
        silence_logs=logging.ERROR,
    )


@pytest.fixture(scope="module", params=POOLS)
def pool_name(request: pytest.FixtureRequest) -> str:
    """The pool under test (module scope: the tests of one pool run together)."""
    name: str = request.param
    if name == "dask":
        pytest.importorskip("distributed")
    return name


@pytest.fixture(scope="module")
def dask_cluster(pool_name: str) -> Iterator[str | None]:
    """The scheduler address of the module's cluster (None for the local pool)."""
    if pool_name != "dask":
        yield None
        return
    cluster = start_cluster()
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


@pytest.fixture
def pool_config(dask_cluster: str | None) -> PoolConfig:
    """The pool's part of a config, on the module's shared cluster for Dask."""
    if dask_cluster is None:
        return lambda: {"workers": 2}
    return lambda: {"pool": "dask", "dask_scheduler": dask_cluster}


def plugin(name: str, **data: Any) -> dict[str, Any]:
    return {"plugin": f"{PLUGINS}:{name}", **data}


@pytest.fixture
def riggers(dispatchers: Dispatchers) -> Dispatchers:
    """The shared fixture, each stop bounded: a pool that hangs fails its test, not the run."""
    dispatchers.stop_timeout = 10
    return dispatchers


def run(riggers: Dispatchers, base: dict[str, Any], plugins: dict[str, Any]) -> Rigger:
    return riggers.start({**base, "plugins": plugins})


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """The FIFO a blocking hook writes its pid to; ``release`` ends the hook."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    os.mkfifo(f"{path}.never")
    yield path
    release(path)


def release(fifo: Path) -> None:
    """Let a blocked hook return (if one still waits: a Dask worker outlives the test)."""
    with contextlib.suppress(OSError):
        fd = os.open(f"{fifo}.never", os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"x")
        os.close(fd)


def read_pid(fifo: Path) -> int:
    with open(fifo) as stream:
        return int(stream.readline())


def pool_of(rigger: Rigger) -> Any:
    background = parts_of(rigger).background
    assert background is not None
    return background.pool


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- the contract


def test_results_and_global_updates_come_back(
    pool_config: PoolConfig, riggers: Dispatchers, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    rigger = run(riggers, pool_config(), {"c": plugin("CountPlugin", log=str(log))})
    for _ in range(6):
        rigger.fire_hook("work")
    assert rigger.wait_background(60)
    assert rigger.global_data["ran"] == ["c"] * 6
    stats = rigger.stats()
    assert stats["background"] == {
        "queued": 0,
        "running": 0,
        "done": 6,
        "failed": 0,
        "abandoned": 0,
    }
    worker_pids = {w["pid"] for w in stats["workers"]}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert {int(pid) for _, pid in lines(log)} <= worker_pids
    assert sum(w["tasks_done"] for w in stats["workers"]) == 6


def test_cheap_items_are_batched_heavy_ones_travel_alone(
    pool_config: PoolConfig, riggers: Dispatchers
) -> None:
    rigger = run(riggers, pool_config(), {"c": plugin("CountPlugin")})
    pool = pool_of(rigger)
    for _ in range(4):
        rigger.fire_hook("spin", ms=120)
    assert rigger.wait_background(60)
    assert pool._cutter.count == 4  # heavier than a batch's worth: one item per batch
    for _ in range(3000):
        rigger.fire_hook("noop")
    assert rigger.wait_background(60)
    assert rigger.stats()["background"]["done"] == 3004
    assert pool._cutter.count - 4 <= 3000 / 20  # tens of items per batch, not one


def test_a_failed_hook_is_reported_with_worker_and_traceback(
    pool_name: str,
    pool_config: PoolConfig,
    riggers: Dispatchers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rigger = run(riggers, pool_config(), {"f": {"plugin": "tests.pool_plugins:FifoPlugin"}})
    rigger.fire_hook("boom")
    assert rigger.wait_background(60)
    assert rigger.stats()["background"]["failed"] == 1
    text = caplog.text
    assert "backgrounded hook 'boom' of instance 'f' failed (worker " in text
    assert 'raise ValueError("boom from the worker")' in text
    if pool_name == "dask":
        addresses = {w.address for w in pool_of(rigger).workers()}
        assert any(f"Dask worker {address}" in text for address in addresses), text
    else:
        assert any(f"worker {w['pid']}" in text for w in rigger.stats()["workers"]), text


def test_fire_hook_in_a_worker_fires_in_the_main_process(
    pool_config: PoolConfig, riggers: Dispatchers
) -> None:
    rigger = run(riggers, pool_config(), {"j": {"plugin": "tests.pool_plugins:FirePlugin"}})
    fired: list[tuple[str, int]] = []
    rigger.register_hook_callback(
        "job_fired", "pre", lambda job, from_pid: fired.append((job, from_pid))
    )
    rigger.fire_hook("start_job", job="j1")
    assert rigger.wait_background(60)  # waits for the event the worker fired, too
    assert [job for job, _ in fired] == ["j1"]
    assert fired[0][1] != os.getpid()
    assert rigger.stats()["events"]["done"] == 2


def test_each_worker_builds_each_instance_once(
    pool_config: PoolConfig, riggers: Dispatchers, tmp_path: Path
) -> None:
    inits, log = tmp_path / "inits", tmp_path / "log"
    plugins = {ident: plugin("CountPlugin", inits=str(inits), log=str(log)) for ident in ("a", "b")}
    rigger = run(riggers, pool_config(), plugins)
    for _ in range(40):
        rigger.fire_hook("work")
    assert rigger.wait_background(60)
    built = collections.Counter((ident, int(pid)) for ident, pid in lines(inits))
    ran = {(ident, int(pid)) for ident, pid in lines(log)}
    assert set(built.values()) == {1}  # never twice in a process (the main one included)
    assert ran <= set(built)  # every worker that ran a hook built its instance
    assert os.getpid() not in {pid for _, pid in ran}


def test_stop_timeout_abandons_what_a_worker_runs(
    pool_config: PoolConfig, riggers: Dispatchers, fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rigger = Rigger({**pool_config(), "plugins": {"f": plugin("BlockPlugin", fifo=str(fifo))}})
    rigger.start()
    rigger.fire_hook("work")
    read_pid(fifo)
    assert rigger.wait_background(0.2) is False
    assert rigger.stats()["background"]["running"] == 1
    rigger.stop(timeout=0.5)
    assert rigger.stats()["background"]["abandoned"] == 1
    assert "abandoned 1 backgrounded hook" in caplog.text


@pytest.fixture
def kill_config(pool_name: str) -> Iterator[dict[str, Any]]:
    """The pool for the kill test: for Dask, a cluster of its own (its nanny replaces
    the worker the test kills, which would change the shared one)."""
    if pool_name == "local":
        yield {"workers": 2}
        return
    cluster = start_cluster()
    try:
        yield {"pool": "dask", "dask_scheduler": str(cluster.scheduler_address)}
    finally:
        cluster.close()


def test_worker_killed_mid_batch(
    pool_name: str,
    kill_config: dict[str, Any],
    riggers: Dispatchers,
    fifo: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The running item fails with the cause, finished items are not run again, the
    items not started run on another worker (counted at the hook, in a file)."""
    log = tmp_path / "log"
    counters = [f"c{n}" for n in range(1, 8)]
    plugins = {ident: plugin("CountPlugin", log=str(log)) for ident in counters[:2]}
    plugins["f"] = plugin("BlockPlugin", fifo=str(fifo))
    plugins.update({ident: plugin("CountPlugin", log=str(log)) for ident in counters[2:]})
    rigger = run(riggers, kill_config, plugins)
    for _ in range(300):  # measured cost: cheap, so the next event's 8 items go in 2 batches
        rigger.fire_hook("warm")
    assert rigger.wait_background(60)
    batches = pool_of(rigger)._cutter.count
    rigger.fire_hook("work")  # c1 c2 f c3 | c4 c5 c6 c7
    victim = read_pid(fifo)
    os.kill(victim, signal.SIGKILL)
    assert rigger.wait_background(60)
    assert pool_of(rigger)._cutter.count >= batches + 2
    ran = collections.Counter(ident for ident, _ in lines(log))
    assert ran == dict.fromkeys(counters, 1)  # each once: none lost, none run again
    where = {ident: int(pid) for ident, pid in lines(log)}
    assert where["c1"] == where["c2"] == victim  # finished before the kill, in its batch
    assert where["c3"] != victim  # not started: run elsewhere
    background = rigger.stats()["background"]
    assert background["done"] + background["failed"] == 8 + 300 * 8
    text = caplog.text
    assert "backgrounded hook 'work' of instance 'f' failed" in text
    if pool_name == "dask":
        # each result is sent as its hook returns: c1 and c2 are done, only f failed
        assert background["failed"] == 1
        assert "Dask worker tcp://127.0.0.1:" in text and f"(pid {victim}) went away" in text
    else:
        # LocalPool sends results every 5 ms of work: c1's and c2's were still held
        # by the worker, so they fail as "ran, but ... before sending its result"
        assert background["failed"] in (1, 2, 3)
        assert f"worker {victim}" in text and "SIGKILL (9) while running this hook" in text
