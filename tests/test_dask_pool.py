"""DaskPool beyond the shared contract: its config, its errors, its own LocalCluster.

The contract itself (results, batching, failures, a killed worker, stopping) is in
``test_pool_contract.py``, run against both pools.
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import ConfigError, Rigger, RiggerError
from rigger_mp.core.config import load_config
from rigger_mp.core.rigger import parts_of

PLUGIN = "tests.contract_plugins:CountPlugin"


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's resource tracker (Dask's nannies start one) serves the whole
    interpreter: start it before any test counts processes."""
    multiprocessing.resource_tracker.ensure_running()


def test_config_keys() -> None:
    settings = load_config({"pool": "dask", "dask_scheduler": "tcp://h:8786"})
    assert (settings.pool, settings.dask_scheduler) == ("dask", "tcp://h:8786")
    assert load_config(None).pool == "local"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pool": "ray"}, "pool: expected one of local, dask"),
        ({"dask_scheduler": "h:8786"}, "dask_scheduler: expected a scheduler address"),
        ({"dask_workers": 0}, "dask_workers: expected a positive integer"),
        ({"dask_connect_timeout": 0}, "dask_connect_timeout: expected a positive number"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_config(bad)


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    monkeypatch.delitem(sys.modules, "rigger_mp.pool.dask", raising=False)
    rigger = Rigger({"pool": "dask", "plugins": {"c": {"plugin": PLUGIN}}})
    with pytest.raises(ConfigError, match=r"pip install 'rigger_mp\[dask\]'"):
        rigger.start()
    assert not rigger.running


def test_an_unreachable_scheduler_is_a_clear_error_at_start() -> None:
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rigger = Rigger(
        {
            "pool": "dask",
            "dask_scheduler": f"tcp://127.0.0.1:{port}",
            "dask_connect_timeout": 1,
            "plugins": {"c": {"plugin": PLUGIN}},
        }
    )
    with pytest.raises(
        RiggerError, match=rf"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    ):
        rigger.start()
    assert not rigger.running


@pytest.fixture
def inits(tmp_path: Path) -> Iterator[tuple[Path, queue.Queue[list[str]]]]:
    """A FIFO that ``plugin_initialize`` writes ``ident pid`` to, read into a queue."""
    fifo = tmp_path / "inits"
    os.mkfifo(fifo)
    lines: queue.Queue[list[str]] = queue.Queue()

    def read() -> None:
        while True:
            with open(fifo) as stream:  # again after each writer closes it
                for line in stream:
                    if line.strip() == "END":
                        return
                    lines.put(line.split())

    reader = threading.Thread(target=read, name="test-inits-reader", daemon=True)
    reader.start()
    yield fifo, lines
    with open(fifo, "w") as stream:
        stream.write("END\n")
    reader.join()


def test_own_cluster_builds_once_per_worker_and_again_on_a_replacement(
    inits: tuple[Path, queue.Queue[list[str]]], tmp_path: Path
) -> None:
    pytest.importorskip("distributed")
    fifo, lines = inits
    log = tmp_path / "log"
    plugin: dict[str, Any] = {"plugin": PLUGIN, "inits": str(fifo), "log": str(log)}
    rigger = Rigger({"pool": "dask", "dask_workers": 2, "plugins": {"c": plugin}}).start()
    try:
        built = [lines.get(timeout=60) for _ in range(3)]  # the main process and 2 workers
        pids = {int(pid) for _, pid in built} - {os.getpid()}
        background = parts_of(rigger).background
        assert background is not None
        pool: Any = background.pool
        workers = pool.workers()
        assert {w.pid for w in workers} == pids and len(pids) == 2
        assert all(w.address.startswith("tcp://127.0.0.1:") for w in workers)
        assert all(w.rss_bytes > 0 for w in workers)
        assert pool.cluster_seconds > 0
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)  # idle: nothing fails; its nanny starts another
        ident, pid = lines.get(timeout=60)
        assert ident == "c" and int(pid) not in pids | {os.getpid()}
        for _ in range(20):
            rigger.fire_hook("work")
        assert rigger.wait_background(60)
        assert rigger.stats()["background"]["done"] == 20
        assert lines.empty()  # nothing was built twice
    finally:
        rigger.stop(timeout=30)


def test_demo_on_a_dask_local_cluster(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from tests.test_cli import rigger_mp

    done = rigger_mp(
        "demo",
        "--tests",
        "4",
        "--workers",
        "2",
        "--pool",
        "dask",
        "--dir",
        str(tmp_path),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 dask pool workers" in done.stderr
    assert "archives: 4 made" in done.stdout
    assert len(list((tmp_path / "artifacts").rglob("*.tar.zst"))) == 4  # the default format


def test_serve_with_pool_dask(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from tests.test_cli import Served

    log = tmp_path / "log"
    config = tmp_path / "rigger.yaml"
    config.write_text(
        f"pool: dask\ndask_workers: 2\nplugins:\n  c:\n    plugin: {PLUGIN}\n    log: {log}\n"
    )
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        for _ in range(10):
            assert served.cmd("fire", "work").returncode == 0
        assert served.cmd("terminate").returncode == 0
        status, out, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    assert "background jobs: 10 done, 0 failed" in out
    pids = {int(pid) for _, pid in (line.split() for line in log.read_text().splitlines())}
    assert len(pids) >= 1 and served.proc.pid not in pids
