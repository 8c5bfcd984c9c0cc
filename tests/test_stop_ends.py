"""A stop always ends: hung hooks, workers kept alive by their own threads, a worker
replaced while the stop begins, a ``rigger-mp serve`` told to stop by signals.

Nothing sleeps to wait: the tests wait on FIFOs a hook writes to, on processes and
threads with generous bounds, and on the serve subprocess's output.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.forkserver
import os
import queue
import signal
import textwrap
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.cli.serve import STOP_SLACK
from rigger_mp.client import RiggerClient
from rigger_mp.pool.interface import Failure
from rigger_mp.pool.local import KILL_GRACE, LocalPool
from rigger_mp.server.supervisor import HEARTBEAT_MISSES
from tests._tcp import HOST, counter, make_rigger, port_of, server_pid
from tests.conftest import assert_processes_gone, child_processes
from tests.pool_plugins import BootGate
from tests.test_cli import Served
from tests.test_server_acks import gone

WAIT = 60.0
HERE = "tests.test_stop_ends"


class Stubborn(RiggerBasePlugin):
    """``hang``: writes its pid to the FIFO ``fifo``, ignores SIGTERM, blocks for good.
    ``linger``: leaves a non-daemon thread that never ends. ``work``: returns at once."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("hang", self.hang, bg=self.data.get("bg", True))
        self.register_plugin_hook("linger", self.linger, bg=True)
        self.register_plugin_hook("work", self.work, bg=True)

    def hang(self, fifo: str) -> None:
        if threading.current_thread() is threading.main_thread():  # a worker's
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open(fifo, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        threading.Event().wait()  # nobody sets it

    def linger(self) -> None:
        threading.Thread(target=threading.Event().wait, name="lingering").start()

    def work(self) -> tuple[None, dict[str, Any]]:
        return None, {"worked": 1}


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver serves the whole interpreter: started before any count."""
    multiprocessing.forkserver.ensure_running()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def read_pid(fifo: Path) -> int:
    """Block until a hook has opened the FIFO and written its pid."""
    with open(fifo) as stream:
        return int(stream.readline())


def stubborn(**settings: Any) -> dict[str, Any]:
    return {"workers": 1, **settings, "plugins": {"s": {"plugin": f"{HERE}:Stubborn"}}}


def stop_within(rigger: Rigger, bound: float, timeout: float | None = None) -> float:
    """Run ``rigger.stop(timeout)`` on a thread; fail (after ending the children, so
    the stop can end) if it is still running after ``bound`` seconds; its duration."""
    began = time.monotonic()
    thread = threading.Thread(target=rigger.stop, args=(timeout,))
    thread.start()
    thread.join(bound)
    if thread.is_alive():
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
        thread.join(WAIT)
        pytest.fail(f"stop({timeout}) was still running after {bound} s")
    return time.monotonic() - began


def test_a_worker_left_with_a_non_daemon_thread_does_not_block_stop() -> None:
    before = child_processes()
    rigger = Rigger(stubborn()).start()
    rigger.fire_hook("linger")
    assert rigger.wait_background(WAIT)
    stop_within(rigger, WAIT)  # no timeout: the stop waits for the workers to finish
    assert rigger.stats()["background"]["done"] == 1
    assert_processes_gone(child_processes() - before)


def test_stop_terminates_then_kills_a_hung_hook_and_names_it(
    fifo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = child_processes()
    rigger = Rigger(stubborn()).start()
    rigger.fire_hook("hang", fifo=str(fifo))
    pid = read_pid(fifo)
    took = stop_within(rigger, WAIT, timeout=1.0)
    assert took < 1.0 + KILL_GRACE + 10  # the deadline, the grace, a loaded machine
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert rigger.stats()["background"]["abandoned"] == 1
    assert "abandoned 1 backgrounded hook(s) not finished in time: s.hang" in caplog.text
    assert_processes_gone(child_processes() - before)


class Sink:
    """A ResultSink that keeps the failures it is given."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def completed(
        self,
        count: int,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        ids: Sequence[int] = (),
    ) -> None:
        self.failures.extend(failures)

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        raise AssertionError(hook_name)


def test_a_worker_replaced_while_stop_begins_is_stopped_too() -> None:
    """stop() takes its list of workers while the collector starts a replacement: the
    replacement, added after, is still told to stop (else stop() waits for it forever)."""
    pool = LocalPool({}, workers=2)
    spawning: queue.SimpleQueue[None] = queue.SimpleQueue()
    proceed = threading.Event()
    spawner = pool._spawner
    spawn = spawner.spawn

    def slow_spawn(place: int) -> Any:
        if spawner.started >= 2:  # a replacement: hold it until stop() has begun
            spawning.put(None)
            proceed.wait()
        return spawn(place)

    spawner.spawn = slow_spawn  # type: ignore[method-assign]
    before = child_processes()
    pool.start(Sink())
    first, second = (w.pid for w in pool.workers())
    os.kill(first, signal.SIGKILL)
    # Daemon, and the gate opened whatever happens: a failure here must not leave the
    # collector held and this thread in stop() for good, which would hang the
    # interpreter's exit and leak the collector into every later test.
    stopper = threading.Thread(target=pool.stop, args=(False, None), daemon=True)
    try:
        spawning.get(timeout=WAIT)  # the collector is starting the replacement
        stopper.start()
        with contextlib.suppress(psutil.NoSuchProcess):  # already ended and reaped
            psutil.Process(second).wait(WAIT)  # stop() told the live worker: its list is taken
    finally:
        proceed.set()
    stopper.join(WAIT)
    if stopper.is_alive():
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
        stopper.join(WAIT)
        pytest.fail("stop() did not end: the replacement worker was never told to stop")
    assert_processes_gone(child_processes() - before)


def test_stop_ends_a_worker_still_booting_that_took_no_work(fifo: Path) -> None:
    """A worker never given work holds nothing: stop() ends it at once, without waiting
    for its boot to finish, and leaves no process behind."""
    gate = BootGate(str(fifo))
    pool = LocalPool({"p": ("tests.pool_plugins:PidPlugin", {"gate": gate})}, workers=1)
    sink = Sink()
    before = child_processes()
    pool.start(sink)
    booting = read_pid(fifo)  # the worker is in its boot, and would stay there for good
    left: list[Any] = []
    stopper = threading.Thread(target=lambda: left.extend(pool.stop(False, None)))
    stopper.start()  # no timeout: only ending the worker lets this stop end
    stopper.join(WAIT)
    if stopper.is_alive():
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
        stopper.join(WAIT)
        pytest.fail("stop() waited for a worker that had taken no work to finish booting")
    assert left == [] and sink.failures == []
    assert_processes_gone({booting} | (child_processes() - before))  # manager, worker


# -- rigger-mp serve and its signals ----------------------------------------------------


def served_hanging(tmp_path: Path, fifo: Path, stop_timeout: float, bg: bool = True) -> Served:
    """A ``serve`` subprocess whose one event hangs (in a worker, or on the event thread)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            workers: 1
            plugins:
              s: {{plugin: "{HERE}:Stubborn", bg: {str(bg).lower()}}}
            """
        )
    )
    served = Served("-c", str(config), "--stop-timeout", str(stop_timeout), cwd=tmp_path)
    with RiggerClient(port=int(served.port), timeout=WAIT) as client:
        client.fire_hook("hang", fifo=str(fifo))
    read_pid(fifo)  # the hook runs, and will never return
    return served


@pytest.mark.parametrize("bg", [True, False], ids=["backgrounded", "foreground"])
def test_sigterm_of_serve_ends_within_the_stop_timeout_naming_what_was_abandoned(
    tmp_path: Path, fifo: Path, bg: bool
) -> None:
    served = served_hanging(tmp_path, fifo, stop_timeout=2, bg=bg)
    try:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=2 + STOP_SLACK + 30)  # generous: a loaded machine
        status, out, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    if bg:
        assert "draining: background: 0 queued, 1 running; abandoned in" in err
        assert "abandoned 1 backgrounded hook(s) not finished in time: s.hang" in err
        assert "background jobs: 0 done, 0 failed, 1 abandoned" in out
    else:
        assert "draining: 1 events left; abandoned in" in err
        assert "timed out after 2.0s with an event still running" in err


def test_a_second_signal_abandons_at_once_and_says_what(tmp_path: Path, fifo: Path) -> None:
    served = served_hanging(tmp_path, fifo, stop_timeout=600)
    try:
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.stderr is not None
        for line in served.proc.stderr:  # the first signal began a drain that waits
            if line.startswith("draining:"):
                assert "background: 0 queued, 1 running" in line
                break
        served.proc.send_signal(signal.SIGINT)
        served.proc.wait(timeout=30)
        status, out, err = served.finish()
    finally:
        served.kill()
    assert status == 1
    assert "stopped by a second signal; abandoned: background: 0 queued, 1 running" in out
    assert "received SIGINT again: abandoning what is left now" in err


# -- the server heartbeat -----------------------------------------------------------------


def test_a_stopped_server_process_is_noticed_by_the_heartbeat_and_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing owes the SIGSTOPped server a fence (no sync, no stop): only the heartbeat
    notices it. A new client's ping waits in the listening socket's backlog until the
    replacement answers it."""
    heartbeat = 0.2
    rigger = make_rigger(server_heartbeat=heartbeat)
    old = server_pid(rigger)
    plugin = counter(rigger)
    try:
        with RiggerClient(HOST, port_of(rigger), timeout=WAIT) as client:
            client.fire_hook("block")  # holds the event thread
            assert plugin.entered.wait(WAIT)
            client.fire_hook("count", c="acked before the stop")  # acked, queued
        os.kill(old, signal.SIGSTOP)
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            bound = heartbeat * (HEARTBEAT_MISSES + 1) + 30  # + starting a new process
            with RiggerClient(HOST, port_of(rigger), timeout=bound) as client:
                assert client.ping()
        assert gone(old)
        assert server_pid(rigger) != old
        assert any("answered no heartbeat" in r.getMessage() for r in caplog.records)
        plugin.release.set()
        assert rigger.wait_background(WAIT)
        assert plugin.seen[("acked before the stop", None)] == 1
        assert rigger.stats()["server"]["lost"] == 0
    finally:
        plugin.release.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
        rigger.stop()
