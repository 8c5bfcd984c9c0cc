"""Plugin discovery: built-ins and other packages' plugins through the entry point group.

A "package" here is a directory put on ``sys.path`` holding a module and a
``*.dist-info`` with ``entry_points.txt``: what ``pip install`` leaves behind, made in
``tmp_path`` without a network or a build, and gone with the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigger_mp import PluginError, Rigger, RiggerBasePlugin
from rigger_mp.core.loading import ENTRY_POINT_GROUP, discover_plugins, resolve_plugin
from rigger_mp.plugins.archive import ArchivePlugin
from rigger_mp.plugins.testlog import TestLog

VIDEO_MODULE = '''
"""A plugin another package provides."""
from rigger_mp import RiggerBasePlugin


class VideoPlugin(RiggerBasePlugin):
    def plugin_initialize(self):
        self.register_plugin_hook("start_test", self.start_test)

    def start_test(self, test_name):
        return {"recording": f"{self.data.get('codec', 'vp9')}:{test_name}"}, None
'''


def make_package(
    where: Path, dist: str, module: str, entry_points: dict[str, str], source: str = VIDEO_MODULE
) -> Path:
    """Lay out an installed distribution ``dist`` under ``where``: module + dist-info."""
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{module}.py").write_text(textwrap.dedent(source))
    info = where / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return where


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package ``rigger-mp-video`` providing plugin ``video``, importable for this test."""
    site = make_package(
        tmp_path / "site",
        "rigger_mp_video",
        "rigger_mp_video",
        {"video": "rigger_mp_video:VideoPlugin"},
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("rigger_mp_video", None)


def test_builtins_are_found_by_name() -> None:
    assert resolve_plugin("archive", "a", {}) is ArchivePlugin
    assert resolve_plugin("testlog", "t", {}) is TestLog
    # rigger_mp declares its built-ins in the entry point group too (pyproject.toml).
    assert discover_plugins()["archive"] == {
        "rigger_mp.plugins.archive:ArchivePlugin": "rigger_mp (built-in)"
    }


def test_entry_point_plugin_is_loaded_by_name(installed: Path) -> None:
    assert "video" in discover_plugins()
    rigger = Rigger({"plugins": {"cam": {"plugin": "video", "codec": "av1"}}})
    with rigger:
        result = rigger.fire_hook("start_test", test_name="t1").result(timeout=10)
    assert result["recording"] == "av1:t1"
    assert type(rigger.instances["cam"].obj).__name__ == "VideoPlugin"


def test_registered_names_come_first(installed: Path) -> None:
    class Mine(RiggerBasePlugin):
        pass

    assert resolve_plugin("video", "cam", {"video": Mine}) is Mine


def test_a_name_two_packages_claim_is_an_error_naming_both(
    tmp_path: Path, installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_package(
        tmp_path / "other", "other_video", "other_video", {"video": "other_video:VideoPlugin"}
    )
    monkeypatch.syspath_prepend(str(other))
    with pytest.raises(PluginError) as info:
        resolve_plugin("video", "cam", {})
    text = str(info.value)
    assert "rigger_mp_video:VideoPlugin" in text and "other_video:VideoPlugin" in text
    assert "package rigger_mp_video" in text and "package other_video" in text


def test_a_broken_entry_point_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_package(tmp_path, "broken_pkg", "broken_mod", {"broken": "broken_mod:Missing"})
    monkeypatch.syspath_prepend(str(site))
    try:
        with pytest.raises(PluginError, match=r"'broken' \(from package broken_pkg\).*Missing"):
            resolve_plugin("broken", "b", {})
    finally:
        sys.modules.pop("broken_mod", None)


def test_unknown_name_lists_known_plugins_and_the_group() -> None:
    with pytest.raises(PluginError) as info:
        resolve_plugin("vidoe", "cam", {})
    text = str(info.value)
    assert "'vidoe'" in text and "archive" in text and "testlog" in text
    assert ENTRY_POINT_GROUP in text


def test_serve_check_finds_an_installed_plugin(installed: Path, tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("plugins:\n  cam:\n    plugin: video\n")
    done = subprocess.run(
        [sys.executable, "-m", "rigger_mp", "serve", "--check", "-c", str(config)],
        env={**_env(), "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "cam (video)" in done.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
