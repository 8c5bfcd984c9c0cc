"""The pytest plugin, run in a pytest subprocess (with and without xdist) on a sample suite.

A :class:`tests.cli_plugins.Recorder` writes each event the dispatcher ran to a file, so
the test sees exactly what arrived: one start_test and one finish_test per test with the
right result, one start_session and one finish_session.
"""

from __future__ import annotations

import html
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import junitparser
import pytest

from rigger_mp import Rigger, pytest_lost, pytest_options, pytest_plugin
from rigger_mp.protocol import TOKEN_ENV
from rigger_mp.pytest_story import result_of
from tests.cli_plugins import Recorder, read_records
from tests.conftest import Dispatchers
from tests.test_cli import Served, free_port

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup fails")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown fails")


def test_passes():
    pass


@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(n):
    assert n


def test_fails():
    assert False


def test_skips():
    pytest.skip("not today")


@pytest.mark.skip(reason="marked")
def test_skip_marker():
    pass


def test_setup_error(broken_setup):
    pass


def test_teardown_error(broken_teardown):
    pass


def test_fails_and_teardown_error(broken_teardown):
    assert False


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed meanwhile")
def test_xpass():
    pass


@pytest.mark.xfail(strict=True, reason="must fail")
def test_xpass_strict():
    pass


class TestGroup:
    def test_method(self):
        pass
'''

EXPECTED = {
    "test_passes": "passed",
    "test_param[1]": "passed",
    "test_param[2]": "passed",
    "test_param[3]": "passed",
    "test_fails": "failed",
    "test_skips": "skipped",
    "test_skip_marker": "skipped",
    "test_setup_error": "error",
    "test_teardown_error": "error",
    "test_fails_and_teardown_error": "failed",
    "test_xfail": "skipped",
    "test_xpass": "passed",
    "test_xpass_strict": "failed",
    "TestGroup.test_method": "passed",
}


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """The sample suite in its own rootdir (an empty pytest.ini pins it there)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SUITE))
    return tmp_path


@pytest.fixture
def dispatcher(
    tmp_path: Path, request: pytest.FixtureRequest, dispatchers: Dispatchers
) -> tuple[Rigger, Path]:
    """A dispatcher in this process with a Recorder and its TCP server on a free port.

    Indirect parametrization gives its ``server_token``.
    """
    record = tmp_path / "events.jsonl"
    config = {
        "server_enabled": True,
        "server_port": 0,
        "server_token": getattr(request, "param", None),
        "plugins": {"rec": {"plugin": "recorder", "path": str(record)}},
    }
    return dispatchers.start(config, {"recorder": Recorder}), record


def pytest_env(env_token: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a pytest subprocess: this checkout importable, no token unless
    ``env_token``, none of the outer run's pytest settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop(TOKEN_ENV, None)
    if env_token is not None:
        env[TOKEN_ENV] = env_token
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_sample.py")


def run_pytest(
    suite: Path, *args: str, env_token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest on ``suite`` in a subprocess; ``env_token`` sets (or clears) the token env."""
    return subprocess.run(
        [*PYTEST, *args],
        cwd=suite,
        env=pytest_env(env_token),
        capture_output=True,
        text=True,
        timeout=120,
    )


def start_pytest(suite: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """pytest on ``suite`` in a subprocess left running; ``env`` added to its environment."""
    return subprocess.Popen(
        [*PYTEST, *args],
        cwd=suite,
        env=pytest_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_events(records: list[dict[str, object]]) -> None:
    """Exactly one start_test and finish_test per test, right results, one session."""
    kinds = Counter(str(r["event"]) for r in records)
    assert kinds["start_session"] == 1 and kinds["finish_session"] == 1, kinds
    assert records[0]["event"] == "start_session"
    assert records[-1]["event"] == "finish_session"
    run_ids = {r["run_id"] for r in records}
    assert len(run_ids) == 1, run_ids
    started = Counter(str(r["test_name"]) for r in records if r["event"] == "start_test")
    assert started == Counter(EXPECTED.keys()), started
    finished = {str(r["test_name"]): r for r in records if r["event"] == "finish_test"}
    assert len(finished) == len(EXPECTED) == kinds["finish_test"]
    assert {name: r["test_result"] for name, r in finished.items()} == EXPECTED
    assert {r["test_location"] for r in finished.values()} == {"test_sample.py"}
    assert records[-1]["exit_status"] == 1  # the suite has failures


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_events_reach_a_running_dispatcher(
    suite: Path, dispatcher: tuple[Rigger, Path], xdist: list[str]
) -> None:
    rigger, record = dispatcher
    done = run_pytest(suite, f"--rigger=127.0.0.1:{rigger.server_port}", *xdist)
    assert done.returncode == 1, done.stdout + done.stderr  # tests failed, nothing else
    assert rigger.wait_background(30)  # every event the subprocess fired has run
    check_events(read_records(str(record)))


def summary_section(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines of the plugin's section of the terminal summary, up to pytest's last line."""
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"=+ rigger_mp =+", line))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    assert end == len(lines) - 1, lines[end:]  # pytest's own counts follow, nothing else
    return lines[start + 1 : end]


def recorder_config(suite: Path, extra: str = "") -> tuple[Path, Path]:
    """A config file with a Recorder (and ``extra`` YAML under ``plugins``); (file, record)."""
    record = suite / "events.jsonl"
    config = suite / "rigger.yaml"
    config.write_text(
        "plugins:\n"
        "  rec:\n"
        "    plugin: tests.cli_plugins:Recorder\n"
        f"    path: {record}\n" + extra
    )
    return config, record


EVENTS = 3 + 2 * len(EXPECTED)
"""What the sample suite fires: the session's three events (start_session, collect_tests,
finish_session) and two per test."""


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_the_embedded_dispatcher_writes_the_report_and_says_where(
    suite: Path, xdist: list[str]
) -> None:
    config, record = recorder_config(suite)
    art = suite / "art"
    done = run_pytest(
        suite, f"--rigger-config={config}", f"--rigger-artifacts={art}",
        "--rigger-run-id=run-1", *xdist,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    check_events(read_records(str(record)))  # the dispatcher drained before pytest exited
    page = (art / "run-1" / "report.html").read_text()
    assert all(html.escape(name) in page for name in EXPECTED)
    assert summary_section(done) == [
        f"rigger_mp: {EVENTS} events sent to the in-process dispatcher; artifacts: {art}; "
        f"report: {art / 'run-1' / 'report.html'}"
    ]
    # The JUnit file beside it counts what pytest said, test by test.
    xml = junitparser.JUnitXml.fromfile(str(art / "run-1" / "junit.xml"))
    kinds = {junitparser.Failure: "failed", junitparser.Error: "error",
             junitparser.Skipped: "skipped"}
    seen = {
        ".".join([*case.classname.split(".")[1:], case.name]):  # test_sample.TestGroup
        kinds[type(case.result[0])] if case.result else "passed"
        for suite_ in xml for case in suite_
    }
    assert seen == EXPECTED
    assert (art / "index.html").is_file()


def test_the_report_goes_to_the_default_artifacts_root(suite: Path) -> None:
    config, _ = recorder_config(suite)
    done = run_pytest(suite, f"--rigger-config={config}", "--rigger-run-id=R")
    report = suite / "rigger-artifacts" / "R" / "report.html"
    assert report.is_file(), done.stdout + done.stderr
    assert summary_section(done)[-1].endswith(f"; report: {report}")


def test_a_config_with_its_own_report_instance_keeps_it(suite: Path) -> None:
    mine = suite / "mine"
    config, _ = recorder_config(
        suite, f"  pages:\n    plugin: report\n    dir: {mine}\n  report:\n    plugin: testlog\n"
    )
    done = run_pytest(
        suite, f"--rigger-config={config}", f"--rigger-artifacts={suite / 'art'}",
        "--rigger-run-id=R",
    )
    assert (mine / "R" / "report.html").is_file(), done.stdout + done.stderr
    assert not list((suite / "art").rglob("report.html"))  # one report, the config's
    assert summary_section(done)[-1].endswith(f"; report: {mine / 'R' / 'report.html'}")


def test_a_disabled_report_instance_means_no_report(suite: Path) -> None:
    config, _ = recorder_config(suite, "  report:\n    plugin: report\n    enabled: false\n")
    art = suite / "art"
    done = run_pytest(suite, f"--rigger-config={config}", f"--rigger-artifacts={art}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert not list(art.rglob("report.html"))
    assert summary_section(done) == [
        f"rigger_mp: {EVENTS} events sent to the in-process dispatcher; artifacts: {art}"
    ]


def test_a_typo_in_the_config_is_one_error_line_naming_the_file_and_line(suite: Path) -> None:
    config = suite / "rigger.yaml"
    config.write_text("plugins:\n  arch:\n    plugin: archive\n    levl: 3\n")
    done = run_pytest(suite, f"--rigger-config={config}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"ERROR: rigger_mp: --rigger-config {config}: {config}: instance 'arch' "
        "(plugin archive): unknown key 'levl' on line 4; did you mean 'level'?"
    )


def test_with_report_adds_an_instance_only_when_there_is_none() -> None:
    assert pytest_plugin.with_report({}) == {
        "plugins": {"report": {"plugin": "report"}, "junit": {"plugin": "junit"}}
    }
    taken = {"plugins": {"report": {"plugin": "testlog"}, "junit": {"plugin": "testlog"}}}
    added = pytest_plugin.with_report(taken)["plugins"]
    assert added["rigger_mp_report"] == {"plugin": "report"}
    assert added["rigger_mp_junit"] == {"plugin": "junit"}
    assert taken == {
        "plugins": {"report": {"plugin": "testlog"}, "junit": {"plugin": "testlog"}}
    }  # a copy
    off = {
        "plugins": {
            "r": {"plugin": "report", "enabled": False},
            "j": {"plugin": "junit", "enabled": False},
        }
    }
    assert pytest_plugin.with_report(off) == off


MAX_MESSAGE = 16 * 1024
"""The ``served`` dispatcher's max_message_bytes: the sample suite's events fit."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A real ``rigger-mp serve`` (its messages bounded to :data:`MAX_MESSAGE` bytes)."""
    config = tmp_path / "served.yaml"
    config.write_text(f"max_message_bytes: {MAX_MESSAGE}\nplugins: {{}}\n")
    server = Served("-c", str(config), "--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    yield server
    server.kill()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_a_successful_run_ends_saying_where_the_events_went(
    suite: Path, served: Served, xdist: list[str]
) -> None:
    done = run_pytest(suite, f"--rigger=127.0.0.1:{served.port}", "-rA", *xdist)
    assert done.returncode == 1, done.stdout + done.stderr  # the suite's own failures
    assert "short test summary info" in done.stdout  # before the section, which ends it
    assert summary_section(done) == [
        f"rigger_mp: {EVENTS} events sent to the dispatcher at 127.0.0.1:{served.port}"
    ]


PASSING = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_passes(n):
    pass
"""

TOO_LONG = """
import pytest


def test_short():
    pass


@pytest.mark.parametrize("n", [1], ids=["x" * 17000])
def test_long_name(n):
    pass
"""


def test_the_lost_events_of_every_worker_are_listed_and_fail_the_run(
    suite: Path, served: Served
) -> None:
    # A name longer than the server's max_message_bytes: its start_test is refused
    # (too_large, and the server closes the connection), its finish_test too (or it meets
    # the closing connection), wherever it runs; --dist each runs it on both workers, last.
    (suite / "test_sample.py").write_text(textwrap.dedent(TOO_LONG))
    done = run_pytest(suite, f"--rigger=127.0.0.1:{served.port}", "-n", "2", "--dist", "each")
    assert done.returncode == 1, done.stdout + done.stderr  # every test passed: lost events
    lines = summary_section(done)
    for worker in ("gw0", "gw1"):
        mine = [line for line in lines if line.startswith(f"{worker}: ")]
        nodeid = "test_sample.py::test_long_name[" + "x" * 17000 + "]"
        assert [line.split(" not fired to ")[0] for line in mine] == [
            f"{worker}: {event} {nodeid[: pytest_lost.MAX_NAME]}..."
            for event in ("start_test", "finish_test")
        ], lines
        assert "max_message_bytes" in mine[0], mine
    assert lines[-1] == (
        f"rigger_mp: 7 events sent to the dispatcher at 127.0.0.1:{served.port}; "
        "4 not fired (listed above): the run fails"
    )


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_lost_events_under_warnings_as_errors_are_listed_not_an_internal_error(
    suite: Path, served: Served, xdist: list[str]
) -> None:
    # Many suites set filterwarnings = error: a RiggerFireWarning must not then be raised
    # out of the plugin's hooks (an INTERNALERROR, no summary), only listed.
    (suite / "test_sample.py").write_text(textwrap.dedent(TOO_LONG))
    done = run_pytest(suite, f"--rigger=127.0.0.1:{served.port}", "-W", "error", *xdist)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "INTERNALERROR" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "2 passed" in done.stdout.splitlines()[-1], done.stdout
    lines = summary_section(done)
    events = [line.split(" test_sample.py::")[0] for line in lines if "test_long" in line]
    assert [re.sub(r"^gw\d+: ", "", event) for event in events] == [
        "start_test",
        "finish_test",
    ], lines
    assert lines[-1] == (  # the session's three events and test_short's two were sent
        f"rigger_mp: 5 events sent to the dispatcher at 127.0.0.1:{served.port}; "
        "2 not fired (listed above): the run fails"
    ), lines


def test_a_process_lists_a_bounded_number_of_lost_events() -> None:
    lost = pytest_lost.Lost()
    for n in range(pytest_lost.MAX_LOST_LISTED + 5):
        lost.add(f"event {n}")
    assert lost.total == pytest_lost.MAX_LOST_LISTED + 5
    assert len(lost.listed) == pytest_lost.MAX_LOST_LISTED
    lines = pytest_lost.lost_lines("gw3", lost.listed, lost.total)
    assert lines[-1] == "gw3: ... and 5 more events not fired"


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_an_unreachable_dispatcher_is_one_error_line_and_nothing_runs(
    suite: Path, xdist: list[str]
) -> None:
    port = free_port()
    done = run_pytest(suite, f"--rigger=127.0.0.1:{port}", *xdist)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    output = (done.stdout + done.stderr).splitlines()
    assert [line for line in output if line.strip()] == [
        f"ERROR: rigger_mp: cannot reach the dispatcher at --rigger 127.0.0.1:{port}: "
        f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused; "
        f"{pytest_plugin._REMEDY}"
    ]


HANDSHAKE = """
import os
import socket


def pytest_sessionstart(session):
    # The controller, after start_session and before xdist starts the workers: the test
    # stops the dispatcher, then closes this connection.
    if not hasattr(session.config, "workerinput"):
        with socket.create_connection(("127.0.0.1", int(os.environ["HANDSHAKE_PORT"]))) as s:
            s.recv(1)
"""


def test_workers_that_cannot_reach_the_dispatcher_are_one_line_and_fail_the_run(
    suite: Path, served: Served
) -> None:
    (suite / "test_sample.py").write_text(textwrap.dedent(PASSING))
    (suite / "conftest.py").write_text(textwrap.dedent(HANDSHAKE))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        handshake = {"HANDSHAKE_PORT": str(listener.getsockname()[1])}
        # No spool: the controller's finish_session is lost at its first failure.
        address = f"--rigger=127.0.0.1:{served.port}"
        proc = start_pytest(suite, address, "--rigger-spool-seconds=0", "-n", "2", env=handshake)
        try:
            conn, _ = listener.accept()  # start_session went; the workers are not started
            with conn:
                assert served.cmd("terminate").returncode == 0
                assert served.finish()[0] == 0  # gone: nothing listens on its port
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out + err  # though the tests passed
    assert "4 passed" in out.splitlines()[-1]
    assert "Traceback" not in out + err and "INTERNALERROR" not in out + err
    refused = f"cannot connect to 127.0.0.1:{served.port}: [Errno 111] Connection refused"
    assert summary_section(done) == [
        f"collect_tests 4 test ids not fired to 127.0.0.1:{served.port}: {refused}",
        f"finish_session not fired to 127.0.0.1:{served.port}: {refused}",
        f"rigger_mp: 2 xdist workers (gw0, gw1) could not reach the dispatcher at "
        f"127.0.0.1:{served.port}: {refused}; {pytest_plugin._REMEDY}; "
        "the 8 events of their tests were not fired",
        f"rigger_mp: 1 event sent to the dispatcher at 127.0.0.1:{served.port}; "
        "10 not fired (listed above): the run fails",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rigger=nowhere"], "expected HOST:PORT"),
        (["--rigger=127.0.0.1:1", "--rigger-config=x.yaml"], "not both"),
        (["--rigger-config=missing.yaml"], "missing.yaml: cannot read the config file"),
    ],
)
def test_bad_options_are_usage_errors(suite: Path, args: list[str], message: str) -> None:
    done = run_pytest(suite, *args)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert message in done.stderr


def test_without_options_the_plugin_is_inert(suite: Path) -> None:
    done = run_pytest(suite, "-q")
    assert done.returncode == 1
    assert "rigger_mp" not in done.stdout + done.stderr


@pytest.mark.parametrize("dispatcher", ["tok"], indirect=True)
@pytest.mark.parametrize(
    ("env_token", "option", "reached"),
    [
        ("tok", [], True),
        ("wrong", ["--rigger-token=tok"], True),  # the option wins over the environment
        ("wrong", [], False),
        (None, [], False),
    ],
    ids=["env", "option", "wrong-env", "none"],
)
def test_the_token_comes_from_the_option_or_the_environment(
    suite: Path,
    dispatcher: tuple[Rigger, Path],
    env_token: str | None,
    option: list[str],
    reached: bool,
) -> None:
    rigger, record = dispatcher
    done = run_pytest(
        suite, f"--rigger=127.0.0.1:{rigger.server_port}", *option, env_token=env_token
    )
    if reached:
        assert done.returncode == 1, done.stdout + done.stderr
        assert rigger.wait_background(30)
        check_events(read_records(str(record)))
    else:
        assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
        assert "unauthorized" in done.stderr
        assert f"give it with --rigger-token or ${TOKEN_ENV}" in done.stderr


@pytest.mark.parametrize("env_token", [None, "the-token-of-another-dispatcher"])
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["single", "xdist-2"])
def test_an_embedded_dispatcher_with_a_token_is_reached_with_it(
    suite: Path, xdist: list[str], env_token: str | None
) -> None:
    """--rigger-config FILE with a server_token: the plugin's own clients (the controller's
    and every worker's) use that token; no option or environment variable is needed, and
    ${TOKEN_ENV} set for another dispatcher (a CI's) does not get in the way."""
    config, record = recorder_config(suite)
    config.write_text(config.read_text() + "server_token: s3cret-of-the-file\n")
    done = run_pytest(suite, f"--rigger-config={config}", *xdist, env_token=env_token)
    assert done.returncode == 1, done.stdout + done.stderr  # the sample suite has failures
    assert "unauthorized" not in done.stdout + done.stderr
    check_events(read_records(str(record)))


def test_the_plugin_names_the_token_variable_of_the_protocol(suite: Path) -> None:
    assert pytest_options.TOKEN_ENV == TOKEN_ENV  # spelled out there: see its docstring
    assert f"${TOKEN_ENV}" in " ".join(run_pytest(suite, "--help").stdout.split())


def test_an_inert_run_imports_none_of_the_dispatcher(suite: Path) -> None:
    (suite / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_nothing_of_the_dispatcher_loaded():
                loaded = [m for m in sys.modules if m.startswith(("rigger_mp.", "yaml", "psutil"))]
                assert sorted(loaded) == ["rigger_mp.pytest_options", "rigger_mp.pytest_plugin"]
            """
        )
    )
    done = run_pytest(suite, "-q")
    assert done.returncode == 0, done.stdout + done.stderr


def test_outcome_of_no_reports_is_error() -> None:
    assert result_of([]) == "error"
