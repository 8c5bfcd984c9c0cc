"""Every test's story: what ``finish_test`` carries, and the fixtures' files on disk.

A seeded suite with every kind of outcome runs in a pytest subprocess under ``-n 2``,
once with ``--rigger-config`` and against a real ``rigger-mp serve``; a
:class:`tests.cli_plugins.StoryRecorder` in the dispatcher writes every event with all
its names to a file, which the test reads back.
"""

from __future__ import annotations

import json
import multiprocessing.forkserver
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import RiggerClient
from rigger_mp.errors import UnsafePath
from rigger_mp.plugins.archive import open_archive
from rigger_mp.pytest_artifacts import Place
from rigger_mp.pytest_story import Limits, cut, result_of, sections, sent_size
from tests.cli_plugins import read_records
from tests.test_cli import Served
from tests.test_pytest_plugin import pytest_env

SEED = 24


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's forkserver and resource tracker outlive tests: start them first."""
    multiprocessing.forkserver.ensure_running()


def png(width: int, height: int, seed: int = SEED) -> bytes:
    """A valid RGB PNG of seeded noise."""
    rnd = random.Random(seed)
    rows = b"".join(b"\0" + rnd.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))


PNG = png(4, 3)
LONG = "a" * 150

SUITE = f'''
import logging
import sys

import pytest

PNG = {PNG!r}
ATTEMPTS = []


@pytest.fixture
def broken():
    raise RuntimeError("the fixture breaks <b>here</b>")


def test_passes():
    pass


def test_assertion_fails():
    assert 1 + 1 == 3, "<script>alert(1)</script>"


def test_fixture_errors(broken):
    pass


def test_skips():
    pytest.skip("not today")


@pytest.mark.xfail(reason="known bug")
def test_xfails():
    assert False


@pytest.mark.xfail(reason="fixed meanwhile")
def test_xpasses():
    pass


@pytest.mark.flaky(reruns=2)
def test_flaky():
    ATTEMPTS.append(1)
    print(f"attempt {{len(ATTEMPTS)}}")
    assert len(ATTEMPTS) > 1, "fails the first time"


def test_prints_and_logs():
    print("to stdout")
    print("to stderr", file=sys.stderr)
    logging.getLogger("story").warning("a log line")


@pytest.mark.slow
def test_attaches(rigger_attach, rigger_artifacts):
    rigger_attach("shots/login.png", PNG)
    rigger_attach("notes.txt", "some text")
    (rigger_artifacts / "written.log").write_text("written directly")


@pytest.mark.parametrize("name", ["{LONG}", "b/c::d e"], ids=["{LONG}", "b/c::d e"])
def test_long_names(name):
    pass


def test_huge_failure_and_output():
    sys.stdout.write("o" * 3_000_000)
    raise AssertionError("y" * 3_000_000)
'''

KEYS = {
    "test_name",
    "test_location",
    "test_result",
    "duration",
    "when",
    "longrepr",
    "crash",
    "sections",
    "outcome",
    "worker",
    "host",
    "markers",
    "rerun",
    "attachments",
    "skip_reason",
    "run_id",
}
"""What every finish_test carries."""

EXPECTED = {  # test name: (outcome, test_result, when)
    "test_passes": ("passed", "passed", None),
    "test_assertion_fails": ("failed", "failed", "call"),
    "test_fixture_errors": ("error", "error", "setup"),
    "test_skips": ("skipped", "skipped", None),
    "test_xfails": ("xfailed", "skipped", None),
    "test_xpasses": ("xpassed", "passed", None),
    "test_flaky": ("passed", "passed", None),  # its last attempt
    "test_prints_and_logs": ("passed", "passed", None),
    "test_attaches": ("passed", "passed", None),
    f"test_long_names[{LONG}]": ("passed", "passed", None),
    "test_long_names[b/c::d e]": ("passed", "passed", None),
    "test_huge_failure_and_output": ("failed", "failed", "call"),
}


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """The seeded suite in its own rootdir, with a config that records every event."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: a marker\n")
    (tmp_path / "test_story.py").write_text(SUITE)
    (tmp_path / "rigger.yaml").write_text(
        "plugins:\n"
        "  rec:\n"
        "    plugin: tests.cli_plugins:StoryRecorder\n"
        f"    path: {tmp_path / 'events.jsonl'}\n"
    )
    return tmp_path


def run_pytest(
    suite: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest on the suite in a subprocess, ``-n 2``."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", *args]
    return subprocess.run(
        command,
        cwd=suite,
        env=pytest_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=180,
    )


def finished(records: list[dict[str, Any]], run_id: str | None = None) -> list[dict[str, Any]]:
    """The finish_test events (of one run), in the order they ran."""
    return [
        r
        for r in records
        if r["event"] == "finish_test" and (run_id is None or r["run_id"] == run_id)
    ]


def check_story(events: list[dict[str, Any]], host: str, limits: Limits) -> None:
    """The keys and values of every finish_test of the suite."""
    last = {e["test_name"]: e for e in events}  # a rerun's last attempt is the test's
    assert set(last) == set(EXPECTED), sorted(last)
    for event in events:
        assert event.keys() >= KEYS, KEYS - event.keys()
        assert event["test_location"] == "test_story.py"
        assert event["worker"] in ("gw0", "gw1"), event["worker"]
        assert event["host"] == host
        assert isinstance(event["duration"], float) and 0 <= event["duration"] < 30
        assert sent_size(event["longrepr"] or "") <= limits.failure_bytes
        assert sum(sent_size(s["text"]) for s in event["sections"]) <= limits.capture_bytes
        assert len(json.dumps(event)) < 1024 * 1024 // 2  # well within max_message_bytes
    for name, (outcome, result, when) in EXPECTED.items():
        event = last[name]
        assert (event["outcome"], event["test_result"], event["when"]) == (outcome, result, when)
        assert (event["longrepr"] is None) == (when is None), name
        assert (event["crash"] is None) == (when is None), name
        if name != "test_attaches":  # the only test that used a fixture
            assert event["attachments"] == [], name

    failed = last["test_assertion_fails"]
    assert "<script>alert(1)</script>" in failed["longrepr"]
    assert "assert (1 + 1) == 3" in failed["longrepr"]
    assert failed["crash"]["path"].endswith("test_story.py")
    line = SUITE.splitlines().index('    assert 1 + 1 == 3, "<script>alert(1)</script>"')
    assert failed["crash"]["line"] == line + 1  # pytest counts lines from 1
    assert "AssertionError" in failed["crash"]["message"]
    error = last["test_fixture_errors"]
    assert "the fixture breaks <b>here</b>" in error["longrepr"]
    assert "RuntimeError" in error["crash"]["message"]

    assert last["test_skips"]["skip_reason"] == "not today"
    assert last["test_xfails"]["skip_reason"] == "known bug"
    assert last["test_xpasses"]["skip_reason"] == "fixed meanwhile"
    assert last["test_passes"]["skip_reason"] is None
    assert "xfail" in last["test_xfails"]["markers"]
    assert "slow" in last["test_attaches"]["markers"]
    assert "parametrize" in last[f"test_long_names[{LONG}]"]["markers"]

    flaky = [e for e in events if e["test_name"] == "test_flaky"]
    assert [(e["rerun"], e["outcome"], e["when"]) for e in flaky] == [
        (0, "failed", "call"),
        (1, "passed", None),
    ]
    assert "fails the first time" in flaky[0]["longrepr"]
    assert [s["text"] for s in flaky[0]["sections"]] == ["attempt 1\n"]
    assert [s["text"] for s in flaky[1]["sections"]] == ["attempt 2\n"]  # not attempt 1's
    assert {e["rerun"] for e in events if e["test_name"] != "test_flaky"} == {0}

    printed = {(s["when"], s["kind"]): s["text"] for s in last["test_prints_and_logs"]["sections"]}
    assert printed[("call", "stdout")] == "to stdout\n"
    assert printed[("call", "stderr")] == "to stderr\n"
    assert "a log line" in printed[("call", "log")]

    huge = last["test_huge_failure_and_output"]
    assert huge["longrepr"].startswith("def test_huge_failure_and_output")
    assert re.search(
        r"\[rigger_mp: [\d,]+ of [\d,]+ bytes cut here; max_failure_bytes is", huge["longrepr"]
    )
    assert huge["longrepr"].endswith(f"max_failure_bytes is {limits.failure_bytes:,}]")
    assert huge["crash"]["message"].endswith(f"max_failure_bytes is {limits.failure_bytes:,}]")
    [output] = huge["sections"]
    assert output["text"].startswith("ooo")
    assert output["text"].endswith(f"max_capture_bytes is {limits.capture_bytes:,}]")
    cut_bytes = int(re.findall(r"rigger_mp: ([\d,]+) bytes", output["text"])[0].replace(",", ""))
    head = output["text"].split("\n[rigger_mp: ")[0]
    assert head == "o" * len(head) and cut_bytes == 3_000_000 - len(head)


def check_attachments(event: dict[str, Any], root: Path, run_id: str) -> None:
    """The attached and written files: listed, and on disk in the run's directory."""
    folder = root / run_id / "test_story.py" / "test_attaches"
    assert event["attachments"] == [
        {"name": "notes.txt", "size": len("some text")},
        {"name": "shots/login.png", "size": len(PNG)},
        {"name": "written.log", "size": len("written directly")},
    ]
    assert (folder / "shots" / "login.png").read_bytes() == PNG
    assert (folder / "notes.txt").read_text() == "some text"
    assert (folder / "written.log").read_text() == "written directly"


def test_the_embedded_dispatcher_gets_every_test_s_story(suite: Path) -> None:
    art = suite / "art"
    done = run_pytest(
        suite,
        f"--rigger-config={suite / 'rigger.yaml'}",
        f"--rigger-artifacts={art}",
        "--rigger-run-id=embedded",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    records = read_records(str(suite / "events.jsonl"))
    events = finished(records)
    check_story(events, socket.gethostname(), Limits(64 * 1024, 256 * 1024))
    [attaches] = [e for e in events if e["test_name"] == "test_attaches"]
    check_attachments(attaches, art, "embedded")
    [start] = [r for r in records if r["event"] == "start_session"]
    environment = start["environment"]
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["pytest"] == pytest.__version__
    assert (
        "pytest-xdist" in environment["plugins"]
        and "pytest-rerunfailures" in environment["plugins"]
    )
    assert environment["command_line"][-1] == "--rigger-run-id=embedded"
    assert (environment["host"], environment["worker"]) == (socket.gethostname(), "main")
    assert {"platform"} <= environment.keys()


@pytest.fixture
def served(suite: Path) -> Iterator[Served]:
    """A real ``rigger-mp serve`` with the recorder, artifacts under ``suite/art``."""
    server = Served("-c", str(suite / "rigger.yaml"), "--artifacts", "art", cwd=suite)
    yield server
    server.kill()


def test_a_served_dispatcher_gets_every_test_s_story_run_by_run(
    suite: Path, served: Served
) -> None:
    (suite / "pytest.ini").write_text(
        (suite / "pytest.ini").read_text() + "rigger_max_failure_bytes = 4096\n"
    )
    for run in ("runA", "runB"):
        done = run_pytest(
            suite,
            f"--rigger=127.0.0.1:{served.port}",
            f"--rigger-run-id={run}",
            "--rigger-max-capture-bytes=8192",
            env={"RIGGER_MP_HOST": "story-host"},
        )
        assert done.returncode == 1, done.stdout + done.stderr
    assert served.cmd("terminate").returncode == 0
    assert served.finish()[0] == 0  # drained: every event is recorded
    records = read_records(str(suite / "events.jsonl"))
    art = suite / "art"
    for run in ("runA", "runB"):
        events = finished(records, run)
        check_story(events, "story-host", Limits(4096, 8192))
        [attaches] = [e for e in events if e["test_name"] == "test_attaches"]
        check_attachments(attaches, art, run)
    assert sorted(p.name for p in art.iterdir() if p.is_dir()) == ["runA", "runB"]


def test_the_info_op_names_the_host_and_the_artifacts_root(suite: Path, served: Served) -> None:
    with RiggerClient("127.0.0.1", int(served.port)) as client:
        info = client.info()
    assert info["host"] == socket.gethostname()
    assert info["artifacts_root"] == str(suite / "art")
    assert info["pid"] == served.proc.pid


FIXTURES_ALONE = """
import pathlib

import pytest


def test_attaches(rigger_attach, rigger_artifacts):
    path = rigger_attach("deep/note.txt", b"bytes")
    assert path == rigger_artifacts / "deep" / "note.txt"
    assert path.read_bytes() == b"bytes"
    copied = rigger_attach("copy.py", pathlib.Path(__file__))  # a path: the file, copied
    assert copied.read_bytes() == pathlib.Path(__file__).read_bytes()
    assert rigger_attach("text.txt", "a str is text").read_text() == "a str is text"


def test_refuses_a_name_that_climbs_out(rigger_attach):
    from rigger_mp.errors import UnsafePath

    for name in ("../escape.txt", "/etc/passwd", "a/../../b"):
        with pytest.raises(UnsafePath):
            rigger_attach(name, "no")
"""


def test_without_a_dispatcher_the_fixtures_write_under_tmp_path(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_alone.py").write_text(textwrap.dedent(FIXTURES_ALONE))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--basetemp={tmp_path / 'base'}",
        ],
        cwd=tmp_path,
        env=pytest_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [written] = (tmp_path / "base").rglob("note.txt")
    assert written.parent.parent.name == "rigger-artifacts"
    assert not (tmp_path / "rigger-artifacts").exists()


def test_a_link_planted_in_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "run1").mkdir(parents=True)
    (root / "run1" / "test_m.py").symlink_to(outside, target_is_directory=True)
    place = Place(root, "run1", shared=True)
    with pytest.raises(UnsafePath, match="symbolic link"):
        place.make(place.relative("test_m.py", "test_x"))
    test = place.relative("test_n.py", "test_x")
    made = place.make(test)
    for name in ("shot.png", "copy.png", "link.png"):  # planted where the files go
        (made / name).symlink_to(outside / name)
    place.attach(test, "shot.png", PNG)  # bytes: written aside, renamed over the link
    assert not (made / "shot.png").is_symlink() and (made / "shot.png").read_bytes() == PNG
    source = root.parent / "source.png"
    source.write_bytes(PNG)
    with pytest.raises(UnsafePath, match="symbolic link"):
        place.attach(test, "copy.png", source)  # a file: copied into the name, not through it
    assert not list(outside.iterdir())  # nothing written through any link
    assert place.listing(test) == [{"name": "shot.png", "size": len(PNG)}]  # links are not listed


def test_cut_keeps_what_fits_and_says_how_much_was_cut() -> None:
    assert cut("short", 1024, "max_failure_bytes") == "short"
    text = "é" * 5000  # six bytes each as sent
    kept = cut(text, 2048, "max_failure_bytes")
    assert sent_size(kept) <= 2048
    head = kept.split("\n[rigger_mp: ")[0]
    assert head == "é" * len(head) and len(head) > 200
    assert kept.endswith(
        f"{sent_size(text) - sent_size(head):,} of {sent_size(text):,} bytes "
        "cut here; max_failure_bytes is 2,048]"
    )


def test_sections_share_one_budget_and_the_rest_is_counted() -> None:
    captured = [
        ("Captured stdout setup", "a" * 600),
        ("Captured stderr call", "b" * 600),
        ("Captured log teardown", "c" * 600),
        ("Captured something else", "ignored"),
    ]
    kept = sections(captured, Limits(1024, 1024))
    assert [(s["when"], s["kind"]) for s in kept] == [("setup", "stdout"), ("call", "stderr")]
    assert kept[0]["text"] == "a" * 600
    assert sum(sent_size(s["text"]) for s in kept) <= 1024
    head = kept[1]["text"].split("\n[rigger_mp: ")[0]
    assert f"{1200 - len(head):,} bytes of this test's captured output cut" in kept[1]["text"]
    assert sections(captured[:1], Limits(1024, 1024)) == [
        {"when": "setup", "kind": "stdout", "text": "a" * 600}
    ]


def test_no_reports_is_an_error() -> None:
    assert result_of([]) == "error"


ARCHIVED = """
import pytest


@pytest.mark.parametrize("n", range(40))
def test_many(n):
    assert n % 7, "every seventh fails"
"""


def test_testlog_and_archive_with_defaults_archive_complete_logs(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_many.py").write_text(textwrap.dedent(ARCHIVED))
    config = tmp_path / "rigger.yaml"
    config.write_text(
        "plugins:\n  testlog:\n    plugin: testlog\n  archive:\n    plugin: archive\n"
    )
    art = tmp_path / "art"
    done = run_pytest(
        tmp_path, f"--rigger-config={config}", f"--rigger-artifacts={art}", "--rigger-run-id=r"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    archives = sorted((art / "r" / "test_many.py").glob("*.tar.zst"))
    assert len(archives) == 40
    for archive in archives:
        n = int(re.fullmatch(r"test_many\[(\d+)\]\.tar\.zst", archive.name)[1])  # type: ignore[index]
        with open_archive(str(archive)) as tar:
            log = tar.extractfile(f"test_many[{n}]/testlog.log")
            assert log is not None
            lines = log.read().decode().splitlines()
        assert lines[0] == f"test_many[{n}]"
        assert lines[-1] == ("passed" if n % 7 else "failed"), (archive, lines)


KILLS = """
import os

import psutil
import pytest


@pytest.mark.parametrize("n", range(60))
def test_many(n):
    if n == 5:  # the dispatcher and all its processes: none acks another event
        serve = psutil.Process(int(os.environ["SERVE_PID"]))
        children = serve.children(recursive=True)
        for process in (serve, *children):
            process.kill()
        # Not the serve itself: it stays a zombie of the test that started it, and waiting
        # for it here would hold this worker for the whole timeout while the other runs on.
        psutil.wait_procs(children, timeout=30)
"""


def test_a_dispatcher_killed_mid_run_is_one_warning_per_process(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_kills.py").write_text(textwrap.dedent(KILLS))
    config = tmp_path / "served.yaml"
    config.write_text("plugins: {}\n")
    served = Served("-c", str(config), "--artifacts", "art", cwd=tmp_path)
    try:
        done = run_pytest(  # no spool: the dispatcher does not come back
            tmp_path,
            f"--rigger=127.0.0.1:{served.port}",
            "--rigger-spool-seconds=0",
            env={"SERVE_PID": str(served.proc.pid)},
        )
        assert served.proc.wait(30) == -signal.SIGKILL
    finally:
        served.kill()
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # the tests passed; the lost events fail the run
    lost = re.search(r"; ([\d,]+) not fired \(listed above\): the run fails", output)
    # How many are lost depends on how far the other worker got while this one killed
    # (62 to 97 of the 120 test events in four runs); what counts is that many were, and
    # each process warned at most once for them.
    assert lost is not None and int(lost[1]) > 30, output
    warned = output.count("RiggerFireWarning")
    assert 1 <= warned <= 3, output  # the controller and the two workers, at most once each
    assert "listed in the rigger_mp section of the summary" in output


def test_limits_below_the_minimum_are_usage_errors(suite: Path) -> None:
    done = run_pytest(
        suite, f"--rigger-config={suite / 'rigger.yaml'}", "--rigger-max-failure-bytes=10"
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "max_failure_bytes must be a whole number of at least 1024" in done.stderr


def can_rename_host() -> str | None:
    """Why this machine cannot run a process under another host name (unshare -u), or None."""
    try:
        done = subprocess.run(
            ["unshare", "-u", "sh", "-c", "hostname elsewhere"], capture_output=True, timeout=30
        )
    except OSError as exc:
        return f"no unshare: {exc}"
    return None if done.returncode == 0 else f"unshare -u: {done.stderr.decode().strip()}"


def run_elsewhere(suite: Path, port: str, local: Path) -> subprocess.CompletedProcess[str]:
    """The suite run by pytest under another host name, against the dispatcher at ``port``."""
    (suite / "test_story.py").write_text(textwrap.dedent(FIXTURES_ALONE))
    command = [
        *("unshare", "-u", "sh", "-c", 'hostname elsewhere && exec "$@"', "sh"),
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"),
        *(f"--rigger=127.0.0.1:{port}", f"--rigger-artifacts={local}", "--rigger-run-id=r"),
    ]
    return subprocess.run(
        command, cwd=suite, env=pytest_env(), capture_output=True, text=True, timeout=180
    )


def attaches_event(suite: Path) -> dict[str, Any]:
    [event] = [
        e
        for e in finished(read_records(str(suite / "events.jsonl")))
        if e["test_name"] == "test_attaches"
    ]
    return event


def test_a_dispatcher_on_another_host_gets_the_files_uploaded(suite: Path, served: Served) -> None:
    why = can_rename_host()
    if why is not None:
        pytest.skip(why)
    local = suite / "kept-here"
    done = run_elsewhere(suite, served.port, local)
    assert done.returncode == 0, done.stdout + done.stderr
    assert served.cmd("terminate").returncode == 0
    assert served.finish()[0] == 0
    event = attaches_event(suite)
    assert event["host"] == "elsewhere"
    assert [a["name"] for a in event["attachments"]] == ["copy.py", "deep/note.txt", "text.txt"]
    arrived = suite / "art" / "r" / "test_story.py" / "test_attaches"
    assert (arrived / "deep" / "note.txt").read_bytes() == b"bytes"
    assert (arrived / "copy.py").read_bytes() == (suite / "test_story.py").read_bytes()
    assert (local / "r" / "test_story.py" / "test_attaches" / "deep" / "note.txt").is_file()
    assert "stay on this host" not in done.stdout


def test_a_failed_upload_keeps_the_file_here_and_fails_the_run(suite: Path) -> None:
    why = can_rename_host()
    if why is not None:
        pytest.skip(why)
    config = suite / "rigger.yaml"
    config.write_text(config.read_text() + "max_attach_bytes: 5\n")
    served = Served("-c", str(config), "--artifacts", "art", cwd=suite)
    local = suite / "kept-here"
    try:
        done = run_elsewhere(suite, served.port, local)
        assert served.cmd("terminate").returncode == 0
        assert served.finish()[0] == 0
    finally:
        served.kill()
    assert done.returncode == 1, done.stdout + done.stderr
    assert [a["name"] for a in attaches_event(suite)["attachments"]] == ["deep/note.txt"]
    assert "attachment copy.py: [too_large]" in done.stdout
    assert (
        f"rigger_mp: the files of 1 test stay on this host under {local}: the dispatcher at "
        f"127.0.0.1:{served.port} runs on {socket.gethostname()}, and uploading them failed "
        "(listed above); their finish_test lists only those that arrived"
    ) in done.stdout
    assert (local / "r" / "test_story.py" / "test_attaches" / "copy.py").is_file()


def test_the_server_process_boots_while_the_worker_pool_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psutil

    import rigger_mp.core.rigger
    from rigger_mp import Rigger
    from rigger_mp.pool.background import Background

    seen: list[list[str]] = []

    class Spy(Background):
        """Background, noting this process's children when the pool is about to start."""

        @classmethod
        def start(cls, *args: Any, **kwargs: Any) -> Background:
            seen.append([" ".join(p.cmdline()) for p in psutil.Process().children()])
            return Background.start(*args, **kwargs)

    monkeypatch.setattr(rigger_mp.core.rigger, "Background", Spy)
    with (
        Rigger({"server_enabled": True, "server_port": 0}) as rigger,
        RiggerClient("127.0.0.1", int(rigger.server_port or 0)) as client,
    ):
        assert client.ping()
    [children] = seen
    assert any("rigger_mp.server.process" in line for line in children), children


def test_a_port_in_use_fails_start_before_the_pool_and_start_may_be_called_again(
    tmp_path: Path,
) -> None:
    from rigger_mp import Rigger
    from rigger_mp.server.incarnation import ServerStartError
    from tests.conftest import child_processes

    before = child_processes()
    config: dict[str, Any] = {"server_enabled": True, "workers": 1}
    config["plugins"] = {"a": {"plugin": "archive", "root": str(tmp_path)}}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config["server_port"] = taken.getsockname()[1]
        rigger = Rigger(config)
        with pytest.raises(ServerStartError):
            rigger.start()
        assert child_processes() == before  # no pool, no server process left
    with rigger:  # the port is free now: the same Rigger starts
        assert rigger.server_port == config["server_port"]
        assert rigger.stats()["workers"]
