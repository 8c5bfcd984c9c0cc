"""aiohttp's per-request error records go through the server's throttle: a flood of
malformed requests writes one record per window, with a count, and no tracebacks."""

from __future__ import annotations

import logging
import socket

import pytest

from rigger_mp.server.http_noise import Noise

from ._http import http_port, make_http_rigger  # skips loudly without the http extra
from ._tcp import HOST, WAIT

MALFORMED = b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n"
N = 300


def malformed(port: int) -> bytes:
    with socket.create_connection((HOST, port), timeout=WAIT) as sock:
        sock.sendall(MALFORMED)
        with sock.makefile("rb") as stream:
            return stream.read()  # aiohttp answers 400 and closes, after logging


def test_a_flood_of_malformed_requests_logs_one_record(capfd: pytest.CaptureFixture[str]) -> None:
    rigger = make_http_rigger()
    try:
        port = http_port(rigger)
        for _ in range(N):
            assert malformed(port).startswith(b"HTTP/1.0 400 Bad Request")
    finally:
        rigger.stop()
    err = capfd.readouterr().err  # the server process's stderr is this process's
    records = [line for line in err.splitlines() if "HTTP: a malformed request" in line]
    assert len(records) == 1, err[-3000:]
    assert "Traceback" not in err and len(err) < 2000, err[-3000:]


def test_the_next_record_counts_the_ones_held_back(caplog: pytest.LogCaptureFixture) -> None:
    noise = Noise()
    with caplog.at_level(logging.DEBUG, logger="rigger_mp.server"):
        for _ in range(N):
            try:
                raise ValueError("a bug on this side")
            except ValueError:
                noise.exception("Error handling request from %s", "127.0.0.1")
        noise.debug("Ignored premature client disconnection")  # dropped, as aiohttp means
        noise.failed.next = 0.0  # the window is over
        noise.exception("Error handling request from %s", "127.0.0.1")
    records = [r for r in caplog.records if r.name == "rigger_mp.server"]
    assert len(records) == 2
    assert records[0].exc_info is not None  # the first of its window has the traceback
    assert "Error handling request from 127.0.0.1" in records[0].getMessage()
    assert f"({N - 1} more like it in the last 10 s)" in records[1].getMessage()
