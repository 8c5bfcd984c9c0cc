"""Links planted inside the artifacts root: the testlog and archive plugins follow none,
create nothing outside the root, and fail naming the path."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import pytest

from rigger_mp import PluginError, Rigger
from rigger_mp.errors import UnsafePath
from rigger_mp.plugins.archive import ArchivePlugin
from rigger_mp.plugins.artifacts import install
from rigger_mp.plugins.testlog import below

VICTIM = b"precious\n"


def tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root`` (the artifacts root) and ``outside`` (a directory beside it)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def make_testlog_rigger(root: Path) -> Rigger:
    rigger = Rigger({"plugins": {"log": {"plugin": "testlog"}}})
    install(rigger, root)
    return rigger


def test_testlog_follows_no_directory_link_inside_the_root(tmp_path: Path) -> None:
    root, outside = tree(tmp_path)
    (root / "loc").symlink_to(outside, target_is_directory=True)
    link = r"loc is a symbolic link or not a directory; not followed"
    with make_testlog_rigger(root) as rigger:
        with pytest.raises(UnsafePath, match=link):
            rigger.fire_hook("start_test", test_name="a7", test_location="loc").result(10)
        with pytest.raises(UnsafePath, match=link):
            rigger.fire_hook(
                "finish_test", test_name="a7", test_location="loc", test_result="passed"
            ).result(10)
    assert list(outside.iterdir()) == []


def test_testlog_takes_a_path_spelled_below_the_root_as_spelled_and_resolves_the_rest(
    tmp_path: Path,
) -> None:
    root, outside = tree(tmp_path)
    (root / "in").mkdir()
    (root / "via").symlink_to(outside, target_is_directory=True)
    assert below(str(root), str(root / "loc" / "a7")) == PurePath("loc/a7")
    # Not resolved: a link on the way is open_file's to refuse (the test above).
    assert below(str(root), str(root / "via" / "a7")) == PurePath("via/a7")
    assert below(str(root), str(root / "in" / ".." / "a7")) == PurePath("a7")
    for outside_root in (root / ".." / "outside", root, root / "via" / ".."):
        with pytest.raises(UnsafePath):
            below(str(root), str(outside_root))


def test_testlog_follows_no_link_at_its_log_file(tmp_path: Path) -> None:
    root, outside = tree(tmp_path)
    victim = outside / "victim"
    victim.write_bytes(VICTIM)
    (root / "loc" / "a7").mkdir(parents=True)
    (root / "loc" / "a7" / "log.log").symlink_to(victim)
    refused = pytest.raises(UnsafePath, match=r"log\.log is a symbolic link; not followed")
    with make_testlog_rigger(root) as rigger, refused:
        rigger.fire_hook("start_test", test_name="a7", test_location="loc").result(10)
    assert victim.read_bytes() == VICTIM


def test_testlog_still_writes_its_log(tmp_path: Path) -> None:
    root = tmp_path / "not-yet"  # the root is made when missing, as before
    with make_testlog_rigger(root) as rigger:
        rigger.fire_hook("start_test", test_name="a7", test_location="loc").result(10)
        rigger.fire_hook(
            "finish_test", test_name="a7", test_location="loc", test_result="passed"
        ).result(10)
    lines = (root / "loc" / "a7" / "log.log").read_text().splitlines()
    assert lines[0] == "a7" and lines[1].startswith("started ") and lines[2] == "passed"


def test_testlog_without_a_trusted_root_writes_nothing(tmp_path: Path) -> None:
    rigger = Rigger({"plugins": {"log": {"plugin": "testlog"}}})
    with rigger, pytest.raises(PluginError, match="no artifacts root"):
        rigger.fire_hook("start_test", test_name="a7", artifact_path=str(tmp_path / "x")).result(10)
    assert list(tmp_path.iterdir()) == []


def test_the_archive_writes_through_no_link_planted_after_its_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory the archive goes into becomes a link between the containment check
    and the write (a race the check alone cannot win): the archive is refused, and
    nothing is written outside."""
    root, outside = tree(tmp_path)
    (root / "loc" / "a7").mkdir(parents=True)
    (root / "loc" / "a7" / "log.txt").write_bytes(b"log\n")
    (outside / "a7").mkdir()
    (outside / "a7" / "log.txt").write_bytes(b"theirs\n")
    checked = ArchivePlugin._contained

    def check_then_swap(self: ArchivePlugin, path: str, artifacts_root: Any) -> tuple[str, str]:
        real = checked(self, path, artifacts_root)
        (root / "loc").rename(tmp_path / "moved")
        (root / "loc").symlink_to(outside, target_is_directory=True)
        return real

    monkeypatch.setattr(ArchivePlugin, "_contained", check_then_swap)
    spec = {"plugin": "archive", "background": False, "event": "done", "root": str(root)}
    rigger = Rigger({"plugins": {"arch": spec}})
    with rigger, pytest.raises(PluginError, match="loc is a symbolic link or not a directory"):
        rigger.fire_hook("done", artifact_path=str(root / "loc" / "a7")).result(10)
    assert sorted(p.name for p in outside.iterdir()) == ["a7"]  # no archive, no partial
    assert list((outside / "a7").iterdir()) == [outside / "a7" / "log.txt"]
