"""Helpers of the live run view's tests: test events sent in bulk, a stream read by hand."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterable
from typing import Any

from ._tcp import HOST, WAIT


def send_all(port: int, events: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Fire ``events`` (name, data) over one TCP connection, pipelined: written by a
    thread while this one reads the replies; the number acked (each one must be)."""
    lines = [
        json.dumps({"hook_name": name, "data": data}).encode() + b"\n" for name, data in events
    ]
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    writer = threading.Thread(target=sock.sendall, args=(b"".join(lines),))
    writer.start()
    acked, buf = 0, b""
    try:
        while acked < len(lines):
            data = sock.recv(1 << 20)
            assert data, "the server closed the connection"
            buf += data
            *done, buf = buf.split(b"\n")
            for line in done:
                assert json.loads(line)["ok"], line[:300]
            acked += len(done)
    finally:
        writer.join(WAIT)
        sock.close()
    return acked


def finish(
    run_id: str, name: str, outcome: str = "passed", **more: Any
) -> tuple[str, dict[str, Any]]:
    """A ``finish_test`` as the pytest plugin sends one."""
    data = {
        "run_id": run_id,
        "test_name": name,
        "test_location": "tests/test_big.py",
        "test_result": outcome,
        "outcome": outcome,
        "duration": 0.01,
        "worker": "gw0",
        "host": "h1",
        **more,
    }
    return "finish_test", data


class Stream:
    """``GET /live/stream`` on a bare socket: its events read as they come."""

    def __init__(self, port: int, token: str | None = None, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connecting, so that the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect((HOST, port))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.sock.sendall(
            f"GET /live/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\n{auth}\r\n".encode()
        )
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    def _until(self, mark: bytes) -> bytes:
        while mark not in self.buf:
            data = self.sock.recv(65536)
            assert data, f"closed; unread: {self.buf[:300]!r}"
            self.buf += data
        part, self.buf = self.buf.split(mark, 1)
        return part

    def event(self) -> tuple[str, dict[str, Any]]:
        """The next event: one chunk of the chunked response each."""
        size = int(self._until(b"\r\n"), 16)
        while len(self.buf) < size + 2:
            data = self.sock.recv(65536)
            assert data, "closed inside a chunk"
            self.buf += data
        chunk, self.buf = self.buf[:size], self.buf[size + 2 :]
        fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
        return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.sock.close()
