"""The built-in archive plugin: formats, streaming, containment, modes, bounded records."""

from __future__ import annotations

import json
import multiprocessing.forkserver
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from rigger_mp import ConfigError, PluginError, Rigger
from rigger_mp.core.loading import resolve_plugin
from rigger_mp.plugins import archive as archive_module
from rigger_mp.plugins.archive import FORMATS, ArchivePlugin, open_archive, totals
from rigger_mp.plugins.artifacts import install
from tests.conftest import child_processes


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver and resource tracker outlive tests: start them first."""
    multiprocessing.forkserver.ensure_running()


@pytest.fixture
def umask() -> Iterator[None]:
    """A known umask (022) for the test, the previous one restored after it."""
    old = os.umask(0o022)
    yield
    os.umask(old)


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


def read_back(archive: str | Path, base: str) -> dict[str, bytes]:
    """Every regular file of ``archive``, read with the library that wrote it."""
    out: dict[str, bytes] = {}
    with open_archive(str(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                stream = tar.extractfile(member)
                assert stream is not None
                out[member.name.removeprefix(base + "/")] = stream.read()
    return out


def foreground(root: Path, **options: Any) -> dict[str, Any]:
    """A config with one foreground archive instance on event ``done``."""
    spec = {"plugin": "archive", "background": False, "event": "done", "root": str(root)}
    return {"plugins": {"arch": {**spec, **options}}}


def test_backgrounded_zst_is_the_default_and_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "test_one"
    files = artifacts(folder)
    before = child_processes()
    cfg: dict[str, Any] = {"workers": 1, "plugins": {"arch": {"plugin": "archive"}}}
    rigger = Rigger(cfg)
    install(rigger, tmp_path)
    with rigger:
        assert rigger.stats()["workers"], "the archive hook is backgrounded by default"
        rigger.fire_hook("finish_test", test_name="t", artifact_path=str(folder))
        assert rigger.wait_background(60)
        made = totals(rigger.global_data)
    archive = tmp_path / "test_one.tar.zst"
    assert made["archives"] == 1 and made["errors"] == 0
    assert made["bytes_in"] == sum(len(c) for c in files.values())
    assert 0 < made["bytes_out"] == archive.stat().st_size
    assert made["seconds"] >= 0
    assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a Zstandard frame
    assert read_back(archive, "test_one") == files
    assert folder.is_dir()  # originals kept by default
    assert child_processes() == before


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_round_trips_with_dest_and_remove_originals(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "root"
    folder = root / "t2"
    files = artifacts(folder)
    dest = tmp_path / "out"
    cfg = foreground(root, format=fmt, level=FORMATS[fmt].low, dest=str(dest))
    cfg["plugins"]["arch"]["remove_originals"] = True
    with Rigger(cfg) as rigger:
        rigger.fire_hook("done", artifact_path=str(folder)).result(10)
    archive = dest / f"t2{FORMATS[fmt].suffix}"
    assert read_back(archive, "t2") == files
    assert not folder.exists()
    assert not list(dest.glob("*.part-*"))


def test_members_keep_whole_second_times_and_need_no_extended_header(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "t3"
    artifacts(folder)
    stamp = 1_700_000_000.75
    for path in (folder, *folder.rglob("*")):
        os.utime(path, (stamp, stamp))
    with Rigger(foreground(root)) as rigger:
        rigger.fire_hook("done", artifact_path=str(folder)).result(10)
    with open_archive(str(root / "t3.tar.zst")) as tar:
        members = tar.getmembers()
    assert len(members) == 6  # the directory, its two subdirectories, three files
    assert {m.mtime for m in members} == {1_700_000_000}
    assert all(m.pax_headers == {} for m in members)


@pytest.mark.parametrize(("fmt", "low", "high"), [("zst", 1, 22), ("xz", 0, 9), ("gz", 0, 9)])
def test_each_format_checks_its_own_level_range(fmt: str, low: int, high: int) -> None:
    for level in (low, high):
        assert ArchivePlugin("a", {"format": fmt, "level": level}, None).level == level
    bad: tuple[object, ...] = (low - 1, high + 1, True, "3")
    for wrong in bad:
        with pytest.raises(PluginError, match=f"from {low} to {high} for format {fmt}"):
            ArchivePlugin("a", {"format": fmt, "level": wrong}, None)
    assert ArchivePlugin("a", {"format": fmt}, None).level == FORMATS[fmt].default
    assert ArchivePlugin("a", {}, None).format == "zst"
    assert ArchivePlugin("a", {}, None).level == 3


def test_an_empty_directory_is_recorded_and_a_missing_one_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    with Rigger(foreground(tmp_path)) as rigger:
        rigger.fire_hook("done", artifact_path=str(empty)).result(10)
        rigger.fire_hook("done").result(10)  # no artifact_path at all
        with pytest.raises(PluginError) as info:
            rigger.fire_hook("done", artifact_path=str(missing)).result(10)
        rigger.fire_hook("done", artifact_path=str(empty)).result(10)  # sends the record
        made = totals(rigger.global_data)
        failed = rigger.stats()["events"]["failed"]
    message = str(info.value)
    assert repr(str(missing)) in message and "is not there on host" in message
    assert "shared with the Dask workers" in message
    assert made["archives"] == 0 and made["errors"] == 3
    assert made["last_errors"] == [
        {"path": str(empty), "error": "empty directory"},
        {"path": str(missing), "error": "missing directory"},
        {"path": str(empty), "error": "empty directory"},
    ]
    assert "empty directory" in caplog.text and "no artifact_path" in caplog.text
    assert failed == 1
    assert not list(tmp_path.glob("*.tar.*")) and not missing.exists()


def test_builtin_name_and_bad_options() -> None:
    assert resolve_plugin("archive", "x", {}) is ArchivePlugin
    for bad, match in (
        ({"format": "zip"}, "format"),
        ({"level": 23}, "level"),
        ({"root": 3}, "root"),
        ({"keep_errors": -1}, "keep_errors"),
    ):
        rigger = Rigger({"plugins": {"a": {"plugin": "archive", "background": False, **bad}}})
        # a wrong type (root: 3) is a ConfigError from the declared keys; a bad value
        # of the right type is the plugin's own PluginError
        with pytest.raises((PluginError, ConfigError), match=match):
            rigger.start()


# --------------------------------------------------------------------------- streaming


class Failing:
    """A compressor file object that fails on its third write."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes == 3:
            raise OSError("disk full (test)")
        return self.raw.write(data)

    def tell(self) -> int:
        return 0

    def __enter__(self) -> Failing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_failed_archive_never_takes_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "t"
    (folder / "big.log").parent.mkdir()
    (folder / "big.log").write_bytes(os.urandom(3 << 20))
    final = tmp_path / "t.tar.zst"
    final.write_bytes(b"the previous archive")
    monkeypatch.setattr(ArchivePlugin, "_compressor", lambda self, raw, base: Failing(raw))
    rigger = Rigger(foreground(tmp_path, remove_originals=True))
    with rigger, pytest.raises(OSError, match="disk full"):
        rigger.fire_hook("done", artifact_path=str(folder)).result(10)
    assert final.read_bytes() == b"the previous archive"
    assert not list(tmp_path.glob("*.part-*"))
    assert (folder / "big.log").stat().st_size == 3 << 20  # not removed either


_PACK = textwrap.dedent(
    """
    import resource, sys
    from rigger_mp.plugins.archive import ArchivePlugin
    root, folder, fmt = sys.argv[1:]
    ArchivePlugin("a", {"root": root, "format": fmt}, None).archive(folder)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """
)


def _peak_rss_packing(root: Path, megabytes: int, fmt: str) -> int:
    """Peak RSS, in bytes, of a fresh process packing one file of ``megabytes`` MB."""
    folder = root / f"d{megabytes}"
    folder.mkdir()
    with open(folder / "data.bin", "wb") as stream:
        stream.truncate(megabytes << 20)  # sparse: reads back as zeros, costs no disk
    done = subprocess.run(
        [sys.executable, "-c", _PACK, str(root), str(folder), fmt],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    assert (root / f"d{megabytes}{FORMATS[fmt].suffix}").stat().st_size > 0
    return int(done.stdout)


@pytest.mark.parametrize("fmt", ["zst", "gz"])
def test_memory_stays_flat_whatever_the_size(tmp_path: Path, fmt: str) -> None:
    small = _peak_rss_packing(tmp_path, 1, fmt)
    large = _peak_rss_packing(tmp_path, 400, fmt)
    assert large - small < 32 << 20, (small, large)


# --------------------------------------------------------------------------- containment


def test_a_private_directory_outside_the_root_is_refused_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("key")
    with Rigger(foreground(root, remove_originals=True)) as rigger:
        with pytest.raises(PluginError, match="outside the artifacts root"):
            rigger.fire_hook("done", artifact_path=str(private)).result(10)
        with pytest.raises(PluginError, match="outside the artifacts root"):
            rigger.fire_hook("done", artifact_path="../private").result(10)
        assert rigger.stats()["events"]["failed"] == 2
    assert (private / "secret").read_text() == "key"
    assert not list(tmp_path.rglob("*.tar.*"))
    assert "refused" in caplog.text


def test_a_symlink_inside_the_root_to_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    artifacts(outside)
    (root / "link").symlink_to(outside, target_is_directory=True)
    rigger = Rigger(foreground(root, remove_originals=True))
    with rigger, pytest.raises(PluginError, match="outside the artifacts root"):
        rigger.fire_hook("done", artifact_path=str(root / "link")).result(10)
    assert (outside / "log.txt").exists()
    assert not list(tmp_path.rglob("*.tar.*"))


def test_the_root_itself_and_dot_are_refused_never_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    artifacts(root / "sub")
    cwd = tmp_path / "cwd"
    artifacts(cwd / "sub")
    monkeypatch.chdir(cwd)
    with Rigger(foreground(root, remove_originals=True)) as rigger:
        for path in (".", str(root), "sub/.."):
            with pytest.raises(PluginError, match="is the artifacts root itself"):
                rigger.fire_hook("done", artifact_path=path).result(10)
        rigger.fire_hook("done", artifact_path="sub").result(10)  # root/sub, not cwd/sub
    assert (root / "sub.tar.zst").exists() and not (root / "sub").exists()
    assert (cwd / "sub" / "log.txt").exists() and not (cwd / "sub.tar.zst").exists()


def test_without_a_root_nothing_is_packed_whatever_the_event_says(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    artifacts(folder)
    cfg: dict[str, Any] = {"plugins": {"a": {"plugin": "archive", "background": False}}}
    rigger = Rigger(cfg)
    with rigger, pytest.raises(PluginError, match="no artifacts root"):
        # A plain string from an event is not the dispatcher's root.
        rigger.fire_hook(
            "artifacts_ready", artifact_path=str(folder), artifacts_root=str(tmp_path)
        ).result(10)
    assert not list(tmp_path.glob("*.tar.*"))


def test_a_backgrounded_refusal_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    artifacts(outside)
    cfg: dict[str, Any] = {
        "workers": 1,
        "plugins": {"a": {"plugin": "archive", "event": "done", "root": str(root)}},
    }
    with Rigger(cfg) as rigger:
        rigger.fire_hook("done", artifact_path=str(outside))
        assert rigger.wait_background(60)
        assert rigger.stats()["background"]["failed"] == 1
    assert "outside the artifacts root" in caplog.text
    assert (outside / "log.txt").exists()


# --------------------------------------------------------------------------- modes, records


@pytest.mark.parametrize(("dir_mode", "archive_mode"), [(0o700, 0o600), (0o750, 0o640)])
def test_an_archive_is_no_more_readable_than_its_directory(
    tmp_path: Path, umask: None, dir_mode: int, archive_mode: int
) -> None:
    folder = tmp_path / "t"
    artifacts(folder)
    folder.chmod(dir_mode)
    with Rigger(foreground(tmp_path)) as rigger:
        rigger.fire_hook("done", artifact_path=str(folder)).result(10)
    assert (tmp_path / "t.tar.zst").stat().st_mode & 0o777 == archive_mode


def test_the_global_record_stays_bounded_after_many_events(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    artifacts(folder)
    sizes = []
    with Rigger(foreground(tmp_path, keep_errors=5)) as rigger:
        for n in range(300):
            path = folder if n % 3 == 0 else tmp_path / f"empty-{n:03d}"
            path.mkdir(exist_ok=True)
            rigger.fire_hook("done", artifact_path=str(path)).result(10)
            if n in (29, 299):
                sizes.append(len(json.dumps(rigger.global_data)))
        made = totals(rigger.global_data)
    assert sizes[1] <= sizes[0] + 64, sizes  # the counters' digits, nothing per event
    assert made["archives"] == 100 and made["errors"] == 200
    assert [e["path"] for e in made["last_errors"]] == [
        str(tmp_path / f"empty-{n:03d}") for n in (293, 295, 296, 298, 299)
    ]
    assert len(rigger.global_data["archives"]) == 1  # one entry: the main process's


def test_the_zstd_module_is_the_stdlib_api() -> None:
    """On 3.14+ the standard library's module, before it the backport of the same API."""
    expected = "compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd"
    assert archive_module.zstd_module() == expected
