"""The journal across processes: a SIGKILLed writer loses no committed append; locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rigger_mp.journal import JournalLocked, JournalStore

REPO = Path(__file__).resolve().parent.parent


def start_appender(path: Path, sync: str, threads: int) -> subprocess.Popen[str]:
    """The child of :mod:`tests._journal_appender`, once it holds the journal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._journal_appender", str(path), sync, str(threads)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_every_append_that_returned_survives_sigkill_mid_burst(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "j.db"
    proc = start_appender(path, sync, threads=8)
    try:
        assert proc.stdout is not None
        acked: dict[int, str] = {}
        while len(acked) < 3000:  # the child is mid-burst: its threads keep appending
            seq, tid = proc.stdout.readline().split()
            acked[int(seq)] = tid
    finally:
        kill(proc)
    assert proc.returncode == -signal.SIGKILL
    store = JournalStore.open(path)  # the dead owner's flock went with it
    try:
        found = {e.seq: e.tid for e in store.pending()}
    finally:
        store.close()
    missing = {seq: tid for seq, tid in acked.items() if found.get(seq) != tid}
    assert not missing, f"{len(missing)} acked appends lost, e.g. {list(missing.items())[:5]}"
    per_thread: dict[str, list[int]] = {}
    for _seq, tid in sorted(found.items()):
        thread, i = tid.split("-")
        per_thread.setdefault(thread, []).append(int(i))
    for indexes in per_thread.values():  # each thread's appends in its own order
        assert indexes == sorted(indexes)


def test_a_journal_held_by_a_live_process_is_refused_naming_file_and_pid(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    proc = start_appender(path, "normal", threads=1)
    try:
        with pytest.raises(JournalLocked) as info:
            JournalStore.open(path)
        assert str(path) in str(info.value)
        assert f"pid {proc.pid}" in str(info.value)
        # A server process of the same dispatcher opens it without the owner lock.
        server_side = JournalStore.open(path, owner=False)
        server_side.close()
    finally:
        kill(proc)


def test_the_owner_lock_is_per_open_so_one_process_cannot_open_twice(tmp_path: Path) -> None:
    store = JournalStore.open(tmp_path / "j.db")
    try:
        with pytest.raises(JournalLocked, match=str(tmp_path / "j.db")):
            JournalStore.open(tmp_path / "j.db")
        assert (tmp_path / "j.db-lock").read_text() == f"{os.getpid()}\n"
    finally:
        store.close()
    JournalStore.open(tmp_path / "j.db").close()
