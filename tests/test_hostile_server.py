"""Hostile clients against the server process's bounds (issue #11), one test per bound.

Each attack runs on real loopback sockets and is followed by a fresh client's ``ping``.
Waits are on sockets, threads and processes; where an absence must be shown (no reply
while the server holds too many reply bytes) a bounded ``select`` looks for it.
"""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from rigger_mp import protocol as proto
from tests._tcp import HOST, WAIT, Raw, counter, make_rigger, port_of
from tests.conftest import Dispatchers, assert_processes_gone
from tests.test_cli import SERVING, env

TOKEN = "s3cret"


def assert_served(port: int, token: str | None = None) -> None:
    """The check after every attack: a new client is served and ``ping`` answers."""
    with Raw(port) as raw:
        if token is not None:
            assert raw.request({"op": "auth", "token": token}) == {"ok": True}
        assert raw.request({"op": "ping"}) == {"ok": True}


def server_stats(port: int, token: str | None = None) -> dict[str, Any]:
    """The server process's own counters, asked on a fresh connection."""
    with Raw(port) as raw:
        if token is not None:
            raw.request({"op": "auth", "token": token})
        stats: dict[str, Any] = raw.request({"op": "stats"})["stats"]["server"]["process"]
        return stats


@pytest.fixture
def riggers(dispatchers: Dispatchers) -> Dispatchers:
    """Riggers a test starts (with its own config), stopped after it."""
    return dispatchers


def start(riggers: Dispatchers, **config: Any) -> int:
    return port_of(riggers.add(make_rigger(**config)))


def wait_peer_gone(sock: socket.socket, timeout: float = WAIT) -> bool:
    """Whether the server closed or reset ``sock`` (without reading what it sent)."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(timeout * 1000))


def small_window(port: int) -> socket.socket:
    """A client with a tiny receive buffer: replies it leaves unread back up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, port))
    return sock


# -- 1. max_connections; out of file descriptors --------------------------------------------


def test_past_max_connections_a_client_gets_busy_and_is_closed(riggers: Dispatchers) -> None:
    port = start(riggers, max_connections=3)
    held = [Raw(port) for _ in range(3)]
    try:
        for raw in held:  # each is served: all three are open in the server
            assert raw.request({"op": "ping"}) == {"ok": True}
        with Raw(port) as extra:
            rest = extra.wait_closed()
        reply = json.loads(rest)
        assert reply["ok"] is False and reply["error"]["code"] == proto.BUSY
        assert "max_connections (3)" in reply["error"]["message"]
    finally:
        gone = held.pop()
        gone.sock.shutdown(socket.SHUT_WR)
        gone.wait_closed()  # the server has closed it: the count is down
        gone.close()
    # One closed: a new client is served; those still open still are.
    assert_served(port)
    for raw in held:
        assert raw.request({"op": "ping"}) == {"ok": True}
        raw.close()


class LowFdServe:
    """``rigger-mp serve`` under ``ulimit -n LIMIT`` (its server process inherits it)."""

    def __init__(self, tmp_path: Path, limit: int, config: str) -> None:
        (tmp_path / "config.yaml").write_text(config)

        def lower() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rigger_mp", "serve", "--port", "0", "-c", "config.yaml"],
            env=env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=lower,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        first = self.proc.stdout.readline().decode()
        match = SERVING.match(first)
        assert match is not None, first
        self.port = int(match["port"])
        self.children = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        self.stderr = self.proc.stderr

    def finish(self) -> bytes:
        """Terminate (a TCP ``terminate``), wait; return all of stderr."""
        with Raw(self.port) as raw:
            assert raw.request({"op": "terminate"})["ok"] is True
        _, err = self.proc.communicate(timeout=WAIT)
        assert self.proc.returncode == 0, err[-2000:]
        assert_processes_gone(self.children)
        return err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        assert_processes_gone(self.children)


def test_out_of_file_descriptors_logs_once_pauses_and_serves_again(tmp_path: Path) -> None:
    """Past the fd limit, one warning (not a traceback per waiting client) and accepting
    waits for a connection to close; then everyone is served."""
    served = LowFdServe(tmp_path, 64, "max_connections: 100000\nworkers: 1\n")
    socks: list[socket.socket] = []
    try:
        first = Raw(served.port)
        assert first.request({"op": "ping"}) == {"ok": True}
        # 150 more than the server process has fds: most wait in the backlog.
        socks = [socket.create_connection((HOST, served.port)) for _ in range(150)]
        for line in served.stderr:  # blocks until the server says it ran out
            if b"out of" in line:
                break
        assert b"file descriptors" in line, line
        for sock in socks:
            sock.close()
        socks = []
        assert first.request({"op": "ping"}) == {"ok": True}
        assert_served(served.port)
        stats = server_stats(served.port)
        assert stats["accept_pauses"] >= 1
        first.close()
        err = line + served.finish()
    finally:
        for sock in socks:
            sock.close()
        served.kill()
    assert err.count(b"Traceback") == 0, err[:3000]
    assert len(err) < 20_000, err[:3000]


def test_by_default_max_connections_stays_below_the_fd_limit(tmp_path: Path) -> None:
    """With ``ulimit -n 64`` the default is 32 connections: clients past it get ``busy``;
    the server never runs out of file descriptors."""
    served = LowFdServe(tmp_path, 64, "workers: 1\n")
    socks: list[socket.socket] = []
    try:
        socks = [socket.create_connection((HOST, served.port)) for _ in range(100)]
        for sock in socks:
            sock.sendall(b'{"op": "ping"}\n')
        codes = []
        for sock in socks:
            reply = _as_raw(sock).reply()
            codes.append("ok" if reply["ok"] else reply["error"]["code"])
        assert codes.count("ok") == 32 and codes.count(proto.BUSY) == 68
        for sock in socks:  # wait until the server has closed each one: the count is down
            with contextlib.suppress(OSError):  # a busy one may be reset already
                sock.shutdown(socket.SHUT_WR)
                _as_raw(sock).wait_closed()
            sock.close()
        socks = []
        assert_served(served.port)
        stats = server_stats(served.port)
        assert stats["max_connections"] == 32 and stats["accept_pauses"] == 0
        err = served.finish()
    finally:
        for sock in socks:
            sock.close()
        served.kill()
    assert b"out of" not in err and b"Traceback" not in err, err[:3000]


# -- 2. a client that does not read its replies ----------------------------------------------


def test_a_client_that_never_reads_is_aborted_after_drain_timeout(riggers: Dispatchers) -> None:
    port = start(riggers, drain_timeout=0.5, max_protocol_errors=10**9)
    sock = small_window(port)
    try:
        # ~10 MB of replies it never reads (more than the kernel's buffers hold): the
        # server stops reading it, then aborts it.
        sender = threading.Thread(target=_send_quietly, args=(sock, b"x\n" * 100_000))
        sender.start()
        assert wait_peer_gone(sock), "the non-reading client was never closed"
        sender.join(WAIT)
    finally:
        sock.close()
    assert_served(port)
    assert server_stats(port)["errors"]["drain_timeout"] == 1


def test_a_closed_connection_with_unread_replies_is_aborted_too(riggers: Dispatchers) -> None:
    """``transport.close`` waits for the client to read: the drain deadline bounds that.
    Here the server closes it (no auth in time) while ~10 MB of replies are unread."""
    port = start(
        riggers,
        server_token=TOKEN,
        auth_timeout=0.3,
        drain_timeout=1.0,
        max_protocol_errors=10**9,
    )
    sock = small_window(port)
    sender = threading.Thread(target=_send_quietly, args=(sock, b"x\n" * 100_000))
    sender.start()
    try:
        assert wait_peer_gone(sock), "closed, but the socket stayed open"
        sender.join(WAIT)
    finally:
        sock.close()
    assert_served(port, TOKEN)
    errors = server_stats(port, TOKEN)["errors"]
    # Usually aborted by the drain deadline; on a loaded machine the server may have
    # read so little by then that the kernel took every reply, and closing a socket
    # with unread input resets it at once.
    assert errors["auth_timeout"] == 1 and errors.get("drain_timeout", 0) <= 1


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server aborted us: that is the point
        sock.sendall(data)


# -- 3. unauthenticated connections, wrong tokens, errors -------------------------------------


def test_no_auth_within_auth_timeout_closes_the_connection(riggers: Dispatchers) -> None:
    port = start(riggers, server_token=TOKEN, auth_timeout=0.5)
    with Raw(port) as raw:
        raw.send(b"\n")  # a blank line is no auth
        rest = raw.wait_closed()
    reply = json.loads(rest)
    assert reply["error"]["code"] == proto.UNAUTHORIZED
    assert "auth_timeout" in reply["error"]["message"]
    assert_served(port, TOKEN)


def test_blank_and_refused_lines_do_not_keep_a_connection_alive(riggers: Dispatchers) -> None:
    port = start(riggers, idle_timeout=0.5, max_protocol_errors=1_000_000)
    done = threading.Event()
    with Raw(port) as raw:

        def keep_alive() -> None:  # a blank line and a bad one, 20 times a second
            try:
                while not done.wait(0.05):  # pacing, not waiting for anything
                    raw.sock.sendall(b"\n  \r\nx\n")
            except OSError:
                pass

        sender = threading.Thread(target=keep_alive)
        sender.start()
        try:
            rest = raw.wait_closed()  # before the fix: the Raw timeout (30 s) fires
        finally:
            done.set()
            sender.join(WAIT)
    assert all(json.loads(line)["error"]["code"] == proto.BAD_JSON for line in rest.splitlines())
    assert_served(port)
    assert server_stats(port)["errors"]["idle_timeout"] == 1


def test_max_auth_failures_then_the_connection_is_closed(riggers: Dispatchers) -> None:
    port = start(riggers, server_token=TOKEN, max_auth_failures=5)
    with Raw(port) as raw:
        raw.send(b'{"op":"auth","token":"guess"}\n' * 10 + b'{"op":"ping"}\n')
        replies = [json.loads(line) for line in raw.wait_closed().splitlines()]
    assert [r["error"]["code"] for r in replies] == [proto.UNAUTHORIZED] * 5
    assert "max_auth_failures" in replies[-1]["error"]["message"]
    assert_served(port, TOKEN)


def test_max_protocol_errors_then_the_connection_is_closed(riggers: Dispatchers) -> None:
    port = start(riggers, max_protocol_errors=10)
    with Raw(port) as raw:
        raw.send(b'{"op":"ping"}\n' + b"x\n" * 50 + b'{"op":"ping"}\n')
        replies = [json.loads(line) for line in raw.wait_closed().splitlines()]
    assert replies[0] == {"ok": True}
    assert [r["error"]["code"] for r in replies[1:]] == [proto.BAD_JSON] * 10
    assert "max_protocol_errors" in replies[-1]["error"]["message"]
    assert_served(port)


# -- 4. fairness -------------------------------------------------------------------------------


class Flooder:
    """Sends tiny invalid messages without end and reads (and counts) the replies."""

    CHUNK = b"x\n" * 32_768

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.replies = 0
        self.stop = threading.Event()
        self.answered = threading.Event()
        self.sending = True
        self.threads = [threading.Thread(target=self._send), threading.Thread(target=self._read)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        try:
            while not self.stop.is_set():
                self.sock.sendall(self.CHUNK)
        except OSError:
            pass
        self.sending = False

    def _read(self) -> None:
        try:
            while data := self.sock.recv(1 << 20):
                self.replies += data.count(b"\n")
                self.answered.set()
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(WAIT)
        self.sock.close()


def test_flooding_clients_do_not_starve_a_ping(riggers: Dispatchers) -> None:
    """While 4 clients flood, a 5th one's ping is answered after at most a few turns'
    worth of flood messages (64 KB reads of 2-byte messages were once handled 32,768 at
    a time, per client per turn)."""
    port = start(riggers, max_protocol_errors=10**9)
    flooders = [Flooder(port) for _ in range(4)]
    try:
        for flooder in flooders:
            assert flooder.answered.wait(WAIT)
        with Raw(port) as raw:
            raw.send({"op": "ping"})
            before = sum(f.replies for f in flooders)
            assert raw.reply() == {"ok": True}
            during = sum(f.replies for f in flooders) - before
        assert all(f.sending for f in flooders), "a flood stopped before the ping was answered"
    finally:
        for flooder in flooders:
            flooder.close()
    assert during < 100_000, f"{during} flood messages were answered before the ping"
    assert_served(port)


# -- 5. exactly one reply per message -----------------------------------------------------------


def test_a_lone_surrogate_token_is_a_wrong_token_and_the_batch_is_answered(
    riggers: Dispatchers,
) -> None:
    port = start(riggers, server_token=TOKEN)
    with Raw(port) as raw:
        assert raw.request({"op": "auth", "token": TOKEN}) == {"ok": True}
        raw.send(
            b'{"hook_name":"count","data":{"c":"s"}}\n'
            b'{"op":"auth","token":"\\ud800"}\n'
            b'{"op":"ping"}\n'
        )
        fired = raw.reply()
        assert fired["ok"] is True and "tid" in fired
        assert raw.reply()["error"] == {"code": proto.UNAUTHORIZED, "message": "wrong token"}
        assert raw.reply() == {"ok": True}
    assert_served(port, TOKEN)


def nested_fire(depth: int, **extra: Any) -> bytes:
    inner = "[" * depth + "]" * depth
    keys = "".join(f',"{k}":{json.dumps(v)}' for k, v in extra.items())
    return ('{"hook_name":"count","data":{"x":' + inner + "}" + keys + "}\n").encode()


def test_a_message_that_cannot_be_forwarded_gets_its_own_error(riggers: Dispatchers) -> None:
    """A message parsed but too deep to pickle (max_json_depth raised past what pickle
    takes) is answered alone; the other messages of its read go on."""
    port = start(riggers, max_json_depth=900)
    rigger = riggers.started[-1]
    with Raw(port) as raw:
        raw.send(
            b'{"hook_name":"count","data":{"c":1}}\n'
            + nested_fire(600)
            + nested_fire(600, grab_result=True)
            + b'{"hook_name":"count","data":{"c":2}}\n{"op":"ping"}\n'
        )
        replies = [raw.reply() for _ in range(5)]
        assert raw.request({"hook_name": "count", "data": {"c": 3}, "wait_for_task": True})["ok"]
    assert [r["ok"] for r in replies] == [True, False, False, True, True]
    for reply in replies[1:3]:
        assert reply["error"]["code"] == proto.BAD_REQUEST
        assert "too deeply" in reply["error"]["message"]
    seen = counter(rigger).seen
    assert seen[(1, None)] == seen[(2, None)] == seen[(3, None)] == 1
    stats = server_stats(port)
    assert stats["waiting_on_main"] == 0  # no pending entry left for a stop to wait on
    assert_served(port)


def test_a_lost_connection_drops_the_replies_it_was_owed(riggers: Dispatchers) -> None:
    port = start(riggers)
    plugin = counter(riggers.started[-1])
    raw = Raw(port)
    raw.send({"hook_name": "block", "grab_result": True})
    assert plugin.entered.wait(WAIT)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    raw.close()  # a reset: the connection is lost, its reply has nowhere to go
    try:
        stats = server_stats(port)
        assert stats["waiting_on_main"] == 0
        assert stats["replies_dropped"] == 1
    finally:
        plugin.release.set()
    assert_served(port)


# -- 6. reply bytes buffered for all clients --------------------------------------------------


def test_too_many_buffered_reply_bytes_stop_reading_every_connection(
    riggers: Dispatchers,
) -> None:
    port = start(riggers, max_buffered_replies_bytes=65536, max_protocol_errors=10**9)
    hog = small_window(port)
    sender = threading.Thread(target=_send_quietly, args=(hog, b"x\n" * 100_000))
    sender.start()
    other = Raw(port)
    drained = threading.Thread(target=lambda: None)
    try:
        # The other client is served until the hog's unread replies pass the bound...
        for _ in range(100_000):
            other.send({"op": "ping"})
            if not select.select([other.sock], [], [], 2.0)[0]:
                break
            assert other.reply() == {"ok": True}
        else:
            pytest.fail("the server never stopped reading")
        # ... and again once the hog has read them.
        drained = threading.Thread(target=_as_raw(hog).wait_closed)
        drained.start()
        assert other.reply() == {"ok": True}
    finally:
        hog.shutdown(socket.SHUT_RDWR)
        sender.join(WAIT)
        drained.join(WAIT)
        hog.close()
        other.close()
    assert_served(port)
    assert server_stats(port)["replies_pauses"] >= 1


def _as_raw(sock: socket.socket) -> Raw:
    raw = Raw.__new__(Raw)
    raw.sock, raw.buf = sock, b""
    return raw


# -- 7. the parse limits come from the config -------------------------------------------------


def test_max_json_depth_and_max_hook_name_length_are_config_keys(riggers: Dispatchers) -> None:
    port = start(riggers, max_json_depth=4, max_hook_name_length=8)
    with Raw(port) as raw:
        reply = raw.request({"hook_name": "h" * 9})
        assert reply["error"]["code"] == proto.BAD_REQUEST
        assert "max_hook_name_length (8)" in reply["error"]["message"]
        assert raw.request({"hook_name": "h" * 8})["ok"] is True
        reply = raw.request({"hook_name": "count", "data": {"x": [[[]]]}})
        assert reply["error"]["code"] == proto.BAD_REQUEST
        assert "max_json_depth (4)" in reply["error"]["message"]
        assert raw.request({"hook_name": "count", "data": {"x": [[]]}})["ok"] is True
    assert_served(port)


def test_the_new_keys_are_validated() -> None:
    from rigger_mp.core.config import load_config
    from rigger_mp.errors import ConfigError

    for key, bad in [
        ("max_connections", 0),
        ("drain_timeout", 0),
        ("auth_timeout", -1),
        ("max_auth_failures", 0),
        ("max_protocol_errors", True),
        ("max_messages_per_turn", 0),
        ("max_buffered_replies_bytes", 100),
        ("max_json_depth", 5000),
        ("max_hook_name_length", 0),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_config({key: bad})
    assert load_config({"max_connections": None}).max_connections is None
