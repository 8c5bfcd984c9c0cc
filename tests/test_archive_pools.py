"""The archive plugin on both pools: a directory that is not there where the hook runs fails.

With ``pool: dask`` a hook may run on another host, which sees the artifacts only on a
shared filesystem. A directory missing there must be a failure the main process logs,
counts and keeps (naming the path, the worker and the shared filesystem), not a silent
skip. The pools and the cluster are those of the contract suite.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import Rigger
from rigger_mp.plugins.archive import totals
from tests import test_pool_contract as contract
from tests.conftest import Dispatchers
from tests.test_pool_contract import PoolConfig, pool_of, run

# The contract suite's fixtures: its pools, its module-scoped cluster, its riggers.
_multiprocessing_helpers = contract._multiprocessing_helpers
pool_name = contract.pool_name
dask_cluster = contract.dask_cluster
pool_config = contract.pool_config
riggers = contract.riggers


def archiver(root: Path) -> dict[str, Any]:
    """One backgrounded archive instance on event ``done``."""
    return {"arch": {"plugin": "archive", "event": "done", "root": str(root)}}


def worker_names(pool: str, rigger: Rigger) -> list[str]:
    """How a failure names each worker: its Dask address, or its pid."""
    if pool == "dask":
        return [f"Dask worker {w.address}" for w in pool_of(rigger).workers()]
    return [f"worker {w['pid']}" for w in rigger.stats()["workers"]]


def test_a_directory_missing_on_the_worker_fails_clearly(
    tmp_path: Path,
    pool_name: str,
    pool_config: PoolConfig,
    riggers: Dispatchers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = tmp_path / "never_here"
    made = tmp_path / "made"
    (made / "log.txt").parent.mkdir()
    (made / "log.txt").write_text("ok\n")
    rigger = run(riggers, pool_config(), archiver(tmp_path))
    rigger.fire_hook("done", artifact_path=str(gone))
    rigger.fire_hook("done", artifact_path=str(made))  # the pool still packs the next one
    assert rigger.wait_background(60)
    stats = rigger.stats()
    assert stats["background"]["failed"] == 1 and stats["background"]["done"] == 1
    [failure] = [f for f in stats["recent_failures"] if str(gone) in f["traceback"]]
    text = failure["traceback"]
    assert failure["error"].startswith("BackgroundError: backgrounded hook 'done'")
    assert "is not there on host" in failure["error"]  # the worker's exception, not its stack
    assert f"artifact directory {str(gone)!r} is not there on host" in text
    assert "must be on a filesystem shared with the Dask workers" in text
    assert any(name in text for name in worker_names(pool_name, rigger)), text
    assert "is not there on host" in caplog.text  # the dispatcher's failure path logged it
    assert (tmp_path / "made.tar.zst").is_file()
    assert not (tmp_path / "never_here.tar.zst").exists()
    assert totals(rigger.global_data)["archives"] == 1


def test_a_directory_removed_before_the_hook_runs_fails(
    tmp_path: Path, pool_config: PoolConfig, riggers: Dispatchers
) -> None:
    """It exists where the event is fired, not where (and when) the worker looks."""
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "log.txt").write_text("ok\n")

    def remove(artifact_path: str) -> None:  # runs before the backgrounded hooks start
        shutil.rmtree(artifact_path)

    rigger = run(riggers, pool_config(), archiver(tmp_path))
    rigger.register_hook_callback("done", "pre", remove, name="remove")
    assert folder.is_dir()
    rigger.fire_hook("done", artifact_path=str(folder)).result(30)
    assert rigger.wait_background(60)
    assert rigger.stats()["background"]["failed"] == 1
    texts = [f["traceback"] for f in rigger.stats()["recent_failures"]]
    assert any(f"{str(folder)!r} is not there on host" in t for t in texts), texts
    assert not (tmp_path / "t.tar.zst").exists()


def test_a_foreground_archiver_raises_to_the_waiter(tmp_path: Path) -> None:
    cfg = {"plugins": {"arch": {**archiver(tmp_path)["arch"], "background": False}}}
    with Rigger(cfg) as rigger:
        task = rigger.fire_hook("done", artifact_path=str(tmp_path / "absent"))
        with pytest.raises(Exception, match="shared with the Dask workers") as info:
            task.result(30)
        assert str(tmp_path / "absent") in str(info.value)
        assert rigger.stats()["events"]["failed"] == 1
