"""The journal never follows a planted link (its file, its -wal, its lock files), and a
clean stop removes its lock files without letting two processes hold one lock."""

from __future__ import annotations

import fcntl
import os
import re
import signal
from pathlib import Path

import pytest

from rigger_mp.journal import JournalError, JournalStore, locks
from rigger_mp.journal.locks import WriterLock

from .test_cli import Served

VICTIM = b"precious: the dispatcher's user may write here, nobody else should\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "victim"
    path.write_bytes(VICTIM)
    return path


@pytest.mark.parametrize("suffix", ["-lock", "-write", "-wal", "-shm", ""])
def test_a_link_at_the_journal_or_beside_it_is_refused(
    tmp_path: Path, victim: Path, suffix: str
) -> None:
    journal = tmp_path / "j.db"
    (tmp_path / f"j.db{suffix}").symlink_to(victim)
    refused = re.escape(f"j.db{suffix} is a symbolic link; not followed")
    with pytest.raises(JournalError, match=refused):
        JournalStore.open(journal)
    assert victim.read_bytes() == VICTIM  # not truncated, no pid, no page written
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim"]  # no -wal beside it


def test_a_dangling_link_at_the_journal_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "outside" / "created.db"
    target.parent.mkdir()
    (tmp_path / "j.db").symlink_to(target)
    with pytest.raises(JournalError, match=re.escape("j.db is a symbolic link; not followed")):
        JournalStore.open(tmp_path / "j.db")
    assert list(target.parent.iterdir()) == []


def test_a_clean_close_removes_the_lock_files(tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    store = JournalStore.open(journal)
    assert (tmp_path / "j.db-lock").exists() and (tmp_path / "j.db-write").exists()
    store.close()
    assert not (tmp_path / "j.db-lock").exists() and not (tmp_path / "j.db-write").exists()
    JournalStore.open(journal).close()  # and the next owner starts as on a fresh journal


def test_an_owner_that_locks_a_removed_lock_file_does_not_think_it_owns(tmp_path: Path) -> None:
    """A second process opened ``-lock`` just before the owner's clean stop removed it, and
    takes its flock after: it must see that the path now names another file (held by a
    newcomer) rather than hold a lock nobody else takes."""
    journal = str(tmp_path / "j.db")
    first = JournalStore.open(journal)
    late = os.open(journal + "-lock", os.O_RDWR)  # the old file, opened before the removal
    first.close()
    newcomer = JournalStore.open(journal)  # creates and holds a new -lock
    try:
        with pytest.raises(locks._Busy):
            locks._lock(journal + "-lock", journal, late, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        newcomer.close()


def test_a_writer_of_a_removed_lock_file_locks_the_new_one(tmp_path: Path) -> None:
    journal = str(tmp_path / "j.db")
    store = JournalStore.open(journal)
    writer = WriterLock(journal)  # a writer of another process, opened before the removal
    store.close()
    assert not os.path.exists(journal + "-write")
    try:
        with writer.held():
            fd = os.open(journal + "-write", os.O_RDWR)  # the file every writer now opens
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        writer.close()


def test_serve_stopped_cleanly_leaves_no_lock_files(tmp_path: Path) -> None:
    served = Served("--artifacts", str(tmp_path / "art"), cwd=tmp_path)  # journal by default
    try:
        assert served.cmd("fire", "start_test", "test_name=t", "--wait").returncode == 0
        (lock,) = tmp_path.rglob("*-lock")
        journal = Path(str(lock).removesuffix("-lock"))
        assert Path(f"{journal}-write").exists()
        served.proc.send_signal(signal.SIGTERM)
        status, _, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    assert journal.exists()
    left = sorted(p.name for p in journal.parent.iterdir())
    assert not lock.exists() and not Path(f"{journal}-write").exists(), left
