"""The TCP server process against real sockets on 127.0.0.1: protocol, faults, limits."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rigger_mp import Rigger, RiggerClient
from rigger_mp.server.incarnation import ServerStartError
from rigger_mp.server.listening import exposed_without_token
from tests._tcp import HOST, WAIT, Raw, counter, make_rigger, port_of, server_pid
from tests.conftest import Dispatchers

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def rigger(dispatchers: Dispatchers) -> Iterator[Rigger]:
    r = dispatchers.add(make_rigger(idle_timeout=0.5))
    yield r
    pid = server_pid(r)
    r.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def ping_on_fresh_connection(rigger: Rigger) -> None:
    """The check after every bad input: a new client is served."""
    with Raw(port_of(rigger)) as raw:
        assert raw.request({"op": "ping"}) == {"ok": True}
        reply = raw.request({"hook_name": "count", "data": {"c": "after"}, "wait_for_task": True})
        assert reply["ok"] is True


# -- start, addresses, lifecycle -------------------------------------------------------


def test_start_binds_a_free_port_and_reports_it(rigger: Rigger) -> None:
    assert rigger.server_address == HOST
    assert isinstance(rigger.server_port, int) and rigger.server_port > 0
    ping_on_fresh_connection(rigger)


def test_bind_failure_raises_at_start_with_a_clear_message() -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        rigger = Rigger({"server_enabled": True, "server_port": port})
        with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            rigger.start()
    assert not rigger.running


def test_non_loopback_without_token_is_flagged() -> None:
    assert exposed_without_token("0.0.0.0", None)
    assert exposed_without_token("192.168.1.5", None)
    assert not exposed_without_token("0.0.0.0", "secret")
    assert not exposed_without_token("127.0.0.1", None)
    assert not exposed_without_token("::1", None)


def test_stop_drains_and_waiting_clients_still_get_their_replies() -> None:
    rigger = make_rigger()
    pid = server_pid(rigger)
    plugin = counter(rigger)
    with Raw(port_of(rigger)) as raw:
        raw.send({"hook_name": "block"})
        raw.send(b"".join(b'{"hook_name":"count","data":{"i":%d}}\n' % i for i in range(500)))
        raw.send({"hook_name": "count", "data": {"i": "last"}, "grab_result": True})
        acks = [raw.reply() for _ in range(501)]  # accepted; none has run past the block
        assert all(r["ok"] for r in acks)
        stopper = threading.Thread(target=rigger.stop)
        stopper.start()  # drains: waits for the blocked event and the 501 behind it
        plugin.release.set()
        assert raw.reply()["output"]["i"] == "last"
        assert raw.wait_closed() == b""
        stopper.join(WAIT)
    assert not rigger.running
    assert sum(plugin.seen.values()) == 501
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- the protocol ------------------------------------------------------------------------


def test_bash_client_fires_an_event(rigger: Rigger) -> None:
    script = (
        f"exec 3<>/dev/tcp/{HOST}/{port_of(rigger)}; "
        """printf '%s\\n' '{"hook_name": "count", "data": {"c": "bash", "i": 1}, """
        """"grab_result": true}' >&3; """
        'read -r line <&3; echo "$line"; exec 3>&-'
    )
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=WAIT, check=True
    )
    reply = json.loads(out.stdout)
    assert reply["ok"] is True and reply["output"]["counted"] is True
    assert counter(rigger).seen[("bash", 1)] == 1


def test_pipelined_replies_come_back_in_order(rigger: Rigger) -> None:
    messages = [
        b'{"hook_name": "count", "data": {"i": 0}}',
        b'{"op": "ping"}',
        b'{"hook_name": "count", "data": {"i": 1}, "grab_result": true}',
        b"{oops",
        b'{"hook_name": "count", "data": {"i": 2}}',
        b'{"hook_name": "fail", "wait_for_task": true}',
        b'{"op": "stats"}',
        b'{"hook_name": "count", "data": {"i": 3}, "wait_for_task": true}',
        b'{"op": "fly"}',
    ]
    with Raw(port_of(rigger)) as raw:
        raw.send(b"\n".join(messages) + b"\n")
        replies = [raw.reply() for _ in messages]
    assert replies[0]["ok"] and replies[0]["tid"]
    assert replies[1] == {"ok": True}
    assert replies[2]["output"]["i"] == 1
    assert replies[3]["error"]["code"] == "bad_json"
    assert [replies[k]["tid"] for k in (0, 2, 4)] == ["tcp1-1", "tcp1-2", "tcp1-3"]
    assert replies[5]["error"]["code"] == "hook_failed" and "boom" in replies[5]["error"]["message"]
    assert "events" in replies[6]["stats"]
    assert replies[7] == {"ok": True, "tid": replies[7]["tid"]}
    assert replies[8]["error"]["code"] == "unknown_op"


def test_nul_framing_of_riggerlib_1(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        raw.send(b'{"hook_name": "count", "data": {"i": 5}}\0{"op": "ping"}\0')
        assert raw.reply()["ok"] is True
        assert raw.reply() == {"ok": True}


def test_half_closed_client_gets_its_replies_like_nc(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        raw.send(b'{"op": "ping"}\n{"hook_name": "count", "data": {"i": 7}, "grab_result": true}')
        raw.sock.shutdown(socket.SHUT_WR)  # the last message has no newline: EOF ends it
        assert raw.reply() == {"ok": True}
        assert raw.reply()["output"]["i"] == 7
        assert raw.wait_closed() == b""


def test_output_not_json_serialisable_is_an_error_reply(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        reply = raw.request({"hook_name": "opaque", "grab_result": True})
        assert reply["ok"] is False and reply["tid"]
        assert reply["error"]["code"] == "not_serializable"
        assert "'handle'" in reply["error"]["message"]
        assert raw.request({"op": "ping"}) == {"ok": True}  # same connection still served


def test_task_status_reports_done_failed_and_unknown(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        done = raw.request({"hook_name": "count", "data": {"i": 1}})["tid"]
        failed = raw.request({"hook_name": "fail"})["tid"]
        raw.request({"hook_name": "count", "wait_for_task": True})  # both ran before this
        assert raw.request({"op": "task_status", "tid": done}) == {
            "ok": True,
            "tid": done,
            "status": "done",
        }
        status = raw.request({"op": "task_status", "tid": failed})
        assert status["status"] == "failed" and status["error"]["code"] == "hook_failed"
        unknown = raw.request({"op": "task_status", "tid": "999999"})
        assert unknown["ok"] is False and unknown["error"]["code"] == "unknown_task"


def test_task_status_of_a_queued_and_a_running_event(rigger: Rigger) -> None:
    plugin = counter(rigger)
    with Raw(port_of(rigger)) as raw:
        running = raw.request({"hook_name": "block"})["tid"]
        queued = raw.request({"hook_name": "count"})["tid"]
        assert plugin.entered.wait(WAIT)
        assert raw.request({"op": "task_status", "tid": running})["status"] == "running"
        assert raw.request({"op": "task_status", "tid": queued})["status"] == "queued"
        plugin.release.set()


def test_stats_op_returns_the_dispatcher_stats_and_server_counters(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        raw.request({"hook_name": "count", "wait_for_task": True})
        stats = raw.request({"op": "stats"})["stats"]
    assert stats["events"]["accepted"] >= 1
    assert stats["server"]["port"] == rigger.server_port
    assert stats["server"]["process"]["connections_open"] >= 1


# -- bad input: each followed by a good request on a fresh connection --------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{this is not json\n", "bad_json"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b"12\n", "bad_request"),
        (b'{"data": {"x": 1}}\n', "bad_request"),
        (b'{"hook_name": 12}\n', "bad_request"),
        (b'{"hook_name": ["a"]}\n', "bad_request"),
        (b'{"hook_name": "count", "data": "x"}\n', "bad_request"),
        (b'{"hook_name": "count", "data": [1]}\n', "bad_request"),
        (b'{"op": "launch"}\n', "unknown_op"),
        (b'\xc3\x28{"hook_name": "count"}\n', "bad_json"),
    ],
)
def test_bad_message_gets_an_error_and_the_server_lives_on(
    rigger: Rigger, payload: bytes, code: str
) -> None:
    with Raw(port_of(rigger)) as raw:
        reply = raw.request(payload)
        assert reply["ok"] is False and reply["error"]["code"] == code
        assert raw.request({"op": "ping"}) == {"ok": True}
    ping_on_fresh_connection(rigger)


def test_random_binary_gets_errors_and_the_server_lives_on() -> None:
    # Past max_protocol_errors a connection is closed (see test_hostile_server): raised here.
    rigger = make_rigger(idle_timeout=0.5, max_protocol_errors=1_000_000)
    noise = os.urandom(64 * 1024)
    try:
        with Raw(port_of(rigger)) as raw:
            raw.send(noise + b'\n{"op": "ping"}\n')
            while True:  # every frame of noise is answered with an error, then the ping
                reply = raw.reply()
                if reply["ok"]:
                    break
                assert reply["error"]["code"] in ("bad_json", "bad_request", "too_large")
        ping_on_fresh_connection(rigger)
    finally:
        rigger.stop()


def test_too_large_message_is_refused_then_the_connection_closed() -> None:
    rigger = make_rigger(max_message_bytes=1000)
    try:
        with Raw(port_of(rigger)) as raw:
            raw.send(b'{"op": "ping"}\n{"hook_name": "count", "data": {"x": "' + b"a" * 5000)
            assert raw.reply() == {"ok": True}
            assert raw.reply()["error"]["code"] == "too_large"
            assert raw.wait_closed() == b""
        with Raw(port_of(rigger)) as raw:  # a complete but oversized frame, too
            raw.send(b'{"hook_name": "count", "data": {"x": "' + b"a" * 2000 + b'"}}\n')
            assert raw.reply()["error"]["code"] == "too_large"
            assert raw.wait_closed() == b""
        ping_on_fresh_connection(rigger)
    finally:
        rigger.stop()


def test_client_that_says_nothing_is_closed_after_idle_timeout(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        started = time.monotonic()
        assert raw.wait_closed() == b""
        elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 10, elapsed
    ping_on_fresh_connection(rigger)


def test_slowloris_is_closed_while_others_are_served(rigger: Rigger) -> None:
    message = b'{"hook_name": "count", "data": {"c": "slow", "i": 0, "pad": "xxxxxxxxxxxx"}}\n'
    with Raw(port_of(rigger)) as slow:
        closed = False
        started = time.monotonic()
        for byte in message:  # bounded: one byte per 0.1 s, idle_timeout is 0.5 s
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            ping_on_fresh_connection(rigger)  # others are served meanwhile
            time.sleep(0.1)  # pacing the slow sender is the behaviour under test
        if not closed:
            assert slow.wait_closed() == b""
    assert time.monotonic() - started < 8
    assert counter(rigger).seen[("slow", 0)] == 0
    ping_on_fresh_connection(rigger)


def test_client_leaving_while_waiting_for_grab_result(rigger: Rigger) -> None:
    plugin = counter(rigger)
    with Raw(port_of(rigger)) as raw:
        raw.send({"hook_name": "block", "grab_result": True})
        assert plugin.entered.wait(WAIT)
    plugin.release.set()
    with Raw(port_of(rigger)) as raw:
        # Runs after the blocked event, whose reply the server has dropped by now.
        assert raw.request({"hook_name": "count", "wait_for_task": True})["ok"]
        stats = raw.request({"op": "stats"})["stats"]
    assert stats["server"]["process"]["waiting_on_main"] == 0
    ping_on_fresh_connection(rigger)


def test_thousands_of_connections_opened_and_dropped(rigger: Rigger) -> None:
    port = port_of(rigger)
    for round_ in range(15):  # 15 x 200 = 3,000 connections
        socks = [socket.create_connection((HOST, port), timeout=WAIT) for _ in range(200)]
        for n, sock in enumerate(socks):
            if n % 3 == 1:
                sock.sendall(b'{"hook_name": "count", "data": {"c": %d}}\n' % round_)
            elif n % 3 == 2:
                sock.sendall(b'{"hook_name": "cou')
            if n % 2:  # a reset instead of a clean close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            sock.close()
    ping_on_fresh_connection(rigger)
    with Raw(port) as raw:
        stats = raw.request({"op": "stats"})["stats"]
    assert stats["server"]["process"]["connections_total"] >= 3000
    assert stats["server"]["process"]["connections_open"] < 50


# -- who may fire ------------------------------------------------------------------------


def test_token_is_enforced() -> None:
    rigger = make_rigger(server_token="s3cret")
    try:
        with Raw(port_of(rigger)) as raw:
            for msg in (
                {"hook_name": "count"},
                {"op": "ping"},
                {"op": "stats"},
                {"op": "terminate"},
            ):
                assert raw.request(msg)["error"]["code"] == "unauthorized"
            assert raw.request({"op": "auth", "token": "wrong"})["error"]["code"] == "unauthorized"
            assert raw.request({"op": "auth", "token": "s3cret"}) == {"ok": True}
            assert raw.request({"hook_name": "count", "data": {"c": "auth"}, "wait_for_task": True})
        assert counter(rigger).seen == {("auth", None): 1}
        assert rigger.running
    finally:
        rigger.stop()


def test_terminate_drains_then_stops_the_dispatcher() -> None:
    rigger = make_rigger()
    pid = server_pid(rigger)
    with Raw(port_of(rigger)) as raw:
        raw.send(b"".join(b'{"hook_name":"count","data":{"i":%d}}\n' % i for i in range(2000)))
        raw.send({"op": "terminate"})
        replies = [raw.reply() for _ in range(2001)]
        assert replies[-1] == {"ok": True}
        assert raw.wait_closed() == b""
    assert rigger.wait_stopped(WAIT)
    assert not rigger.running
    assert sum(counter(rigger).seen.values()) == 2000
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# -- faults --------------------------------------------------------------------------------


def test_sigkilled_server_comes_back_and_accepted_events_are_kept(
    rigger: Rigger, caplog: pytest.LogCaptureFixture
) -> None:
    port = port_of(rigger)
    client = RiggerClient(HOST, port)
    tids = client.fire_many(("count", {"c": "before", "i": i}) for i in range(3000))
    old = server_pid(rigger)
    with caplog.at_level(logging.WARNING, logger="rigger_mp"):
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        assert client.ping()  # reconnects; waits in the backlog until the new one accepts
        back = time.monotonic() - killed
        assert client.fire_hook("count", wait_for_task=True, c="after")
    assert back < 5, back
    assert any("died" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    new = server_pid(rigger)
    assert new != old and rigger.server_port == port
    assert rigger.stats()["server"]["restarts"] == 1
    seen = counter(rigger).seen
    assert len(tids) == 3000 and all(seen[("before", i)] == 1 for i in range(3000))
    assert seen[("after", None)] == 1
    client.close()


def test_a_stopped_server_process_does_not_stall_the_events(rigger: Rigger) -> None:
    plugin = counter(rigger)
    pid = server_pid(rigger)
    pad = "x" * 300_000  # its output is a reply far larger than the reply pipe holds
    with Raw(port_of(rigger)) as raw:
        raw.send({"hook_name": "block", "data": {"pad": pad}, "grab_result": True})
        assert plugin.entered.wait(WAIT)
        os.kill(pid, signal.SIGSTOP)
        try:
            plugin.release.set()  # the event ends; its reply cannot be written for now
            assert rigger.fire_hook("count", c="local").result(WAIT)["counted"]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert raw.reply()["output"]["pad"] == pad


def test_server_exits_when_the_main_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from rigger_mp import Rigger
            r = Rigger({"server_enabled": True, "server_port": 0}).start()
            print(r.server_port, r.stats()["server"]["pid"], flush=True)
            sys.stdin.readline()
            """
        )
    )
    main = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert main.stdout is not None
        port, pid = (int(x) for x in main.stdout.readline().split())
        server = psutil.Process(pid)
        with RiggerClient(HOST, port) as client:
            assert client.ping()
        main.kill()
        main.wait(WAIT)
        server.wait(WAIT)  # raises psutil.TimeoutExpired if it outlived its parent
    finally:
        main.kill()
        main.wait()
        if main.stdin is not None:
            main.stdin.close()
        if main.stdout is not None:
            main.stdout.close()


# -- load ------------------------------------------------------------------------------------


def test_200_concurrent_clients_each_fire_500_events_exactly_once() -> None:
    rigger = make_rigger()
    processes, per_process, events = 4, 50, 500
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "_client_process.py"),
                str(port_of(rigger)),
                str(n * per_process),
                str(per_process),
                str(events),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for proc in procs:  # all 200 connections are open before anyone fires
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with Raw(port_of(rigger)) as raw:
            stats = raw.request({"op": "stats"})["stats"]
        assert stats["server"]["process"]["connections_open"] >= processes * per_process
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        acked: dict[str, int] = {}
        for proc in procs:
            assert proc.stdout is not None
            acked.update(json.loads(proc.stdout.readline()))
            assert proc.wait(120) == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        rigger.stop()
    assert len(acked) == processes * per_process and set(acked.values()) == {events}
    seen = counter(rigger).seen
    assert len(seen) == 100_000
    assert set(seen.values()) == {1}
    assert seen.keys() == {(c, i) for c in range(200) for i in range(events)}


def test_concurrent_clients_from_threads_do_not_mix_replies(rigger: Rigger) -> None:
    port = port_of(rigger)
    errors: list[BaseException] = []

    def run(cid: int) -> None:
        try:
            with RiggerClient(HOST, port) as client:
                for i in range(50):
                    out = client.fire_hook("count", grab_result=True, c=cid, i=i)
                    assert out["c"] == cid and out["i"] == i
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(cid,)) for cid in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


def test_intake_stops_reading_while_too_many_events_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rigger_mp.server import intake

    monkeypatch.setattr(intake, "MAX_BACKLOG", 200)
    rigger = make_rigger()
    plugin = counter(rigger)
    try:
        rigger.fire_hook("block")
        assert plugin.entered.wait(WAIT)
        total = 20_000
        done = threading.Event()

        def flood() -> None:
            with RiggerClient(HOST, port_of(rigger)) as client:
                client.fire_many(("count", {"i": i}) for i in range(total))
            done.set()

        thread = threading.Thread(target=flood)
        thread.start()
        # With the event thread held, acks stop once the backlog is full: without the
        # bound, all 20,000 would be accepted (and queued in memory) within this wait.
        assert not done.wait(3.0)
        stats = rigger.stats()
        assert stats["server"]["intake_pauses"] >= 1
        assert stats["events"]["accepted"] < total
        plugin.release.set()
        thread.join(WAIT)
        assert done.is_set()
        assert rigger.wait_background(WAIT)
        assert sum(plugin.seen.values()) == total
    finally:
        plugin.release.set()
        rigger.stop()


def test_a_held_reply_stops_reading_from_its_connection(rigger: Rigger) -> None:
    from rigger_mp.server.connection import MAX_OWED

    plugin = counter(rigger)
    pings = max(MAX_OWED * 10, 1_000_000)  # more than the socket buffers both ways hold
    payload = b'{"op":"ping"}\n' * pings
    with Raw(port_of(rigger)) as raw:
        raw.send({"hook_name": "block", "grab_result": True})
        assert plugin.entered.wait(WAIT)
        # Every ping's reply waits behind the held grab_result: the server must stop
        # reading this connection rather than hold them all in memory, so the sends block.
        raw.sock.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while sent < len(payload):
                sent += raw.sock.send(payload[sent:])
        assert sent < len(payload)
        plugin.release.set()
        raw.sock.setblocking(True)
        raw.sock.settimeout(WAIT)
        reader = threading.Thread(target=raw.sock.sendall, args=(payload[sent:],))
        reader.start()
        data, lines_read = bytearray(), 0
        while lines_read < pings + 1:
            chunk = raw.sock.recv(1 << 20)
            assert chunk
            data += chunk
            lines_read += chunk.count(b"\n")
        reader.join()
    lines = bytes(data).split(b"\n")
    assert json.loads(lines[0])["ok"] is True and "output" in json.loads(lines[0])
    assert set(lines[1 : pings + 1]) == {lines[1]} and json.loads(lines[1]) == {"ok": True}
