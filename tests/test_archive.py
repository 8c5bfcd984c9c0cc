"""The built-in archive plugin: round trips through tarfile, options, bad directories."""

from __future__ import annotations

import multiprocessing.forkserver
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import PluginError, Rigger
from rigger_mp.core.loading import resolve_plugin
from rigger_mp.plugins.archive import ArchivePlugin
from tests.conftest import child_processes


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver and resource tracker outlive tests: start them first."""
    multiprocessing.forkserver.ensure_running()


def artifacts(root: Path) -> dict[str, bytes]:
    """A directory tree of a few files; returns relative path -> content."""
    files = {
        "log.txt": b"line\n" * 5000,
        "screens/one.png": os.urandom(3000),
        "screens/deep/two.txt": b"two",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def read_back(archive: str, base: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile():
                stream = tar.extractfile(member)
                assert stream is not None
                out[member.name.removeprefix(base + "/")] = stream.read()
    return out


def test_backgrounded_archive_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "test_one"
    files = artifacts(folder)
    before = child_processes()
    cfg: dict[str, Any] = {"workers": 1, "plugins": {"arch": {"plugin": "archive"}}}
    with Rigger(cfg) as rigger:
        assert rigger.stats()["workers"], "the archive hook is backgrounded by default"
        rigger.fire_hook("finish_test", artifact_path=str(folder))
        assert rigger.wait_background(60)
        record = rigger.global_data["archives"][str(folder)]
    assert record["archive"] == str(tmp_path / "test_one.tar.xz")
    assert record["bytes_in"] == sum(len(c) for c in files.values())
    assert 0 < record["bytes_out"] == os.path.getsize(record["archive"])
    assert record["seconds"] >= 0
    assert read_back(record["archive"], "test_one") == files
    assert folder.is_dir()  # originals kept by default
    assert child_processes() == before


def test_gz_level_dest_and_remove_originals_in_foreground(tmp_path: Path) -> None:
    folder = tmp_path / "t2"
    files = artifacts(folder)
    dest = tmp_path / "out"
    cfg: dict[str, Any] = {
        "plugins": {
            "arch": {
                "plugin": "archive",
                "background": False,
                "event": "done",
                "format": "gz",
                "level": 1,
                "dest": str(dest),
                "remove_originals": True,
            }
        }
    }
    with Rigger(cfg) as rigger:
        result = rigger.fire_hook("done", artifact_path=str(folder)).result(10)
    record = result["archives"][str(folder)]
    assert record["archive"] == str(dest / "t2.tar.gz")
    assert read_back(record["archive"], "t2") == files
    assert not folder.exists()
    assert not list(dest.glob("*.part-*"))


def test_missing_and_empty_directories_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    cfg: dict[str, Any] = {"plugins": {"arch": {"plugin": "archive", "background": False}}}
    with Rigger(cfg) as rigger:
        rigger.fire_hook("finish_test", artifact_path=str(missing)).result(10)
        result = rigger.fire_hook("finish_test", artifact_path=str(empty)).result(10)
        rigger.fire_hook("finish_test").result(10)  # no artifact_path at all
    archives = result["archives"]
    assert archives[str(missing)]["error"] == "missing directory"
    assert archives[str(empty)]["error"] == "empty directory"
    assert archives[str(empty)]["archive"] is None
    assert "missing directory" in caplog.text and "no artifact_path" in caplog.text
    assert rigger.stats()["events"]["failed"] == 0


def test_builtin_name_and_bad_options() -> None:
    assert resolve_plugin("archive", "x", {}) is ArchivePlugin
    for bad, match in (({"format": "zip"}, "format"), ({"level": 12}, "level")):
        rigger = Rigger({"plugins": {"a": {"plugin": "archive", "background": False, **bad}}})
        with pytest.raises(PluginError, match=match):
            rigger.start()
