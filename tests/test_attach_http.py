"""``PUT /attach``: an upload over the HTTP front, bounded and checked as over TCP."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ._http import Http, http_port
from ._tcp import HOST
from .test_attach import MIB, files_under, serving

OCTETS = {"Content-Type": "application/octet-stream"}


def query(name: str, **extra: str) -> str:
    fields = {"run_id": "r", "test_location": "t/a.py", "test_name": "test_b", "name": name}
    return "/attach?" + urlencode({**fields, **extra})


def put(http: Http, name: str, body: bytes, **headers: str) -> tuple[int, Any, Any]:
    status, data, sent = http.raw("PUT", query(name), body, {**OCTETS, **headers})
    return status, json.loads(data), sent


def test_a_put_streams_the_body_into_the_tests_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = serving(root, http_address=HOST, http_port=0)
    body = os.urandom(5 * MIB)
    try:
        with Http(http_port(rigger)) as http:
            status, reply, _ = put(http, "shots/a.png", body)
            assert status == 200, reply
            assert reply == {
                "ok": True,
                "path": "r/t/a.py/test_b/shots/a.png",
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
            status, reply, _ = put(http, "b.txt", b"")  # and again on the same connection
            assert status == 200 and reply["size"] == 0
    finally:
        rigger.stop()
    assert (root / "r/t/a.py/test_b/shots/a.png").read_bytes() == body
    assert files_under(root / "r/t/a.py/test_b") == ["b.txt", "shots", "shots/a.png"]


def test_put_attach_refusals_close_the_connection(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = serving(root, http_address=HOST, http_port=0, max_attach_bytes=100)
    try:
        port = http_port(rigger)
        with Http(port) as http:
            status, reply, sent = put(http, "a.bin", b"x" * 101)
            assert (status, reply["error"]["code"]) == (413, "too_large")
            assert sent["Connection"] == "close"
        with Http(port) as http:
            status, reply, _ = put(http, "../a.bin", b"x")
            assert (status, reply["error"]["code"]) == (400, "bad_request")
        with Http(port) as http:
            status, data, _ = http.raw("PUT", query("a.bin"), b"x", {})
            assert status == 400 and b"application/octet-stream" in data
        with Http(port) as http:
            status, data, _ = http.raw("POST", query("a.bin"), b"x", OCTETS)
            assert status == 405
        with Http(port) as http:
            status, reply, _ = put(http, "a.bin", b"x", Origin="http://evil.example")
            assert (status, reply["error"]["code"]) == (403, "bad_origin")
    finally:
        rigger.stop()
    assert files_under(root) == []


def test_put_attach_needs_the_token(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = serving(root, http_address=HOST, http_port=0, server_token="s3cret")
    try:
        with Http(http_port(rigger)) as http:
            status, reply, _ = put(http, "a.bin", b"x")
            assert (status, reply["error"]["code"]) == (401, "unauthorized")
        with Http(http_port(rigger), token="s3cret") as http:
            status, reply, _ = put(http, "a.bin", b"x")
            assert status == 200 and reply["size"] == 1
    finally:
        rigger.stop()
    assert files_under(root / "r/t/a.py/test_b") == ["a.bin"]


def test_a_put_cut_mid_body_leaves_no_file_and_no_temporary_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = serving(root, http_address=HOST, http_port=0)
    try:
        port = http_port(rigger)
        head = (
            f"PUT {query('cut.bin')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {10 * MIB}\r\n\r\n"
        )
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(head.encode() + b"x" * MIB)
        with Http(port) as http:  # the front goes on serving
            status, reply, _ = put(http, "after.bin", b"ok")
            assert status == 200, reply
    finally:
        rigger.stop()  # the server process ends once its writer threads have cleaned up
    assert files_under(root / "r/t/a.py/test_b") == ["after.bin"]
