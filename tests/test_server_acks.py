"""Fires are acked by the server process; fences keep what an ack promises.

Each test holds the intake thread inside its first batch of fires (the ``held`` fixture),
so that every later fire the server acks is still in the requests pipe, not yet queued
in the main process; then it checks that stop, wait_background and a server death each
lose none of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import psutil
import pytest

from rigger_mp import RiggerClient
from rigger_mp.core.config import load_config
from rigger_mp.core.port import EventPort
from rigger_mp.server import intake
from rigger_mp.server import supervisor as supervisor_module
from rigger_mp.server.channel import BlockingReader
from rigger_mp.server.intake import Intake
from rigger_mp.server.messages import FIRE
from rigger_mp.server.supervisor import Phase, ServerSupervisor
from tests._tcp import (
    HOST,
    WAIT,
    Raw,
    counter,
    make_rigger,
    port_of,
    server_pid,
    supervisor_of,
)

EVENTS = 300


@dataclass
class Held:
    """The intake thread waits in its first batch of fires until ``release`` is set.
    With ``fail``, the next batch of fires raises (an intake bug); it comes in one read
    with the batches behind it."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    fail: bool = False
    failed: bool = False


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    gate = Held()
    handle = Intake._handle

    def held_handle(self: Intake, batch: list[tuple[Any, ...]], *args: Any) -> None:
        if any(item[1] == FIRE for item in batch):
            if not gate.entered.is_set():
                gate.entered.set()
                gate.release.wait(WAIT)
            elif gate.fail and not gate.failed:
                gate.failed = True
                raise RuntimeError("a bug in the intake")
        handle(self, batch, *args)

    monkeypatch.setattr(Intake, "_handle", held_handle)
    yield gate
    gate.release.set()


def fire_and_read_acks(raw: Raw, held: Held, tag: str) -> list[str]:
    """Fire EVENTS plain events, one message at a time; their tids, all acked."""
    first = raw.request({"hook_name": "count", "data": {"c": tag, "i": 0}})
    assert held.entered.wait(WAIT)  # from here on the intake reads nothing
    tids = [first["tid"]]
    for i in range(1, EVENTS):
        reply = raw.request({"hook_name": "count", "data": {"c": tag, "i": i}})
        assert reply["ok"] is True, reply
        tids.append(reply["tid"])
    return tids


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped, or a zombie about to be)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(WAIT)
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def spy(obj: object, name: str) -> threading.Event:
    """An event set when ``obj.name`` is called (the call then goes on as usual)."""
    called = threading.Event()
    method: Callable[..., Any] = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        called.set()
        return method(*args, **kwargs)

    setattr(obj, name, wrapper)
    return called


def test_acks_come_from_the_server_process_with_its_own_tids(held: Held) -> None:
    rigger = make_rigger()
    try:
        with Raw(port_of(rigger)) as raw:
            # Without early acks these requests would wait for the held intake.
            tids = fire_and_read_acks(raw, held, "early")
        assert tids == [f"tcp1-{n}" for n in range(1, EVENTS + 1)]
        assert rigger.stats()["events"]["accepted"] == 0  # none queued yet
        held.release.set()
        assert rigger.wait_background(WAIT)
        assert sorted(counter(rigger).seen) == [("early", i) for i in range(EVENTS)]
    finally:
        held.release.set()
        rigger.stop()


def test_acked_events_survive_the_server_being_killed_before_they_were_queued(
    held: Held,
) -> None:
    rigger = make_rigger()
    try:
        old = server_pid(rigger)
        with Raw(port_of(rigger)) as raw:
            fire_and_read_acks(raw, held, "acked")
        os.kill(old, signal.SIGKILL)
        psutil.Process(old).wait(WAIT)
        held.release.set()  # the intake reads what the dead process left in the pipe
        with RiggerClient(HOST, port_of(rigger)) as client:
            tid = client.fire_hook("count", c="after")
            assert client.fire_hook("count", wait_for_task=True, c="last")
        assert tid.startswith("tcp2-")  # the new process's tids cannot collide
        seen = counter(rigger).seen
        assert all(seen[("acked", i)] == 1 for i in range(EVENTS)), seen
        assert sum(seen.values()) == EVENTS + 2
        assert rigger.stats()["server"]["restarts"] == 1
    finally:
        held.release.set()
        rigger.stop()


def test_stop_queues_every_acked_event_before_it_drains(held: Held) -> None:
    rigger = make_rigger()
    pid = server_pid(rigger)
    quiescing = spy(supervisor_of(rigger), "quiesce")
    with Raw(port_of(rigger)) as raw:
        fire_and_read_acks(raw, held, "acked")
    stopper = threading.Thread(target=rigger.stop)
    stopper.start()
    assert quiescing.wait(WAIT)  # the dispatcher is stopping: local fires are refused
    held.release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive() and not rigger.running
    stats = rigger.stats()
    assert stats["events"]["done"] == EVENTS and stats["server"]["lost"] == 0
    assert sum(counter(rigger).seen.values()) == EVENTS
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_wait_background_waits_for_acked_events_not_yet_queued(held: Held) -> None:
    rigger = make_rigger()
    try:
        syncing = spy(supervisor_of(rigger), "sync")
        with Raw(port_of(rigger)) as raw:
            fire_and_read_acks(raw, held, "acked")
        done: list[bool] = []
        waiter = threading.Thread(target=lambda: done.append(rigger.wait_background(WAIT)))
        waiter.start()
        assert syncing.wait(WAIT)
        held.release.set()
        waiter.join(WAIT)
        assert done == [True]
        assert sum(counter(rigger).seen.values()) == EVENTS  # all ran before it returned
    finally:
        held.release.set()
        rigger.stop()


def test_after_quiesce_fires_are_refused_and_other_requests_served() -> None:
    rigger = make_rigger()
    try:
        with Raw(port_of(rigger)) as raw:
            tid = raw.request({"hook_name": "count", "data": {"i": 1}, "wait_for_task": True})
            supervisor_of(rigger).quiesce(WAIT)
            for message in (
                {"hook_name": "count", "data": {"i": 2}},
                {"hook_name": "count", "data": {"i": 3}, "grab_result": True},
            ):
                reply = raw.request(message)
                assert reply["ok"] is False
                assert reply["error"]["code"] == "shutting_down", reply
            assert raw.request({"op": "ping"}) == {"ok": True}
            status = raw.request({"op": "task_status", "tid": tid["tid"]})
            assert status["status"] == "done"
        assert sum(counter(rigger).seen.values()) == 1
    finally:
        rigger.stop()


def test_stop_reads_past_a_full_backlog_instead_of_waiting_on_the_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(intake, "MAX_BACKLOG", 3)
    rigger = make_rigger()
    plugin = counter(rigger)
    quiesce = supervisor_of(rigger).quiesce
    quiesced = threading.Event()

    def spied_quiesce(timeout: float | None = None) -> None:
        quiesce(timeout)
        quiesced.set()

    supervisor_of(rigger).quiesce = spied_quiesce  # type: ignore[method-assign]
    stopper = threading.Thread(target=rigger.stop)
    try:
        rigger.fire_hook("block")
        assert plugin.entered.wait(WAIT)
        with Raw(port_of(rigger)) as raw:  # the intake pauses after the first few
            replies = [raw.request({"hook_name": "count", "data": {"i": i}}) for i in range(50)]
        assert all(r["ok"] for r in replies)
        stopper.start()
        # Every acked event is queued although the event thread is still held (the
        # block hook gives up after WAIT: this must come well before).
        assert quiesced.wait(WAIT / 2)
        assert rigger.stats()["events"]["accepted"] == 51
    finally:
        plugin.release.set()
        stopper.join(WAIT)
    stats = rigger.stats()
    assert stats["events"]["done"] == 51 and stats["server"]["lost"] == 0
    assert stats["server"]["restarts"] == 0


def test_an_unresponsive_server_is_replaced_when_a_fence_is_owed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor_module, "FENCE_TIMEOUT", 0.2)
    rigger = make_rigger()
    try:
        old = server_pid(rigger)
        os.kill(old, signal.SIGSTOP)  # it answers nothing, fences included
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            assert rigger.wait_background(WAIT)
        assert gone(old)  # killed, not left stopped
        assert any("killing it" in r.getMessage() for r in caplog.records)
        with RiggerClient(HOST, port_of(rigger)) as client:  # its replacement serves
            assert client.fire_hook("count", wait_for_task=True, c="after")
        assert server_pid(rigger) != old
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
        rigger.stop()


def test_after_an_intake_bug_what_the_server_sent_is_still_queued(
    held: Held, caplog: pytest.LogCaptureFixture
) -> None:
    held.fail = True
    rigger = make_rigger()
    try:
        old = server_pid(rigger)
        with Raw(port_of(rigger)) as raw:
            fire_and_read_acks(raw, held, "acked")
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            held.release.set()  # the second batch raises; the server is killed
            assert gone(old)
            with RiggerClient(HOST, port_of(rigger)) as client:
                assert client.fire_hook("count", wait_for_task=True, c="after")
        assert held.failed
        failures = [r.getMessage() for r in caplog.records if "intake failed" in r.getMessage()]
        assert len(failures) == 1 and "tids tcp1-2" in failures[0], failures
        # Only the batch the bug hit is lost, and counted; those behind it, in the same
        # read and after, ran.
        seen = counter(rigger).seen
        assert seen[("acked", 1)] == 0 and rigger.stats()["server"]["lost"] == 1
        assert all(seen[("acked", i)] == 1 for i in range(EVENTS) if i != 1), seen
    finally:
        held.release.set()
        rigger.stop()


def test_a_fence_asked_while_stop_quiesces_quiesces_the_server_too() -> None:
    rigger = make_rigger()
    current = supervisor_of(rigger).current
    assert current is not None
    writer = current.writer
    send = writer.send
    taken, go = threading.Event(), threading.Event()

    def held_send(obj: Any) -> None:  # stop() is preempted before it sends its fence
        if type(obj) is tuple and obj[0] == "fence" and obj[2] and not taken.is_set():
            taken.set()
            go.wait(WAIT)
        send(obj)

    writer.send = held_send  # type: ignore[method-assign]
    stopper = threading.Thread(target=rigger.stop)
    stopper.start()
    try:
        assert taken.wait(WAIT)
        assert supervisor_of(rigger).sync(WAIT)  # wait_background() on another thread does this
        # Answered, that fence must have quiesced the server: no fire is acked after it.
        with Raw(port_of(rigger)) as raw:
            reply = raw.request({"hook_name": "count", "data": {"i": 1}})
        assert reply["ok"] is False and reply["error"]["code"] == "shutting_down", reply
    finally:
        go.set()
        stopper.join(WAIT)
    assert rigger.stats()["server"]["lost"] == 0


def test_stop_timeout_kills_an_unanswering_server_and_starts_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rigger = make_rigger()
    old = server_pid(rigger)
    os.kill(old, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="rigger_mp"):
            rigger.stop(timeout=0.5)  # quiesce cannot be answered: the server is killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, signal.SIGCONT)
    assert gone(old)
    messages = [r.getMessage() for r in caplog.records]
    assert any("killing it" in m for m in messages), messages
    assert not any("starting a new one" in m for m in messages), messages
    stats = rigger.stats()["server"]
    assert stats["restarts"] == 0 and stats["lost"] == 0


def test_a_short_wait_does_not_kill_an_idle_healthy_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rigger = make_rigger()
    try:
        old = server_pid(rigger)
        supervisor = supervisor_of(rigger)
        assert supervisor.current is not None
        # The intake has waited on the idle server's pipe far longer than FENCE_TIMEOUT.
        since = time.monotonic() - 100 * supervisor_module.FENCE_TIMEOUT
        supervisor.intake.silent = (supervisor.current, since)
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            rigger.wait_background(timeout=0)  # a poll: its fence was only just sent
            assert rigger.wait_background(WAIT)
        assert not any("killing it" in r.getMessage() for r in caplog.records)
        assert server_pid(rigger) == old and psutil.pid_exists(old)
    finally:
        rigger.stop()


def test_stop_does_not_hang_when_the_server_dies_as_it_begins() -> None:
    rigger = make_rigger()
    supervisor = supervisor_of(rigger)
    room = supervisor.intake._room

    class DyingRoom:
        """quiesce() sets the room just before it asks for its fence: die right then
        (stop() sets it again later, with no server process left)."""

        died = False

        def set(self) -> None:
            room.set()
            if self.died:
                return
            self.died = True
            assert supervisor.current is not None
            supervisor.current.process.kill()
            assert supervisor.intake_thread is not None
            supervisor.intake_thread.join(WAIT)  # the intake read it to its end-of-file

    supervisor.intake._room = DyingRoom()  # type: ignore[assignment]
    stopper = threading.Thread(target=rigger.stop)
    stopper.start()
    stopper.join(WAIT)
    hung = stopper.is_alive()
    if hung:
        supervisor.fences.passed()  # let it finish before failing
        stopper.join(WAIT)
    assert not hung, "stop() waited for a fence that no server will answer"
    assert not rigger.running
    assert supervisor.phase is Phase.STOPPED  # stop() ran to its end


def test_an_unreadable_pipe_replaces_the_server_instead_of_stopping_the_intake(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recv = BlockingReader.recv
    corrupt = threading.Event()

    def corrupting_recv(self: BlockingReader) -> list[Any]:
        objs = recv(self)
        if corrupt.is_set():
            corrupt.clear()
            raise pickle.UnpicklingError("a frame that does not unpickle")
        return objs

    monkeypatch.setattr(BlockingReader, "recv", corrupting_recv)
    rigger = make_rigger()
    try:
        old = server_pid(rigger)
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            corrupt.set()
            with Raw(port_of(rigger)) as raw:
                raw.send({"hook_name": "count", "data": {"c": "unread"}})
                raw.wait_closed()  # the server is killed under it
            assert gone(old)
            with RiggerClient(HOST, port_of(rigger)) as client:  # its replacement serves
                assert client.fire_hook("count", wait_for_task=True, c="after")
        assert any("cannot go on reading" in r.getMessage() for r in caplog.records)
    finally:
        rigger.stop()
    assert not rigger.running


def test_a_fence_answered_by_its_servers_death_is_not_left_owed() -> None:
    rigger = make_rigger()
    try:
        supervisor = supervisor_of(rigger)
        send_fence = supervisor._send_fence

        def dying_send(incarnation: Any, n: int, quiesce: bool) -> None:
            # The server dies between _ask_fence choosing it and the send; its
            # end-of-file answers fence n before the send records it as owed.
            incarnation.process.kill()
            assert supervisor.fences.wait(n, WAIT)
            send_fence(incarnation, n, quiesce)

        supervisor._send_fence = dying_send  # type: ignore[method-assign]
        assert supervisor.sync(WAIT)
        # A stale entry would make the silence rule kill the next, healthy server.
        assert not supervisor.fences.owed()
    finally:
        rigger.stop()


def phase_of(supervisor: ServerSupervisor) -> Phase:
    """The supervisor's phase, read afresh (mypy would keep it narrowed between reads)."""
    return supervisor.phase


def test_the_supervisor_phase_follows_restarts_quiesce_and_stop() -> None:
    rigger = make_rigger()
    supervisor = supervisor_of(rigger)
    assert phase_of(supervisor) is Phase.SERVING
    try:
        old = server_pid(rigger)
        os.kill(old, signal.SIGKILL)
        with RiggerClient(HOST, port_of(rigger)) as client:  # served by its replacement
            assert client.fire_hook("count", wait_for_task=True, c="after")
        assert phase_of(supervisor) is Phase.SERVING and server_pid(rigger) != old
        supervisor.quiesce(WAIT)
        assert phase_of(supervisor) is Phase.QUIESCING
        assert supervisor.current is not None and supervisor.intake_thread is not None
        supervisor.current.process.kill()
        supervisor.intake_thread.join(WAIT)  # no new server once quiescing
        assert phase_of(supervisor) is Phase.QUIESCED and supervisor.current is None
        assert supervisor.sync(0)  # no server left to hold acked fires: answered at once
    finally:
        rigger.stop()
    assert phase_of(supervisor) is Phase.STOPPED
    assert rigger.stats()["server"]["restarts"] == 1


def test_the_supervisor_moves_only_along_its_table_of_legal_moves() -> None:
    """A stop of a supervisor that never started is a bug: it fails at once, and the phase
    stays where it was (no process or thread is started by the constructor)."""
    supervisor = ServerSupervisor(cast(EventPort, None), load_config({}))
    with pytest.raises(RuntimeError, match="no move from STARTING to STOPPING"):
        supervisor.stop()
    assert supervisor.phase is Phase.STARTING
