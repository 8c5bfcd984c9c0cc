"""End to end: a real pytest run (pytest-xdist, pytest-rerunfailures) of a suite with
every kind of outcome, under ``--rigger-config`` and against a real ``rigger-mp serve``:
the report tells each test's story, the JUnit file is valid and counts what pytest's own
``--junitxml`` counts, and two runs into one serve give two directories and an index."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import junitparser
import pytest
import xmlschema

from tests import _junit_schema, _story
from tests.test_cli import Served
from tests.test_pytest_plugin import pytest_env
from tests.test_report import page_data
from tests.test_run_files import Index

# The pytest plugin's side of the story (pytest_story: the finish_test keys, the
# rigger_attach fixture) lands on its own; without it there is nothing to run end to end.
pytest.importorskip(
    "rigger_mp.pytest_story", reason="the pytest plugin does not tell the test's story yet"
)

SUITE = """
import logging
import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def broken():
    raise RuntimeError("the database is down")


def test_passes():
    pass


def test_prints():
    print("hello <b>stdout</b>")
    print("to stderr", file=sys.stderr)
    logging.getLogger("suite").warning("a logged warning")


@pytest.mark.slow
def test_fails():
    print("before the failure")
    assert 1 + 1 == 3, "<script>alert(1)</script>"


def test_fixture_error(broken):
    pass


def test_skips():
    pytest.skip("not today")


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed by now?")
def test_xpass():
    pass


@pytest.mark.flaky(reruns=2)
def test_flaky():
    flag = Path(os.environ["FLAKY_FLAG"])
    if not flag.exists():
        flag.write_text("failed once")
        raise TimeoutError("the first attempt times out")


def test_attaches(rigger_attach, rigger_artifacts):
    rigger_attach("shots/login.png", Path(__file__).with_name("login.png").read_bytes())
    rigger_attach("notes.txt", "some notes")
    (rigger_artifacts / "written.txt").write_text("written by the test itself")


@pytest.mark.parametrize("n", [1, 2], ids=["a" * 150, "b" * 150])
def test_long(n):
    pass
"""

OUTCOMES = {
    "test_passes": "passed",
    "test_prints": "passed",
    "test_fails": "failed",
    "test_fixture_error": "error",
    "test_skips": "skipped",
    "test_xfail": "xfailed",
    "test_xpass": "xpassed",
    "test_flaky": "passed",
    "test_attaches": "passed",
    f"test_long[{'a' * 150}]": "passed",
    f"test_long[{'b' * 150}]": "passed",
}


@pytest.fixture(scope="session")
def junit_schema(request: pytest.FixtureRequest) -> xmlschema.XMLSchema:
    return _junit_schema.load(request.config)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: a slow test\n")
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "login.png").write_bytes(_story.png(64, 48))
    (tmp_path / "rigger.yaml").write_text("plugins: {}\n")
    return tmp_path


def run(suite: Path, run_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    flag = suite / f"flaky-{run_id}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "test_sample.py",
            "-n",
            "2",
            f"--rigger-run-id={run_id}",
            f"--junitxml={suite / f'pytest-{run_id}.xml'}",
            *args,
        ],
        cwd=suite,
        env=pytest_env(FLAKY_FLAG=str(flag)),
        capture_output=True,
        text=True,
        timeout=180,
    )


def counts(path: Path) -> dict[str, int]:
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = [xml] if isinstance(xml, junitparser.TestSuite) else list(xml)
    return {
        key: sum(getattr(s, key) for s in suites)
        for key in ("tests", "failures", "errors", "skipped")
    }


def check_run(root: Path, suite: Path, run_id: str, schema: xmlschema.XMLSchema) -> None:
    """The run's report and JUnit file say what pytest said."""
    page = root / run_id / "report.html"
    data = page_data(page)
    tests = {t[2]: t for t in data["tests"]}
    assert {name: t[0] for name, t in tests.items()} == OUTCOMES
    assert {data["names"][t[4]] for t in data["tests"]} == {"gw0", "gw1"}
    host = os.environ.get("RIGGER_MP_HOST") or socket.gethostname()
    assert {data["names"][t[5]] for t in data["tests"]} == {host}
    failed = tests["test_fails"][10]
    assert "<script>alert(1)</script>" in failed["f"] and failed["w"] == "call"
    assert failed["m"] == ["slow"]
    assert ["call", "stdout", "before the failure\n"] in failed["s"]
    text = page.read_text("utf-8")
    assert text.count("<script") == 2  # the failure text stays text
    sections = {(s[0], s[1]): s[2] for s in tests["test_prints"][10]["s"]}
    assert "hello <b>stdout</b>" in sections[("call", "stdout")]
    assert "to stderr" in sections[("call", "stderr")]
    assert "a logged warning" in sections[("call", "log")]
    assert "the database is down" in tests["test_fixture_error"][10]["f"]
    assert tests["test_fixture_error"][10]["w"] == "setup"
    assert tests["test_flaky"][10]["t"] == ["failed", "passed"]
    assert "TimeoutError" in tests["test_flaky"][10]["f"]
    attached = {a[0]: a for a in tests["test_attaches"][10]["a"]}
    assert attached["shots/login.png"][3] == 1 and attached["notes.txt"][3] == 0
    png = page.parent / attached["shots/login.png"][1]
    assert png.read_bytes() == (suite / "login.png").read_bytes()
    assert (page.parent / tests["test_attaches"][6] / "written.txt").is_file()
    assert tests["test_xfail"][10] == {"k": "known bug", "m": ["xfail"]}
    junit = root / run_id / "junit.xml"
    schema.validate(str(junit))
    assert counts(junit) == counts(suite / f"pytest-{run_id}.xml")


def test_an_embedded_run_tells_every_tests_story(
    suite: Path, junit_schema: xmlschema.XMLSchema
) -> None:
    root = suite / "art"
    done = run(suite, "e2e", "--rigger-config=rigger.yaml", f"--rigger-artifacts={root}")
    assert done.returncode == 1, done.stdout + done.stderr
    check_run(root, suite, "e2e", junit_schema)
    assert Index((root / "index.html").read_text("utf-8")).rows[0][0][0] == "e2e"


def test_two_runs_into_one_serve_give_two_directories_and_an_index(
    suite: Path, junit_schema: xmlschema.XMLSchema
) -> None:
    root = suite / "art"
    served = Served("--artifacts", str(root), cwd=suite)
    try:
        for run_id in ("runA", "runB"):
            done = run(suite, run_id, f"--rigger=127.0.0.1:{served.port}")
            assert done.returncode == 1, done.stdout + done.stderr
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    for run_id in ("runA", "runB"):
        check_run(root, suite, run_id, junit_schema)
    rows = Index((root / "index.html").read_text("utf-8")).rows
    assert [row[0][0] for row in rows] == ["runB", "runA"]
    assert all(row[0][3] == str(len(OUTCOMES)) for row in rows)


def test_a_run_on_another_host_uploads_its_files_which_are_archived_and_linked(
    suite: Path,
    tmp_path_factory: pytest.TempPathFactory,
    junit_schema: xmlschema.XMLSchema,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rigger_mp.plugins.archive import open_archive
    from tests.test_pytest_story import can_rename_host

    why = can_rename_host()
    if why is not None:
        pytest.skip(why)
    monkeypatch.setenv("RIGGER_MP_HOST", "elsewhere")  # the host the run's events carry
    server_dir = tmp_path_factory.mktemp("server")  # serve shares no directory with the run
    served = Served("--artifacts", "art", cwd=server_dir)
    local = suite / "kept-here"
    hostname = ("unshare", "-u", "sh", "-c", 'hostname elsewhere && exec "$@"', "sh")
    try:
        done = subprocess.run(
            [
                *hostname,
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_sample.py"),
                *("-n", "2", "--rigger-run-id=remote", f"--rigger=127.0.0.1:{served.port}"),
                f"--rigger-artifacts={local}",
                f"--junitxml={suite / 'pytest-remote.xml'}",
            ],
            cwd=suite,
            env=pytest_env(FLAKY_FLAG=str(suite / "flaky-remote")),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "stay on this host" not in done.stdout
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    root = server_dir / "art"
    check_run(root, suite, "remote", junit_schema)  # linked in the report, as local ones are
    test_dir = root / "remote" / "test_sample.py" / "test_attaches"
    with open_archive(f"{test_dir}.tar.zst") as tar:
        names = {member.name.split("/", 1)[-1] for member in tar.getmembers() if member.isfile()}
    assert {"shots/login.png", "notes.txt", "written.txt"} <= names
    assert (local / "remote" / "test_sample.py" / "test_attaches" / "notes.txt").is_file()
