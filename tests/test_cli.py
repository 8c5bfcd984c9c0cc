"""The ``rigger-mp`` command, each subcommand run as a subprocess.

``serve`` runs in the background on port 0; the tests wait for its ``serving on`` line
(never a sleep), drive it with the other subcommands and check that it exits 0 after
draining and leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rigger_mp import RemoteError, ShuttingDown, cli
from rigger_mp.client import RiggerClient
from rigger_mp.plugins.archive import open_archive
from tests.conftest import assert_processes_gone

ROOT = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"rigger-mp: serving on (?P<host>[\d.]+):(?P<port>\d+) \(pid (?P<pid>\d+)\)")


def env() -> dict[str, str]:
    """The subprocess environment: this checkout importable (for tests.cli_plugins)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def rigger_mp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rigger_mp ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "rigger_mp", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def script() -> str:
    """The ``rigger-mp`` console script of this venv (not ``python -m rigger_mp``)."""
    path = shutil.which("rigger-mp", path=os.path.dirname(sys.executable))
    assert path is not None, "the rigger-mp console script is not installed"
    return path


def run_script(
    *args: str, cwd: Path = ROOT, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``rigger-mp ARGS`` (the console script) to completion."""
    return subprocess.run(
        [script(), *args], env=env(), capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


class Served:
    """A ``rigger-mp serve`` subprocess and the address it printed.

    ``python -m rigger_mp serve``, or with ``console_script`` the ``rigger-mp`` script.
    """

    def __init__(self, *args: str, cwd: Path, console_script: bool = False) -> None:
        command = [script()] if console_script else [sys.executable, "-m", "rigger_mp"]
        self.proc = subprocess.Popen(
            [*command, "serve", "--port", "0", *args],
            env=env(),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()  # blocks until serve is listening (or died)
        match = SERVING.match(first)
        if match is None:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"serve did not start: {first!r}\n{err}")
        self.port = match["port"]
        self.children = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a client subcommand against this server."""
        command, *rest = args
        return rigger_mp(command, "--port", self.port, *rest)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """Wait for serve to exit; check that its processes are gone; (status, out, err)."""
        out, err = self.proc.communicate(timeout=timeout)
        assert_processes_gone(self.children)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        assert_processes_gone(self.children)


@pytest.fixture
def served_default(tmp_path: Path) -> Iterator[Served]:
    """``serve`` on the embedded default config (testlog + archive in a pool of 1)."""
    served = Served("--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    yield served
    served.kill()


def free_port() -> int:
    """A port that nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- help and usage -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "fire", "ping", "status", "terminate", "demo"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"rigger-mp {command}" in capsys.readouterr().out


def test_console_script_and_module_both_run() -> None:
    for argv in ([script(), "--help"], [sys.executable, "-m", "rigger_mp", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env())
        assert done.returncode == 0, done.stderr
        for command in ("serve", "fire", "ping", "status", "terminate", "demo"):
            assert command in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: rigger-mp"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["fire"], "the following arguments are required: HOOK"),
        (["fire", "start_test", "no-equals-sign"], "expected KEY=VALUE, got 'no-equals-sign'"),
        (["fire", "start_test", "--data", "{oops"], "--data is not valid JSON"),
        (["fire", "start_test", "--data", "[1]"], "--data must be a JSON object"),
        (["ping", "--port", "70000"], "port out of range 0-65535: 70000"),
        (["demo", "--tests", "0"], "must be at least 1"),
        (["fire", "x", "--result", "--wait"], "not allowed with argument"),
        (["fire", "x", "--data", '{"a": NaN}'], "--data is not valid JSON: NaN is not JSON"),
        (["fire", "x", "grab_result=1"], "grab_result: reserved for the fire message's flags"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    done = rigger_mp(*args)
    assert done.returncode == 2, done
    assert message in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workerz: 2\n", "unknown key 'workerz'"),
        ("server_port: many\n", "server_port: expected an integer from 0 to 65535"),
        ("plugins:\n  cam:\n    plugin: vidoe\n", "unknown plugin 'vidoe'"),
        ("plugins:\n  a:\n    plugin: archive\n    level: 42\n", "level must be an integer"),
        ("plugins: [1\n", "YAML syntax error at line"),
    ],
)
def test_config_errors_exit_2_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    art = str(tmp_path / "art")  # not the default, under the repository (cwd)
    for args in (["serve", "--check", "-c", str(config)], ["serve", "-c", str(config)]):
        done = rigger_mp(*args, "--artifacts", art)
        assert done.returncode == 2, done
        assert message in done.stderr
        assert "config error" in done.stderr


def test_check_accepts_a_good_config_and_the_default(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text(
        "server_port: 0\nworkers: 2\nplugins:\n  log:\n    plugin: testlog\n"
        "  rec:\n    plugin: tests.cli_plugins:Recorder\n    path: /dev/null\n"
    )
    done = rigger_mp("serve", "--check", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert f"{config}: ok; 2 plugin instance(s): log (testlog), rec" in done.stdout
    done = rigger_mp("serve", "--check")
    assert done.returncode == 0, done.stderr
    assert "embedded default config: ok" in done.stdout and "archive (archive)" in done.stdout


def test_client_commands_exit_1_when_nobody_listens() -> None:
    port = str(free_port())
    for command in ("ping", "status", "terminate"):
        done = rigger_mp(command, "--port", port, "--timeout", "5")
        assert done.returncode == 1, done
        assert f"cannot reach the dispatcher at 127.0.0.1:{port}" in done.stderr or (
            f"127.0.0.1:{port}" in done.stderr
        )


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            ConnectionResetError(104, "Connection reset by peer"),
            "rigger-mp ping: cannot reach the dispatcher at 127.0.0.1:1: "
            "ConnectionResetError: [Errno 104] Connection reset by peer",
        ),
        (
            RemoteError("unauthorized", "wrong token"),
            "rigger-mp ping: [unauthorized] wrong token (the dispatcher has a server_token: "
            "give it with --token TOKEN or $RIGGER_MP_TOKEN)",
        ),
        (ShuttingDown(), "rigger-mp ping: ShuttingDown"),
    ],
    ids=["os-error", "rigger-error", "no-message"],
)
def test_the_error_line_names_a_bare_os_error_by_its_type(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    line: str,
) -> None:
    def ping(self: RiggerClient) -> bool:
        raise error

    monkeypatch.setattr(RiggerClient, "ping", ping)
    assert cli.main(["ping", "--port", "1"]) == 1
    assert capsys.readouterr().err == line + "\n"


def test_the_demo_client_runs_as_a_module_and_reports_an_unreachable_dispatcher(
    tmp_path: Path,
) -> None:
    port = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "rigger_mp.cli.demo_client", "127.0.0.1", port, "1", str(tmp_path)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith("demo client: RiggerConnectionError: cannot connect"), done


# -- a served dispatcher ------------------------------------------------------------------


def test_serve_ping_fire_status_terminate(tmp_path: Path, served_default: Served) -> None:
    served = served_default
    done = served.cmd("ping")
    assert done.returncode == 0 and "pong" in done.stdout, done

    where = ["test_name=test_a", "test_location=tests/test_x.py"]
    done = served.cmd("fire", "start_test", *where)
    assert done.returncode == 0, done
    assert re.fullmatch(r"\S+\n", done.stdout)  # the tid

    done = served.cmd("fire", "finish_test", *where, "test_result=passed", "--result")
    assert done.returncode == 0, done
    output = json.loads(done.stdout)
    artifact = tmp_path / "art" / "tests" / "test_x.py" / "test_a"
    assert output["artifact_path"] == str(artifact)
    assert output["test_result"] == "passed"

    items = ["n=3", "flag=true", 'obj={"k": [1]}', "s=x y"]
    done = served.cmd("fire", "anything", *items, "--data", '{"n": 1, "m": 2}', "--result")
    assert done.returncode == 0, done
    output = json.loads(done.stdout)
    got = (output["n"], output["m"], output["flag"], output["obj"], output["s"])
    assert got == (3, 2, True, {"k": [1]}, "x y")

    done = served.cmd("status", "--json")
    assert done.returncode == 0, done
    stats = json.loads(done.stdout)
    assert stats["events"]["accepted"] >= 4
    assert {"queued", "running", "done", "failed"} <= set(stats["background"])
    assert stats["uptime"] > 0 and stats["events_per_second"] > 0
    worker = stats["workers"][0]
    assert {"pid", "rss_bytes", "cpu_percent", "tasks_done"} <= set(worker)
    assert worker["pid"] in served.children

    done = served.cmd("status")
    assert done.returncode == 0, done
    assert "events" in done.stdout and "workers" in done.stdout and "up " in done.stdout

    done = served.cmd("terminate")
    assert done.returncode == 0, done
    status, out, err = served.finish()
    assert status == 0, err
    assert re.search(r"stopped after .*: 4 events \(4 done, 0 failed, 0 abandoned\)", out), out
    # The drain ran the archiver that finish_test asked for (artifacts_ready).
    archive = artifact.parent / "test_a.tar.zst"
    with open_archive(str(archive)) as tar:
        assert "test_a/testlog.log" in tar.getnames()


def test_fire_result_of_a_failing_hook_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("plugins:\n  log:\n    plugin: testlog\n")
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        # finish_test without test_result: testlog's hook cannot be called.
        done = served.cmd("fire", "finish_test", "test_name=t", "--result")
        assert done.returncode == 1, done
        assert "test_result" in done.stderr
        assert served.cmd("terminate").returncode == 0
        status, out, _ = served.finish()
        assert status == 0 and "1 failed" in out
    finally:
        served.kill()


def test_sigterm_drains_with_progress(tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("plugins:\n  slow:\n    plugin: tests.cli_plugins:Slow\n    seconds: 0.1\n")
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        with RiggerClient("127.0.0.1", int(served.port)) as client:
            client.fire_many([("work", {})] * 20)  # accepted: 2 s of work queued
        served.proc.send_signal(signal.SIGTERM)
        status, out, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    assert re.search(r"draining: \d+ events left", err), err
    assert "20 events (20 done, 0 failed, 0 abandoned)" in out


def test_demo_summary_matches_the_archives_on_disk(tmp_path: Path) -> None:
    done = rigger_mp("demo", "--tests", "5", "--workers", "2", "--dir", str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    made = re.search(r"archives: (\d+) made; ([\d,]+) bytes in .*, ([\d,]+) bytes out", done.stdout)
    assert made is not None, done.stdout
    archives = sorted((tmp_path / "artifacts").rglob("*.tar.zst"))
    assert int(made[1]) == len(archives) == 5
    assert int(made[3].replace(",", "")) == sum(a.stat().st_size for a in archives)
    bytes_in = 0
    for archive in archives:
        with open_archive(str(archive)) as tar:
            names = tar.getnames()
            bytes_in += sum(m.size for m in tar.getmembers() if m.isfile())
        assert any(n.endswith("console.log") for n in names)
        assert any(n.endswith("testlog.log") for n in names)
        assert not archive.with_name(archive.name[: -len(".tar.zst")]).exists()  # removed
    assert int(made[2].replace(",", "")) == bytes_in
    # 5 tests x (start_test, finish_test, artifacts_ready) + start/finish_session
    assert re.search(r"events: 17 done, 0 failed", done.stdout), done.stdout
    assert f"artifacts: {tmp_path / 'artifacts'} (the archives" in done.stdout
    assert "5/5 tests run, 5 archived" in done.stderr


def test_status_table_reads_like_a_table() -> None:
    from rigger_mp.cli.status import format_status

    stats = {
        "uptime": 3725.0,
        "events_per_second": 12.5,
        "events": {"accepted": 12345, "done": 12300, "failed": 5, "abandoned": 0, "queued": 40},
        "background": {"queued": 3, "running": 2, "done": 100, "failed": 1, "abandoned": 0},
        "server": {"pid": 43210, "accepted": 12345, "refused": 0, "restarts": 0},
        "workers": [{"pid": 43211, "rss_bytes": 30 * 2**20, "cpu_percent": 97.5, "tasks_done": 51}],
    }
    text = format_status(stats, "127.0.0.1:21212")
    assert text.splitlines()[0] == "rigger_mp at 127.0.0.1:21212, up 1h 02m 05s"
    assert "accepted 12,345  done 12,300  failed 5  abandoned 0  queued 40  (12.5 events/s)" in text
    assert "queued 3  running 2  done 100  failed 1" in text
    assert "pid 43210  accepted 12,345" in text
    assert re.search(r"43211\s+30\.0 MiB\s+97\.5%\s+51", text)
    assert format_status({}, "h:1") == "rigger_mp at h:1\n"  # sections it lacks are left out


def test_token_from_option_or_environment(tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("server_token: s3cret\nplugins: {}\n")
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        done = served.cmd("ping")
        assert done.returncode == 1 and "unauthorized" in done.stderr, done
        assert served.cmd("ping", "--token", "s3cret").returncode == 0
        done = served.cmd("terminate")  # terminate needs the token too
        assert done.returncode == 1 and "unauthorized" in done.stderr, done
        done = subprocess.run(
            [sys.executable, "-m", "rigger_mp", "terminate", "--port", served.port],
            env={**env(), "RIGGER_MP_TOKEN": "s3cret"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()


def test_nan_value_is_sent_as_a_string() -> None:
    from rigger_mp.cli.commands import parse_items

    assert parse_items(["x=NaN", "y=1", "z=Infinity"], None) == {
        "x": "NaN",
        "y": 1,
        "z": "Infinity",
    }


# -- issue #12: the CLI items -------------------------------------------------------------


def test_fire_takes_options_among_the_key_value_items(served_default: Served) -> None:
    port = served_default.port
    done = run_script("fire", "start_test", "--port", port, "test_name=t1", "--result", "n=3")
    assert done.returncode == 0, done
    output = json.loads(done.stdout)
    assert (output["test_name"], output["n"]) == ("t1", 3)
    # a word left over that is an option is still refused
    done = run_script("fire", "start_test", "--port", port, "test_name=t1", "--rsult")
    assert done.returncode == 2 and "unrecognized arguments: --rsult" in done.stderr, done


def test_the_console_script_imports_a_plugin_module_from_the_working_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "cwd_plugin_mod.py").write_text(
        "from rigger_mp import RiggerBasePlugin\n\n\n"
        "class Here(RiggerBasePlugin):\n"
        "    def plugin_initialize(self):\n"
        "        self.register_plugin_hook('where', self.where)\n\n"
        "    def where(self):\n"
        "        return {'here': self.ident}, None\n"
    )
    config = tmp_path / "rigger.yaml"
    config.write_text("plugins:\n  mine:\n    plugin: cwd_plugin_mod:Here\n")
    done = run_script("serve", "--check", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0 and "mine (cwd_plugin_mod:Here)" in done.stdout, done
    served = Served("-c", str(config), cwd=tmp_path, console_script=True)
    try:
        done = served.cmd("fire", "where", "--result")
        assert done.returncode == 0, done
        assert json.loads(done.stdout)["here"] == "mine"
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()


def test_the_token_error_says_how_to_give_one(tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("server_token: s3cret\nplugins: {}\n")
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        for given in ([], ["--token", "wrong"]):
            done = run_script("ping", "--port", served.port, *given)
            assert done.returncode == 1, done
            line = done.stderr.strip()
            assert "unauthorized" in line and "server_token" in line, line
            assert "--token TOKEN or $RIGGER_MP_TOKEN" in line, line
        done = run_script("terminate", "--port", served.port, "--token", "s3cret")
        assert done.returncode == 0, done
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()


def test_the_stop_hint_of_a_served_token_says_how_to_give_it(tmp_path: Path) -> None:
    config = tmp_path / "rigger.yaml"
    config.write_text("server_token: s3cret\nplugins: {}\n")
    served = Served("-c", str(config), cwd=tmp_path)
    try:
        assert served.proc.stderr is not None
        line = ""
        while "stop with" not in line:
            line = served.proc.stderr.readline()
            assert line, "serve exited before it logged how to stop it"
        hint = re.search(
            r"`rigger-mp (terminate [^`]*)` with \$RIGGER_MP_TOKEN set to the "
            r"server_token \(or --token TOKEN\)",
            line,
        )
        assert hint is not None, line
        done = subprocess.run(
            [script(), *hint[1].split()],
            env={**env(), "RIGGER_MP_TOKEN": "s3cret"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()


def _subcommands() -> list[list[str]]:
    """Every subcommand path of the parser: ``[serve]``, ..., ``[journal, list]``, ..."""
    import argparse

    from rigger_mp.cli.commands import build_parser

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
        found = []
        for action in parser._actions:  # argparse has no public list of sub-parsers
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append([*path, name])
                    found.extend(walk(sub, [*path, name]))
        return found

    return walk(build_parser(), [])


def test_every_subcommands_help_says_what_it_does() -> None:
    paths = _subcommands()
    assert ["ping"] in paths and ["journal", "list"] in paths
    for path in paths:
        done = run_script(*path, "--help")
        assert done.returncode == 0, done
        # argparse prints: usage (up to a blank line), then the description paragraph
        paragraphs = done.stdout.split("\n\n")
        assert paragraphs[0].startswith(f"usage: rigger-mp {' '.join(path)}"), done.stdout
        description = " ".join(paragraphs[1].split())
        assert not description.endswith(":"), f"{path}: no description:\n{done.stdout}"
        assert len(description.split()) >= 8, f"{path}: says too little: {description!r}"


@pytest.mark.parametrize("json_output", [False, True])
def test_a_reader_that_closes_the_pipe_ends_the_listing_quietly(
    tmp_path: Path, json_output: bool
) -> None:
    """``rigger-mp journal list -j J | head -2``: no traceback, exit 0."""
    from rigger_mp.journal import JournalStore, encode

    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    try:  # far more lines than a pipe buffers, so the writer meets the closed end
        store.commit(
            [(f"t{i}", "start_test", *encode("start_test", {"i": i})) for i in range(5000)]
        )
    finally:
        store.close()
    args = ["journal", "list", "-j", str(path), *(["--json"] if json_output else [])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rigger_mp", *args],
        env=env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # like head: read a line, then close
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert err == b""


def test_serve_http_without_the_http_extra_names_it_and_exits_2(tmp_path: Path) -> None:
    hidden = {**env(), "PYTHONPATH": f"{ROOT / 'tests' / 'no_http_extra'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rigger_mp",
            "serve",
            "--port",
            "0",
            "--http",
            "0",
            "--artifacts",
            str(tmp_path / "art"),
        ],
        env=hidden,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done
    assert "http_port needs the http extra" in done.stderr
    assert "pip install 'rigger_mp[http]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_benchmarks_skip_the_http_scenarios_without_the_http_extra(tmp_path: Path) -> None:
    hidden = {**env(), "PYTHONPATH": f"{ROOT / 'tests' / 'no_http_extra'}{os.pathsep}{ROOT}"}
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "http", "--output", str(out)],
        env=hidden,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done
    records = json.loads(out.read_text())["results"]
    assert {r["scenario"] for r in records} == {"http.fire", "http.scrape"}
    assert all(
        r["skipped"] == "the http extra is not installed (aiohttp, prometheus_client): "
        "pip install 'rigger_mp[http]'"
        for r in records
    )


def test_fire_of_an_event_nothing_binds_warns_with_the_name_meant(served_default: Served) -> None:
    done = served_default.cmd("fire", "strat_test", "test_name=x")
    assert done.returncode == 0, done
    assert done.stdout.strip()  # the tid: the event was accepted, and ran nothing
    assert done.stderr == (
        "rigger-mp fire: warning: no plugin or callback binds 'strat_test' at the "
        "dispatcher; did you mean 'start_test'?\n"
    )
    done = served_default.cmd("fire", "start_test", "test_name=x", "test_location=t")
    assert done.returncode == 0 and done.stderr == "", done


def test_a_fire_that_was_accepted_succeeds_even_if_asking_what_is_bound_fails() -> None:
    """The warning's stats() comes after the accepted fire: its failure must not make
    `rigger-mp fire` fail (a script would retry and fire the event twice)."""
    from rigger_mp.cli.commands import _bound_events

    class Flaky:
        def stats(self) -> dict[str, object]:
            raise ConnectionResetError("server went away")

    class Old:
        def stats(self) -> dict[str, object]:
            return {"events": {}}  # a dispatcher that does not say what it binds

    assert _bound_events(Flaky()) is None
    assert _bound_events(Old()) is None


def test_each_log_line_names_rigger_mp_once(tmp_path: Path) -> None:
    """The log format names the logger; a message does not name it again."""
    served = Served("--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    try:
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    assert " INFO rigger_mp: started with " in err
    assert " INFO rigger_mp: stopped: " in err
    assert not [line for line in err.splitlines() if "rigger_mp: rigger_mp" in line]
