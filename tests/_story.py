"""A run with every kind of test row, fired as the pytest plugin fires it (the events'
contract), for the report and JUnit tests: pass, assertion failure with captured output
and attachments, fixture error, skip, xfail, xpass, a flaky test and its rerun, a long
parametrised name, a test that never finished; on two workers of two hosts."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from rigger_mp import Rigger

HOSTILE = "<script>alert(1)</script>&amp;\x1b[31m\x00"
LONG_NAME = "test_long[" + "-".join(f"param{i}" for i in range(30)) + "]"
FAILURE = (
    "def test_login():\n>       assert login('bob') == " + HOSTILE + "\n"
    "E       AssertionError: assert False\n\ntests/test_login.py:12: AssertionError"
)
ENVIRONMENT = {
    "python": "3.11.7",
    "platform": "Linux-6.1-x86_64",
    "pytest": "9.2.0",
    "plugins": {"xdist": "3.8.0", "rerunfailures": "16.7"},
    "command_line": ["-n", "2", "--rigger-config", "rigger.yaml", HOSTILE],
    "host": "ci-host-1",
    "worker": "main",
}


def png(width: int, height: int, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A small solid PNG."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def tests_of(root: Path, run_id: str) -> list[dict[str, Any]]:
    """The finish_test events of the run (the unfinished test has none)."""
    base = root / run_id / "tests"

    def where(location: str, name: str, worker: str, host: str) -> dict[str, Any]:
        return {
            "test_location": location,
            "test_name": name,
            "worker": worker,
            "host": host,
            "artifact_path": str(base / location.replace("tests/", "") / name),
        }

    return [
        {
            **where("tests/test_login.py", "test_ok", "gw0", "ci-host-1"),
            "test_result": "passed",
            "outcome": "passed",
            "duration": 0.25,
            "markers": ["slow"],
            "sections": [{"when": "call", "kind": "stdout", "text": "logged in as bob\n"}],
        },
        {
            **where("tests/test_login.py", "test_bad_password", "gw1", "ci-host-2"),
            "test_result": "failed",
            "outcome": "failed",
            "when": "call",
            "duration": 1.5,
            "longrepr": FAILURE,
            "crash": {"path": "tests/test_login.py", "line": 12, "message": "AssertionError"},
            "sections": [
                {"when": "call", "kind": "stdout", "text": "trying " + HOSTILE + "\n"},
                {"when": "call", "kind": "stderr", "text": "warning: slow backend\n"},
                {"when": "call", "kind": "log", "text": "INFO login: attempt 1\n"},
            ],
            "attachments": [
                {"name": "shots/login.png", "size": 200},
                {"name": "server.log", "size": 34},
            ],
            "markers": ["login", "smoke"],
        },
        {
            **where("tests/test_cart.py", "test_add", "gw0", "ci-host-1"),
            "test_result": "error",
            "outcome": "error",
            "when": "setup",
            "duration": 0.02,
            "longrepr": "fixture 'db' raised ConnectionRefusedError",
            "crash": {"path": "tests/conftest.py", "line": 7, "message": "ConnectionRefusedError"},
        },
        {
            **where("tests/test_cart.py", "test_remove", "gw1", "ci-host-2"),
            "test_result": "skipped",
            "outcome": "skipped",
            "duration": 0.001,
            "skip_reason": "needs a payment sandbox",
        },
        {
            **where("tests/test_cart.py", "test_discount", "gw0", "ci-host-1"),
            "test_result": "skipped",
            "outcome": "xfailed",
            "duration": 0.01,
            "skip_reason": "known bug: rounding",
        },
        {
            **where("tests/test_cart.py", "test_total", "gw1", "ci-host-2"),
            "test_result": "passed",
            "outcome": "xpassed",
            "duration": 0.01,
        },
        {
            **where("tests/test_search.py", "test_flaky", "gw0", "ci-host-1"),
            "test_result": "failed",
            "outcome": "failed",
            "when": "call",
            "rerun": 0,
            "duration": 0.3,
            "longrepr": "TimeoutError: search took too long",
            "crash": {"path": "tests/test_search.py", "line": 3, "message": "TimeoutError"},
        },
        {
            **where("tests/test_search.py", "test_flaky", "gw0", "ci-host-1"),
            "test_result": "passed",
            "outcome": "passed",
            "rerun": 1,
            "duration": 0.2,
        },
        {
            **where("tests/test_search.py", LONG_NAME, "gw1", "ci-host-2"),
            "test_result": "passed",
            "outcome": "passed",
            "duration": 0.05,
        },
    ]


UNFINISHED = ("tests/test_search.py", "test_hangs")
EXPECTED_OUTCOMES = {
    "passed": 3,  # test_ok, the flaky test at its rerun, the long name
    "failed": 1,
    "error": 1,
    "skipped": 1,
    "xfailed": 1,
    "xpassed": 1,
    "missing": 1,
}
JUNIT_COUNTS = {"tests": 9, "failures": 1, "errors": 2, "skipped": 2}
"""What the JUnit file must count: test_result's convention, the missing one an error."""


def make_attachments(root: Path, run_id: str) -> Path:
    """The failing test's files: a PNG screenshot and a log, in its artifact directory."""
    directory = root / run_id / "tests" / "test_login.py" / "test_bad_password"
    (directory / "shots").mkdir(parents=True)
    (directory / "shots" / "login.png").write_bytes(png(320, 200))
    (directory / "server.log").write_text("GET /login 401\nPOST /login 500 " + HOSTILE)
    return directory


def fire_run(rigger: Rigger, root: Path, run_id: str) -> None:
    """The whole run, session events included; returns once finish_session ran."""
    make_attachments(root, run_id)
    rigger.fire_hook("start_session", run_id=run_id, environment=ENVIRONMENT)
    rigger.fire_hook(
        "start_test", run_id=run_id, test_location=UNFINISHED[0], test_name=UNFINISHED[1]
    )
    for event in tests_of(root, run_id):
        where = {k: event[k] for k in ("test_location", "test_name")}
        rigger.fire_hook("start_test", run_id=run_id, **where)
        rigger.fire_hook("finish_test", run_id=run_id, **event)
    rigger.fire_hook("finish_session", run_id=run_id, exit_status=1).result(30)
