"""Shared fixtures: every test is checked for leaked rigger_mp threads and processes."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest


def rigger_threads() -> list[threading.Thread]:
    """The threads rigger_mp started that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("rigger_mp")]


def child_processes() -> set[int]:
    """Pids of the live descendants of this test process."""
    return {p.pid for p in psutil.Process().children(recursive=True) if _alive(p)}


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_processes_gone(pids: set[int], timeout: float = 10.0) -> None:
    """Wait (on the processes, not a sleep) until ``pids`` have exited; fail if not."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if _alive(p)]
    for proc in alive:
        proc.kill()
    assert not alive, f"processes left behind: {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a rigger_mp thread or a child process behind."""
    before = child_processes()
    yield
    assert_processes_gone(child_processes() - before)
    leaked = rigger_threads()
    assert not leaked, f"rigger_mp threads still alive: {[t.name for t in leaked]}"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
