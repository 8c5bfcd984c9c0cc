"""The pytest plugin's sender, against a ``rigger-mp serve --journal`` SIGKILLed mid-run.

A real pytest run (a subprocess) fires to a real serve; one of its tests SIGKILLs the
serve, a later one waits on a socket until this test has started a new serve on the same
port and journal. Meanwhile the plugin's events wait in its spool; once the serve is back
they are sent, each with its fire id: those the first serve had accepted (and journaled)
are answered as duplicates and not run again, the others run. The serve's plugin appends
one line per ``finish_test`` run to a file (``O_APPEND``), so the file counts every run.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import textwrap
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

from rigger_mp.client import RemoteError
from rigger_mp.pytest_sender import Sender
from rigger_mp.pytest_spool import MEMORY_BYTES, Spool, Spooled
from tests.test_cli import Served, free_port
from tests.test_pytest_plugin import start_pytest, summary_section

TESTS = 40
EVENTS = 2 * TESTS + 3
"""start_session, collect_tests (one chunk), start_test and finish_test each, finish_session."""
KILL_AT = 10
WAIT_AT = 30
SUITE = f"""
import os
import signal
import socket

import pytest


@pytest.mark.parametrize("n", range({TESTS}))
def test_many(n):
    if n == {KILL_AT}:
        os.kill(int(os.environ["SERVE_PID"]), signal.SIGKILL)
    if n == {WAIT_AT}:  # until the serve is back: the test closes this connection
        with socket.create_connection(("127.0.0.1", int(os.environ["HANDSHAKE_PORT"]))) as s:
            s.recv(1)
"""


def serve(tmp_path: Path, port: int) -> Served:
    config = tmp_path / "served.yaml"
    plugins = {"rep": {"plugin": "tests.journal_plugins:Reported", "path": str(tmp_path / "runs")}}
    config.write_text(yaml.safe_dump({"journal": str(tmp_path / "j.db"), "plugins": plugins}))
    return Served("--port", str(port), "-c", str(config), cwd=tmp_path)


def run_across_a_restart(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The suite against a serve SIGKILLed at test KILL_AT and started again (same port,
    same journal) while test WAIT_AT waits; the pytest run, once the new serve drained."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_sample.py").write_text(textwrap.dedent(SUITE))
    port = free_port()
    first = serve(tmp_path, port)
    second: Served | None = None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        env = {"SERVE_PID": str(first.proc.pid), "HANDSHAKE_PORT": str(listener.getsockname()[1])}
        proc = start_pytest(suite, f"--rigger=127.0.0.1:{port}", *options, env=env)
        try:
            conn, _ = listener.accept()  # test WAIT_AT waits; the serve died at KILL_AT
            with conn:
                assert first.proc.wait(60) == -signal.SIGKILL
                first.kill()  # its server process is gone too: the port is free
                second = serve(tmp_path, port)
            out, err = proc.communicate(timeout=180)
            assert second.cmd("terminate").returncode == 0
            status, _, serve_err = second.finish()
            assert status == 0, serve_err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            first.kill()
            if second is not None:
                second.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def reported(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "runs").read_text().splitlines()]


def test_a_serve_killed_and_restarted_mid_run_reports_every_test_once(tmp_path: Path) -> None:
    done = run_across_a_restart(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{TESTS} passed" in done.stdout.splitlines()[-1], output
    lines = summary_section(done)
    assert len(lines) == 1 and lines[0].startswith(f"rigger_mp: {EVENTS} events sent"), lines
    runs = reported(tmp_path)
    counts = Counter(fields[0] for fields in runs)
    assert set(counts) == {f"test_sample.py::test_many[{n}]" for n in range(TESTS)}
    # Exactly once each; the journal's at-least-once admits one more run of an event that
    # was running at the kill, and then it says so (attempt 2).
    twice = {name for name, n in counts.items() if n > 1}
    again = {fields[0] for fields in runs if fields[2] == "2"}
    assert twice <= again and len(again) <= 1 and max(counts.values()) <= 2, counts


def test_events_past_the_spool_bound_are_lost_and_said_so(tmp_path: Path) -> None:
    done = run_across_a_restart(tmp_path, "--rigger-spool-bytes=4096")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # every test passed: the lost events fail the run
    lines = summary_section(done)
    bound = "the spool is full (4,096 bytes, --rigger-spool-bytes)"
    full = [line for line in lines if bound in line]
    assert full and all(" not fired to 127.0.0.1:" in line for line in full), lines
    last = re.fullmatch(r"rigger_mp: ([\d,]+) events sent .*; ([\d,]+) not fired .*", lines[-1])
    assert last is not None, lines
    sent, lost = int(last[1].replace(",", "")), int(last[2].replace(",", ""))
    assert sent + lost == EVENTS and lost > 0
    assert output.count("RiggerFireWarning") == 1  # one warning for the process
    runs = Counter(fields[0] for fields in reported(tmp_path))
    assert len(runs) < TESTS and max(runs.values()) <= 2  # those lost never reported


def test_the_spool_keeps_order_through_its_file_and_refuses_past_its_bound() -> None:
    spool = Spool(max_bytes=3 * MEMORY_BYTES)
    line = b"x" * (MEMORY_BYTES // 4 - 1) + b"\n"
    for n in range(11):  # 4 in memory, 7 in the file
        assert spool.push(Spooled("ev", str(n), f"id-{n}", line))
    assert spool.in_file == 7 and len(spool) == 11
    assert not spool.push(Spooled("ev", "too much", "id-x", line * 2))
    out: list[str] = []
    while len(spool):
        batch = spool.peek(3)
        spool.drop(len(batch))
        out.extend(event.what for event in batch)
    assert out == [str(n) for n in range(11)] and spool.bytes == 0
    spool.close()


class _Unreachable:
    """A client whose every fire fails as a refused connection would."""

    def __init__(self) -> None:
        self.tries = 0
        self.tried = threading.Event()

    def new_id(self) -> str:
        return "id"

    def fire_lines(
        self, lines: Sequence[bytes], fire_ids: Sequence[str]
    ) -> list[str | RemoteError]:
        from rigger_mp.client import RiggerConnectionError

        self.tries += 1
        self.tried.set()
        raise RiggerConnectionError("cannot connect: refused")


def test_the_sender_gives_up_after_spool_seconds_and_counts_each_event_lost() -> None:
    lost: list[tuple[str, str, str]] = []
    client = _Unreachable()
    sender = Sender(client, lambda *event: lost.append(event), spool_seconds=0.0)
    for n in range(5):
        sender.submit("ev", f"t{n}", {"n": n})
    sender.flush()
    assert [what for _, what, _ in lost] == [f"t{n}" for n in range(5)]
    assert all(why == "cannot connect: refused" for _, _, why in lost)
    sender.close()
    assert sender.sent == 0 and client.tries >= 1


def test_a_full_spool_during_an_outage_says_the_dispatcher_could_not_be_reached() -> None:
    lost: list[tuple[str, str, str]] = []
    client = _Unreachable()
    line = len(b'{"hook_name":"ev","data":{"n":0},"id":"id"}\n')
    sender = Sender(client, lambda *event: lost.append(event), 0.2, Spool(2 * line))
    sender.submit("ev", "first", {"n": 0})
    assert client.tried.wait(30)  # the outage began: the first event is spooled
    for n in range(1, 4):
        sender.submit("ev", f"t{n}", {"n": n})
    sender.flush()  # the spool given up on after 0.2 s
    sender.close()
    reasons = {what: why for _, what, why in lost}
    assert set(reasons) == {"first", "t1", "t2", "t3"}
    full = [what for what, why in reasons.items() if why.startswith("the spool is full")]
    assert full == ["t2", "t3"], reasons
    assert "while the dispatcher could not be reached: cannot connect: refused" in reasons["t2"]
