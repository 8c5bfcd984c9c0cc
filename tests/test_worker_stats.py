"""What ``stats()["workers"]`` says of each worker: CPU over a meaningful interval, and
for Dask workers their addresses.

A backgrounded hook burns a known amount of the worker's CPU time (measured with
``time.process_time`` inside the worker), so the figures are asserted against it, not
against a clock.
"""

from __future__ import annotations

import logging
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
from typing import Any

import pytest

from rigger_mp import Rigger

HOG = {"plugin": "tests.pool_plugins:HogPlugin"}
CPU = 1.0  # seconds of CPU each hog burns
TICK = 2 / os.sysconf("SC_CLK_TCK")
"""psutil reads the kernel's CPU accounting, in clock ticks; the hog counts its CPU with
``time.process_time``, which is exact: the two may differ by a tick either way."""


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's helpers serve the whole interpreter: started before any count."""
    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()


def hog_on(rigger: Rigger) -> dict[str, Any]:
    """Run one hog; the stats entry of the worker that ran it."""
    rigger.fire_hook("hog", cpu=CPU)
    assert rigger.wait_background(120)
    pid = rigger.global_data["hog_pids"][-1]
    workers: list[dict[str, Any]] = rigger.stats()["workers"]
    (worker,) = [w for w in workers if w["pid"] == pid]
    return worker


def test_local_worker_cpu_is_measured_from_its_start_and_between_looks() -> None:
    with Rigger({"workers": 1, "plugins": {"h": HOG}}) as rigger:
        first = hog_on(rigger)  # the first look at this worker: measured from its start
        assert first["cpu_percent"] > 0.0
        assert first["cpu_seconds"] >= CPU - TICK
        assert first["address"] is None
        second = hog_on(rigger)  # measured since the first look
        assert second["cpu_percent"] > 0.0
        assert second["cpu_seconds"] >= first["cpu_seconds"] + CPU - TICK
        assert second["tasks_done"] == 2


def test_dask_workers_have_address_memory_tasks_and_cpu() -> None:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    try:
        config = {
            "pool": "dask",
            "dask_scheduler": cluster.scheduler_address,
            "plugins": {"h": HOG},
        }
        with Rigger(config) as rigger:
            workers = rigger.stats()["workers"]
            assert len(workers) == 2
            addresses = set(cluster.scheduler_info["workers"])
            assert {w["address"] for w in workers} == addresses
            assert all(w["rss_bytes"] > 0 for w in workers)
            first = hog_on(rigger)
            assert first["tasks_done"] >= 1
            assert first["cpu_seconds"] >= CPU
            second = hog_on(rigger)
            if second["pid"] == first["pid"]:
                assert second["cpu_seconds"] >= first["cpu_seconds"] + CPU
            assert sum(w["tasks_done"] for w in rigger.stats()["workers"]) == 2
    finally:
        cluster.close()
