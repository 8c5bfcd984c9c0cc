"""rigger_mp.safe_paths against real symlinks: nothing outside the root is created,
truncated or written, and every refusal names the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rigger_mp import UnsafePath
from rigger_mp.safe_paths import (
    inside,
    make_dirs,
    open_file,
    open_no_follow,
    refuse_link,
    relative_parts,
    write_atomically,
)

WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def root(tmp_path: Path) -> Path:
    made = tmp_path / "root"
    made.mkdir()
    return made


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    made = tmp_path / "outside"
    made.mkdir()
    return made


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "bad", ["/etc/passwd", "../x", "a/../../x", "a/..", "", ".", "a\0b", "C:evil", "\\x"]
)
def test_relative_parts_refuses_paths_that_leave(bad: str) -> None:
    with pytest.raises(UnsafePath):
        relative_parts(bad)


def test_relative_parts_of_a_plain_path() -> None:
    assert relative_parts("./shots/login.png") == ("shots", "login.png")


def test_make_dirs_creates_inside(root: Path) -> None:
    made = make_dirs(root, "a/b/c")
    assert made == root / "a" / "b" / "c"
    assert made.is_dir()
    assert make_dirs(root, "a/b/c") == made  # existing directories are fine


def test_make_dirs_refuses_a_directory_link_below_the_root(root: Path, outside: Path) -> None:
    (root / "loc").symlink_to(outside)
    with pytest.raises(UnsafePath, match=r"root/loc is a symbolic link"):
        make_dirs(root, "loc/a7")
    assert listing(outside) == []


def test_make_dirs_refuses_a_file_on_the_way(root: Path) -> None:
    (root / "plain").write_text("x")
    with pytest.raises(UnsafePath, match="not a directory"):
        make_dirs(root, "plain/sub")


def test_the_root_itself_may_be_a_link(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "root-link"
    link.symlink_to(outside)
    make_dirs(link, "a")
    assert (outside / "a").is_dir()


def test_open_file_refuses_a_link_in_the_last_component(root: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_text("keep me")
    (root / "dir").mkdir()
    (root / "dir" / "log").symlink_to(victim)
    with pytest.raises(UnsafePath, match=r"dir/log is a symbolic link"):
        open_file(root, "dir/log", WRITE_NEW)
    assert victim.read_text() == "keep me"


def test_open_file_refuses_a_dangling_link(root: Path, outside: Path) -> None:
    (root / "log").symlink_to(outside / "made-there")
    with pytest.raises(UnsafePath):
        open_file(root, "log", WRITE_NEW)
    assert listing(outside) == []


def test_open_file_writes_and_appends(root: Path) -> None:
    fd = open_file(root, "t/x.log", WRITE_NEW)
    os.write(fd, b"one\n")
    os.close(fd)
    fd = open_file(root, "t/x.log", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"two\n")
    os.close(fd)
    assert (root / "t" / "x.log").read_text() == "one\ntwo\n"


def test_open_file_refuses_a_fifo(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_file(root, "pipe", os.O_RDONLY | os.O_NONBLOCK)


def test_open_no_follow(tmp_path: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_text("keep me")
    lock = tmp_path / "journal-lock"
    lock.symlink_to(victim)
    with pytest.raises(UnsafePath, match="journal-lock is a symbolic link"):
        open_no_follow(lock, os.O_RDWR | os.O_CREAT)
    assert victim.read_text() == "keep me"
    lock.unlink()
    fd = open_no_follow(lock, os.O_RDWR | os.O_CREAT)
    os.close(fd)
    assert lock.is_file()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_no_follow(tmp_path / "fifo", os.O_RDWR)
    with pytest.raises(UnsafePath, match="fifo is not a regular file"):
        open_no_follow(tmp_path / "fifo", os.O_WRONLY)  # no reader: ENXIO, refused by name


def test_refuse_link(tmp_path: Path) -> None:
    dangling = tmp_path / "journal"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafePath):
        refuse_link(dangling)
    refuse_link(tmp_path / "absent")  # a missing name is no link


def test_write_atomically_replaces_a_planted_link(root: Path, outside: Path) -> None:
    victim = outside / "victim"
    victim.write_text("keep me")
    (root / "report.html").symlink_to(victim)
    path = write_atomically(root, "report.html", b"<html>")
    assert path == root / "report.html"
    assert not path.is_symlink()
    assert path.read_bytes() == b"<html>"
    assert victim.read_text() == "keep me"
    assert listing(root) == ["report.html"]  # no partial file left


def test_write_atomically_refuses_a_linked_directory(root: Path, outside: Path) -> None:
    (root / "run1").symlink_to(outside)
    with pytest.raises(UnsafePath):
        write_atomically(root, "run1/junit.xml", b"<x/>")
    assert listing(outside) == []


def test_inside(root: Path, outside: Path) -> None:
    (root / "a").mkdir()
    assert inside(root, "a") == Path("a")
    assert inside(root, root / "a") == Path("a")
    (root / "out").symlink_to(outside)
    for bad in ("out", "..", str(root), "/etc"):
        with pytest.raises(UnsafePath):
            inside(root, bad)


@pytest.mark.parametrize("flags", [WRITE_NEW, os.O_WRONLY | os.O_APPEND, os.O_RDONLY])
def test_open_file_refuses_a_planted_fifo_without_blocking(root: Path, flags: int) -> None:
    # Opened blocking, a FIFO waits for a peer that never comes: the caller hangs.
    os.mkfifo(root / "out.log")
    with pytest.raises(UnsafePath, match=r"root/out\.log is not a regular file"):
        open_file(root, "out.log", flags)
    (root / "out.log").unlink()
    (root / "out.log").write_text("")
    fd = open_file(root, "out.log", flags)
    try:
        assert os.get_blocking(fd)  # a regular file is handed back as the caller asked
    finally:
        os.close(fd)
