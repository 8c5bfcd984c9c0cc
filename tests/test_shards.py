"""Many hosts, one run: pytest processes sharing a ``--rigger-run-id`` against one real
``rigger-mp serve``.

- Three shards, each with its own ``$RIGGER_MP_HOST`` (one under xdist); one is SIGKILLed
  while a test of it blocks on a socket the test holds: its unfinished tests are
  ``missing``, the others reported once each (a test two shards ran, twice), and the run
  ends once the others finished and ``run_timeout`` passed without an event.
- 100,000 collected ids reach the dispatcher (in chunks within ``max_message_bytes``).
- A serve killed (SIGKILL, with its journal) or stopped (SIGTERM) and started again between
  two halves of a run: the report lists both.

Nothing sleeps: the tests wait on sockets, processes and the serve's log lines.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import junitparser
import psutil
import pytest

from rigger_mp.plugins.runs import MAX_SESSIONS
from rigger_mp.pytest_options import MAX_SHARDS
from tests._http import Http
from tests.conftest import assert_processes_gone
from tests.test_cli import Served, free_port
from tests.test_pytest_plugin import pytest_env
from tests.test_report import page_data

RUN_ID = "nightly-42"
WAIT = 120.0
"""Longest wait for a process, a socket or a log line (a bound, not a pause)."""

HOLD = """
import os
import socket


def hold():
    '''Tell the test process that this test runs, then wait until it says go.'''
    with socket.create_connection(("127.0.0.1", int(os.environ["HOLD_PORT"]))) as sock:
        sock.sendall(b"ready")
        sock.recv(16)
"""

SHARD_A = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_a(n):
    pass
"""

SHARD_B = """
import pytest


class TestCart:
    def test_add(self):
        pass

    def test_total(self):
        assert 1 + 1 == 3


@pytest.mark.parametrize("ref", ["a::b", "c.d", "[x]"])
def test_ref(ref):
    pass
"""

SHARED = """
def test_both():
    pass
"""

SHARD_C = """
from hold import hold


def test_c1():
    pass


def test_c2():
    hold()


def test_c3():
    pass
"""


def suite(tmp_path: Path) -> Path:
    tmp_path.joinpath("hold.py").write_text(HOLD)
    for name, text in (
        ("test_a.py", SHARD_A),
        ("test_b.py", SHARD_B),
        ("test_shared.py", SHARED),
        ("test_c.py", SHARD_C),
    ):
        tmp_path.joinpath(name).write_text(textwrap.dedent(text))
    return tmp_path


def serve_config(tmp_path: Path, run_timeout: float) -> Path:
    path = tmp_path / "rigger.yaml"
    plugins = {
        "report": {"plugin": "report", "run_timeout": run_timeout},
        "junit": {"plugin": "junit", "run_timeout": run_timeout},
    }
    path.write_text(json.dumps({"plugins": plugins}))
    return path


def shard(
    cwd: Path, port: str, host: str, *args: str, hold_port: int = 0
) -> subprocess.Popen[str]:
    """One pytest process of the run, on its own "host"."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--rigger=127.0.0.1:{port}",
            f"--rigger-run-id={RUN_ID}",
            *args,
        ],
        cwd=cwd,
        env=pytest_env(RIGGER_MP_HOST=host, HOLD_PORT=str(hold_port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=WAIT)
    return proc.returncode, out


class Holder:
    """The socket a held test connects to: ``ready`` once it runs, ``go`` to let it end."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(WAIT)
        self.port: int = self.server.getsockname()[1]
        self.conn: socket.socket | None = None

    def wait_ready(self) -> None:
        self.conn, _ = self.server.accept()
        self.conn.settimeout(WAIT)
        assert self.conn.recv(16) == b"ready"

    def go(self) -> None:
        assert self.conn is not None
        self.conn.sendall(b"go")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def holder() -> Iterator[Holder]:
    held = Holder()
    yield held
    held.close()


def wait_written(served: Served, run_id: str) -> str:
    """Read the serve's log until both the report and the junit file of ``run_id`` are
    written; what it said. (The pipe's descriptor is read, not the text stream: a line
    in the stream's buffer would not wake ``select``.)"""
    assert served.proc.stderr is not None
    pattern = re.compile(rf"(report|junit) '(report|junit)': .*{re.escape(run_id)}")
    fd = served.proc.stderr.fileno()
    said = b""
    while len({m[1] for m in pattern.finditer(said.decode(errors="replace"))}) < 2:
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, f"no report written; the serve said: {said.decode()}"
        chunk = os.read(fd, 65536)
        assert chunk, f"serve ended; it said: {said.decode()}"
        said += chunk
    return said.decode(errors="replace")


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a pytest process and what it started."""
    if proc.poll() is None:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in tree:
            member.kill()
        psutil.wait_procs(tree, timeout=WAIT)
    proc.communicate(timeout=WAIT)


def junit_counts(path: Path) -> dict[str, int]:
    xml = junitparser.JUnitXml.fromfile(str(path))
    return {k: sum(getattr(s, k) for s in xml) for k in ("tests", "failures", "errors")}


def rows(root: Path, run_id: str) -> list[tuple[str, str, str, str, str]]:
    """The report's rows: (outcome, location, name, host, worker)."""
    data = page_data(root / run_id / "report.html")
    names = data["names"]

    def name(index: int) -> str:
        return "" if index < 0 else str(names[index])

    return [(t[0], t[1], t[2], name(t[5]), name(t[4])) for t in data["tests"]]


def test_three_shards_one_killed_make_one_run_with_its_missing_tests(
    tmp_path: Path, holder: Holder
) -> None:
    cwd = suite(tmp_path)
    root = tmp_path / "art"
    # Long enough for the other shards to start while host-c is held (a busy machine
    # starts a pytest process in seconds), short enough for the test to wait it out.
    config = serve_config(tmp_path, run_timeout=10)
    served = Served("-c", str(config), "--artifacts", str(root), "--no-journal", cwd=cwd)
    killed = shard(cwd, served.port, "host-c", "test_c.py", hold_port=holder.port)
    others: list[subprocess.Popen[str]] = []
    try:
        holder.wait_ready()  # host-c runs test_c2: test_c1 is reported, test_c3 never starts
        others = [
            shard(cwd, served.port, "host-a", "test_a.py", "test_shared.py"),
            shard(cwd, served.port, "host-b", "test_b.py", "test_shared.py", "-n", "2"),
        ]
        statuses = [finished(proc) for proc in others]
        assert [status for status, _ in statuses] == [0, 1], statuses
        kill_tree(killed)
        log = wait_written(served, RUN_ID)
        assert served.cmd("terminate").returncode == 0
        assert served.finish()[0] == 0
    finally:
        for proc in (killed, *others):
            kill_tree(proc)
        served.kill()
    found = rows(root, RUN_ID)
    by_test = Counter((outcome, name, host) for outcome, _, name, host, _ in found)
    expected = {
        **{("passed", f"test_a[{n}]", "host-a"): 1 for n in range(4)},
        ("passed", "test_both", "host-a"): 1,
        ("passed", "test_both", "host-b"): 1,  # two shards ran it: two rows
        ("passed", "TestCart.test_add", "host-b"): 1,
        ("failed", "TestCart.test_total", "host-b"): 1,
        **{("passed", f"test_ref[{ref}]", "host-b"): 1 for ref in ("a::b", "c.d", "[x]")},
        ("passed", "test_c1", "host-c"): 1,
        ("missing", "test_c2", "host-c"): 1,  # started, never finished
        ("missing", "test_c3", "host-c"): 1,  # collected, never started
    }
    assert dict(by_test) == expected, log
    assert {worker for _, _, _, host, worker in found if host == "host-b"} == {"gw0", "gw1"}
    run = json.loads((root / RUN_ID / "run.json").read_text())
    assert run["counts"] == {"passed": 11, "failed": 1, "missing": 2}
    assert (run["expected"], run["missing"], run["sessions"], run["timed_out"]) == (
        14,
        2,
        3,
        True,
    )
    assert junit_counts(root / RUN_ID / "junit.xml") == {"tests": 14, "failures": 1, "errors": 2}
    xml = (root / RUN_ID / "junit.xml").read_text()
    assert xml.count('type="missing"') == 2 and "never reported" in xml
    assert RUN_ID in (root / "index.html").read_text()
    assert not list((root / RUN_ID).glob(".rigger-state-*")), "the state files stay"


def test_a_collection_of_100000_ids_goes_through(tmp_path: Path) -> None:
    tmp_path.joinpath("test_many.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('n', range(100_000))\n"
        "def test_many(n):\n    pass\n"
    )
    root = tmp_path / "art"
    config = serve_config(tmp_path, run_timeout=600)
    served = Served("-c", str(config), "--artifacts", str(root), "--no-journal", cwd=tmp_path)
    try:
        proc = shard(tmp_path, served.port, "host-a", "test_many.py", "--collect-only", "-q")
        status, out = finished(proc)
        assert status == 0, out[-2000:]
        wait_written(served, RUN_ID)
    finally:
        served.kill()
    run = json.loads((root / RUN_ID / "run.json").read_text())
    assert (run["expected"], run["missing"], run["counts"]) == (
        100_000,
        100_000,
        {"missing": 100_000},
    )
    names = {t[2] for t in page_data(root / RUN_ID / "report.html")["tests"]}
    assert names == {f"test_many[{n}]" for n in range(100_000)}


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_a_serve_restarted_between_two_halves_reports_both(
    tmp_path: Path, holder: Holder, stop: signal.Signals
) -> None:
    cwd = suite(tmp_path)
    root = tmp_path / "art"
    config = serve_config(tmp_path, run_timeout=600)
    port = str(free_port())
    args = ("-c", str(config), "--artifacts", str(root), "--port", port)
    served = Served(*args, cwd=cwd)  # with its journal, under the artifacts
    second_half = shard(cwd, port, "host-c", "test_c.py", hold_port=holder.port)
    restarted: Served | None = None
    try:
        holder.wait_ready()  # the second half's session is open, its first test held
        status, out = finished(shard(cwd, port, "host-a", "test_a.py"))
        assert status == 0, out
        served.proc.send_signal(stop)
        served.proc.communicate(timeout=WAIT)
        assert_processes_gone(served.children)
        assert os.listdir(root / RUN_ID), "the open run's state is on disk"
        http_port = free_port()
        restarted = Served(*args, "--http", f"127.0.0.1:{http_port}", cwd=cwd)
        holder.go()
        status, out = finished(second_half)
        assert status == 0, out
        wait_written(restarted, RUN_ID)
        with Http(http_port) as client:  # the live view read the first half back too
            status, live = client.json("GET", f"/runs/{RUN_ID}")
    finally:
        kill_tree(second_half)
        served.kill()
        if restarted is not None:
            restarted.kill()
    outcomes: dict[str, Any] = {name: outcome for outcome, _, name, _, _ in rows(root, RUN_ID)}
    assert outcomes == {
        **{f"test_a[{n}]": "passed" for n in range(4)},
        **{name: "passed" for name in ("test_c1", "test_c2", "test_c3")},
    }
    run = json.loads((root / RUN_ID / "run.json").read_text())
    assert (run["counts"], run["expected"], run["sessions"], run["timed_out"]) == (
        {"passed": 7},
        7,
        2,
        False,
    )
    shown = live["run"]
    assert status == 200 and (shown["counts"], shown["expected"], shown["missing"]) == (
        {"passed": 7},
        7,
        0,
    )
    assert shown["finished"] and shown["sessions"] == 2


def test_shards_told_how_many_make_one_run_however_late_the_last_starts(
    tmp_path: Path,
) -> None:
    cwd = suite(tmp_path)
    root = tmp_path / "art"
    config = serve_config(tmp_path, run_timeout=600)
    http_port = free_port()
    served = Served(
        *("-c", str(config), "--artifacts", str(root), "--no-journal"),
        *("--http", f"127.0.0.1:{http_port}"),
        cwd=cwd,
    )
    try:
        # The first shard ends before the second starts: without --rigger-shards the run
        # would end with it, and the second would start it again.
        status, out = finished(shard(cwd, served.port, "host-a", "--rigger-shards=2", "test_a.py"))
        assert status == 0, out
        with Http(http_port) as client:
            live = client.json("GET", f"/runs/{RUN_ID}")[1]["run"]
        assert not live["finished"] and (live["sessions"], live["shards"]) == (1, 2)
        second = shard(cwd, served.port, "host-b", "--rigger-shards=2", "test_b.py", "-n", "2")
        status, out = finished(second)
        assert status == 1, out  # TestCart.test_total fails
        wait_written(served, RUN_ID)
        assert served.cmd("terminate").returncode == 0
        assert served.finish()[0] == 0
    finally:
        served.kill()
    hosts = Counter(host for _, _, _, host, _ in rows(root, RUN_ID))
    assert hosts == {"host-a": 4, "host-b": 5}
    run = json.loads((root / RUN_ID / "run.json").read_text())
    assert (run["sessions"], run["shards"], run["timed_out"]) == (2, 2, False)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("--rigger-shards=0",), "expected 1 to 1,024 processes"),
        (("--rigger-shards=1025",), "expected 1 to 1,024 processes"),
        (("--rigger-shards=2", "--rigger-run-id="), "give the shards one run id"),
    ],
)
def test_rigger_shards_that_cannot_work_are_refused(
    tmp_path: Path, args: tuple[str, ...], why: str
) -> None:
    status, out = finished(shard(tmp_path, "1", "host-a", *args))
    assert status == 4 and f"--rigger-shards: {why}" in out, out


def test_rigger_shards_is_refused_with_an_embedded_dispatcher(tmp_path: Path) -> None:
    config = serve_config(tmp_path, run_timeout=600)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--rigger-config={config}", "--rigger-shards=2"],
        cwd=tmp_path,
        env=pytest_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 4 and "ends with this process" in done.stderr + done.stdout


def test_the_shard_bound_is_the_sessions_a_run_keeps() -> None:
    assert MAX_SHARDS == MAX_SESSIONS  # spelled out in pytest_options: see its docstring
