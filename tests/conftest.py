"""Shared fixtures: every test is checked for leaked rigger_mp threads and processes;
``dispatchers`` starts Riggers and checks that each one stopped."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import pytest

if TYPE_CHECKING:
    from rigger_mp import Rigger, RiggerBasePlugin

R = TypeVar("R", bound="Rigger")


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


def held_threads(before: set[threading.Thread], timeout: float = 10.0) -> list[str]:
    """The non-daemon threads started since ``before`` that do not end within ``timeout``
    (waited on with ``join``): each would hold the interpreter's exit for good."""
    started = [t for t in threading.enumerate() if t not in before and not t.daemon]
    for thread in started:
        thread.join(timeout)
    return [t.name for t in started if t.is_alive()]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a rigger_mp thread, a thread that would hold the
    interpreter's exit, or a child process behind."""
    before = child_processes()
    threads = set(threading.enumerate())
    yield
    assert_processes_gone(child_processes() - before)
    leaked = rigger_threads()
    assert not leaked, f"rigger_mp threads still alive: {[t.name for t in leaked]}"
    held = held_threads(threads)
    assert not held, f"non-daemon threads still alive, which would hang the exit: {held}"


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


class Dispatchers:
    """The Riggers one test starts; the ``dispatchers`` fixture stops each after the test
    (within ``stop_timeout`` seconds; None: no bound) and checks that it stopped."""

    def __init__(self, stop_timeout: float | None = None) -> None:
        self.stop_timeout = stop_timeout
        self.started: list[Rigger] = []

    def start(
        self,
        config: Mapping[str, Any] | None = None,
        plugins: Mapping[str, type[RiggerBasePlugin]] | None = None,
    ) -> Rigger:
        """A started :class:`Rigger` of ``config``, with ``plugins`` registered by name."""
        from rigger_mp import Rigger

        rigger = Rigger(dict(config) if config is not None else None)
        for name, cls in (plugins or {}).items():
            rigger.register_plugin(cls, name)
        return self.add(rigger.start())

    def add(self, rigger: R) -> R:
        """Stop (and check) after the test a Rigger started elsewhere (a helper, compat)."""
        self.started.append(rigger)
        return rigger

    def stop_all(self) -> None:
        """Stop every Rigger (the last first); fail if one that started did not stop."""
        from rigger_mp.core.rigger import parts_of

        for rigger in reversed(self.started):
            rigger.stop(self.stop_timeout)
        running = [rigger for rigger in self.started if rigger.running]
        assert not running, f"Riggers still running after stop(): {running}"
        for rigger in self.started:
            try:
                parts_of(rigger)  # a KeyError if it never started: nothing to check
            except KeyError:
                continue
            assert rigger.wait_stopped(0), f"{rigger!r}: stop() did not end"


@pytest.fixture
def dispatchers() -> Iterator[Dispatchers]:
    """Start Riggers with ``dispatchers.start(config, plugins)`` (or hand one started
    elsewhere to ``dispatchers.add``): each is stopped after the test and checked."""
    started = Dispatchers()
    yield started
    started.stop_all()
