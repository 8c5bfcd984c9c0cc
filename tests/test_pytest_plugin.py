"""The pytest plugin, run in a pytest subprocess (with and without xdist) on a sample suite.

A :class:`tests.cli_plugins.Recorder` writes each event the dispatcher ran to a file, so
the test sees exactly what arrived: one start_test and one finish_test per test with the
right result, one start_session and one finish_session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rigger_mp import Rigger, pytest_plugin
from rigger_mp.protocol import TOKEN_ENV
from rigger_mp.pytest_plugin import outcome
from tests.cli_plugins import Recorder, read_records

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
def dispatcher(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Rigger, Path]]:
    """A dispatcher in this process with a Recorder and its TCP server on a free port.

    Indirect parametrization gives its ``server_token``.
    """
    record = tmp_path / "events.jsonl"
    rigger = Rigger(
        {
            "server_enabled": True,
            "server_port": 0,
            "server_token": getattr(request, "param", None),
            "plugins": {"rec": {"plugin": "recorder", "path": str(record)}},
        }
    )
    rigger.register_plugin(Recorder, "recorder")
    with rigger:
        yield rigger, record


def run_pytest(
    suite: Path, *args: str, env_token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest on ``suite`` in a subprocess; ``env_token`` sets (or clears) the token env."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(TOKEN_ENV, None)
    if env_token is not None:
        env[TOKEN_ENV] = env_token
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_sample.py", *args],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
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


def test_embedded_dispatcher_with_xdist(suite: Path) -> None:
    record = suite / "events.jsonl"
    config = suite / "rigger.yaml"
    config.write_text(
        "plugins:\n"
        "  rec:\n"
        "    plugin: tests.cli_plugins:Recorder\n"
        f"    path: {record}\n"
    )
    done = run_pytest(
        suite, f"--rigger-config={config}", f"--rigger-artifacts={suite / 'art'}", "-n", "2"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    check_events(read_records(str(record)))  # the dispatcher drained before pytest exited


def test_unreachable_dispatcher_is_a_usage_error(suite: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_pytest(suite, f"--rigger=127.0.0.1:{port}")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert f"cannot reach the dispatcher at --rigger 127.0.0.1:{port}" in done.stderr


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


def test_the_plugin_names_the_token_variable_of_the_protocol(suite: Path) -> None:
    assert pytest_plugin._TOKEN_ENV == TOKEN_ENV  # spelled out there: see its docstring
    assert f"${TOKEN_ENV}" in " ".join(run_pytest(suite, "--help").stdout.split())


def test_an_inert_run_imports_none_of_the_dispatcher(suite: Path) -> None:
    (suite / "test_sample.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_nothing_of_the_dispatcher_loaded():
                loaded = [m for m in sys.modules if m.startswith(("rigger_mp.", "yaml", "psutil"))]
                assert sorted(loaded) == ["rigger_mp.pytest_plugin"]
            """
        )
    )
    done = run_pytest(suite, "-q")
    assert done.returncode == 0, done.stdout + done.stderr


def test_outcome_of_no_reports_is_error() -> None:
    assert outcome([]) == "error"
