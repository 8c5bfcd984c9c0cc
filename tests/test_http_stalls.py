"""Stalled HTTP requests: closed after ``idle_timeout``, and never able to keep a new
client out (real sockets whose headers or bodies never end)."""

from __future__ import annotations

import json
import socket

from ._http import Http, http_port, make_http_rigger  # skips loudly without the http extra
from ._tcp import HOST, WAIT, counter

HEAD = "POST /fire HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
STALLS = {
    "headers": "POST /fire HTTP/1.1\r\nHost: {host}\r\nContent-Ty",
    "short body": HEAD + 'Content-Length: 100\r\n\r\n{{"hook_name": "co',
    "chunked": HEAD + 'Transfer-Encoding: chunked\r\n\r\n5\r\n{{"hoo',
}


def stalled(port: int, kind: str) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    sock.sendall(STALLS[kind].format(host=f"{HOST}:{port}").encode())
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (WAIT at most)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_requests_whose_headers_or_body_never_end_are_closed() -> None:
    rigger = make_http_rigger(idle_timeout=1)
    try:
        port = http_port(rigger)
        socks = {kind: stalled(port, kind) for kind in STALLS}
        try:
            for kind, sock in socks.items():
                assert read_to_close(sock) == b"", kind  # closed, without a reply
        finally:
            for sock in socks.values():
                sock.close()
        with Http(port) as client:
            http = client.stats()["server"]["http"]
        assert http["timed_out"] == len(STALLS) and http["evicted"] == 0
        assert rigger.stats()["events"]["accepted"] == 0
    finally:
        rigger.stop()


def fire_body(c: str) -> bytes:
    return json.dumps({"hook_name": "count", "data": {"c": c}, "wait_for_task": True}).encode()


def test_a_full_table_of_stalled_bodies_does_not_keep_a_new_client_out() -> None:
    rigger = make_http_rigger()  # http_max_connections 256, idle_timeout 300 s
    socks: list[socket.socket] = []
    try:
        port = http_port(rigger)
        socks = [stalled(port, "chunked" if i % 2 else "short body") for i in range(256)]
        with Http(port) as client:  # the 257th connection
            status, page, _ = client.raw("GET", "/")
            assert status == 200 and b"live.js" in page
            status, body, _ = client.raw("POST", "/fire", fire_body("new"))
            assert (status, json.loads(body)["ok"]) == (200, True)
            http = client.stats()["server"]["http"]
        assert counter(rigger).seen[("new", None)] == 1
        assert http["connections_open"] == 256 and http["evicted"] == 1
        assert http["refused"] == 0
        # One stalled connection made room (which one: whichever the server saw waiting
        # on its client the longest, by the order it read them in).
        assert sum(_closed_now(s) for s in socks) == 1
    finally:
        for sock in socks:
            sock.close()
        rigger.stop()


def _closed_now(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` (an evicted one is closed before the new
    client's first reply is written, so nothing needs waiting for here)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_request_the_dispatcher_is_working_on_is_never_dropped_for_a_new_client() -> None:
    rigger = make_http_rigger(http_max_connections=1)
    plugin = counter(rigger)
    try:
        port = http_port(rigger)
        busy = socket.create_connection((HOST, port), timeout=WAIT)
        body = json.dumps({"hook_name": "block", "data": {}, "wait_for_task": True}).encode()
        head = HEAD.format(host=f"{HOST}:{port}") + f"Content-Length: {len(body)}\r\n\r\n"
        busy.sendall(head.encode() + body)
        assert plugin.entered.wait(WAIT)  # its hook runs: the connection waits on us
        with Http(port) as client:
            status, reply = client.json("GET", "/stats")
        assert (status, reply["error"]["code"]) == (503, "too_many_connections")
        plugin.release.set()
        with busy, busy.makefile("rb") as stream:
            assert stream.readline().startswith(b"HTTP/1.1 200 ")
    finally:
        plugin.release.set()
        rigger.stop()
