"""rigger_mp.compat: riggerlib 3.1.6 programs run with only their import changed.

One test per item of issue #12, then an artifactor-style program (tests/compat_programs)
run unchanged under riggerlib 3.1.6 and, imports changed, under compat: the files they
leave must match. riggerlib is installed into a venv in pytest's cache on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from rigger_mp import RiggerClient as ModernClient
from rigger_mp import ShuttingDown
from rigger_mp.compat import Rigger, RiggerBasePlugin, RiggerClient, _warn
from tests.conftest import Dispatchers

PROGRAMS = Path(__file__).parent / "compat_programs"
RIGGERLIB = "riggerlib==3.1.6"


class Recorder(RiggerBasePlugin):
    """Records what its hooks were called with."""

    calls: list[tuple[str, dict[str, Any]]]

    def plugin_initialize(self) -> None:
        self.calls = []
        self.register_plugin_hook("ev", self.ev)

    def ev(self, x: int, config: dict[str, Any]) -> tuple[None, dict[str, Any]]:
        self.calls.append(("ev", {"x": x, "config": config}))
        return None, {"seen": [x]}


class Failing(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("ev", self.ev)

    def ev(self) -> None:
        raise ValueError("hook broke")


class Messages(Rigger):
    """Keeps what riggerlib would have printed."""

    def __init__(self, config_file: str | None = None) -> None:
        self.messages: list[Any] = []
        self.failures: list[BaseException] = []
        super().__init__(config_file)

    def log_message(self, message: Any) -> None:
        self.messages.append(message)

    def handle_failure(self, exc_info: Any) -> None:
        self.failures.append(exc_info[1])


def plugins(**instances: dict[str, Any]) -> dict[str, Any]:
    return {"plugins": instances}


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    """Each test sees compat's warn-once warnings afresh."""
    _warn._seen.clear()
    yield
    _warn._seen.clear()


@pytest.fixture
def rigger(dispatchers: Dispatchers) -> Messages:
    """A compat Rigger the test starts its own way (riggerlib's sequence), stopped after."""
    return dispatchers.add(Messages(None))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def started(r: Rigger, config: dict[str, Any]) -> Rigger:
    """riggerlib's sequence: assign config, parse_config, global_data, initialized."""
    r.config = config
    r.register_plugin(Recorder, "recorder")
    r.register_plugin(Failing, "failing")
    r.parse_config()
    r.initialized = True
    return r


# -- one test per item of the issue -------------------------------------------------


def test_1_global_data_assigned_after_parse_config_reaches_the_event_thread(
    rigger: Messages,
) -> None:
    started(rigger, plugins(rec={"plugin": "recorder", "enabled": True}))
    rigger.global_data = {"seen": [], "origin": "assigned"}
    out = rigger.fire_hook("ev", x=1).result(5)
    assert out["origin"] == "assigned"
    assert rigger.global_data["seen"] == [1]


def test_2_squash_exceptions_is_read_from_the_attribute(rigger: Messages) -> None:
    started(rigger, plugins(bad={"plugin": "failing", "enabled": True}))
    with pytest.raises(ValueError, match="hook broke"):
        rigger.fire_hook("ev").result(5)
    assert isinstance(rigger.messages[-1], ValueError)  # riggerlib's log_message(e)
    rigger.squash_exceptions = True
    rigger.fire_hook("ev").result(5)
    assert [str(e) for e in rigger.failures] == ["hook broke"]


class ArtifactorLike(Messages):
    def set_config(self, config: dict[str, Any]) -> None:
        self.config = config

    def parse_config(self) -> None:
        self.log_dir = self.config["log_dir"]
        self.squash_exceptions = self.config.get("squash_exceptions", False)
        self.setup_plugin_instances()
        self.start_server()
        self.global_data = {"artifactor_config": self.config, "seen": []}


def test_3_artifactors_pattern_keeps_its_config() -> None:
    art = ArtifactorLike(None)
    config = {"log_dir": "/var/log/x", "squash_exceptions": True, "per_run": "run"}
    config.update(plugins(rec={"plugin": "recorder", "enabled": True}))
    art.set_config(config)
    art.register_plugin(Recorder, "recorder")
    try:
        art.parse_config()
        art.initialized = True
        out = art.fire_hook("ev", x=2).result(5)
        assert art.config is config
        assert out["artifactor_config"]["log_dir"] == "/var/log/x"
        assert art.squash_exceptions is True
        assert art.get_instance_data("rec") is config["plugins"]["rec"]
    finally:
        art.stop()


def test_4_an_instance_of_an_unknown_plugin_is_logged_and_skipped(
    rigger: Messages, caplog: pytest.LogCaptureFixture
) -> None:
    started(
        rigger,
        plugins(
            video={"plugin": "video", "enabled": False},
            ghost={"plugin": "ghost", "enabled": True},
            rec={"plugin": "recorder", "enabled": True},
        ),
    )
    assert "Plugin [video] was not found, disabling instance [video]" in rigger.messages
    assert "Plugin [ghost] was not found, disabling instance [ghost]" in rigger.messages
    assert "rigger_mp.Rigger.start() raises PluginError" in caplog.text
    assert rigger.get_instance_obj("video") is None
    rigger.fire_hook("ev", x=0).result(5)


def test_5_a_server_script_keeps_serving_after_main_returns(tmp_path: Path) -> None:
    program = compat_copy(PROGRAMS / "serve_and_return.py", tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(program), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        assert "serving" in (line.strip() for line in lines)  # main() has returned
        client = RiggerClient("127.0.0.1", port)
        client.ready = True
        out = client.fire_hook("greet", grab_result=True, name="you")
        assert out["greeting"] == "hello you"
        assert proc.poll() is None
        client.terminate()
        assert proc.wait(30) == 0
    finally:
        reap(proc)


def test_6_callables_may_name_config(rigger: Messages) -> None:
    got: list[Any] = []
    rigger.register_hook_callback("ev", "post", lambda config: got.append(config))
    started(rigger, {"extra": 1, **plugins(rec={"plugin": "recorder", "enabled": True})})
    rigger.fire_hook("ev", x=3).result(5)
    obj = rigger.get_instance_obj("rec")
    assert isinstance(obj, Recorder)
    assert obj.calls[0][1]["config"] is rigger.config
    assert got == [rigger.config]


@pytest.fixture
def served(dispatchers: Dispatchers) -> Iterator[tuple[Messages, int]]:
    r = dispatchers.add(Messages(None))
    started(r, {"server_enabled": True, "server_port": 0, "squash_exceptions": False,
                **plugins(bad={"plugin": "failing", "enabled": True})})
    r.register_hook_callback("echo", "pre", lambda n: ({"doubled": 2 * n}, None))
    assert r.server_port is not None
    yield r, r.server_port
    r.stop()


def test_7_the_client_returns_what_riggerlibs_returned(
    served: tuple[Messages, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = served
    client = RiggerClient("127.0.0.1", port)
    assert client.fire_hook("echo", n=1) is None  # not ready: nothing sent
    assert "set client.ready = True" in caplog.text
    client.ready = True
    assert client.fire_hook("echo", n=1) is None  # fired: riggerlib returned None
    assert client.fire_hook("echo", grab_result=True, n=2)["doubled"] == 4
    assert client.fire_hook("echo", wait_for_task=True, n=3) is True
    assert client.fire_hook("ev", grab_result=True) == {}  # a failed event, as riggerlib
    assert client.fire_hook("ev", wait_for_task=True) is True
    assert client.task_status("no-such-tid", grab_result=True) == {"message": "NOT FOUND"}
    tid = client._client.fire_hook("echo", wait_for_task=False, n=4)
    status = client.task_status(tid)
    assert status is not None and status["message"] == "OK" and status["status"] in (0, 1, 2)
    assert client.task_delete(tid) == {"message": "OK", "tid": tid}
    client.close()
    dead = RiggerClient("127.0.0.1", free_port())
    dead.ready = True
    assert dead.fire_hook("echo", n=1) is None
    assert dead.task_status("x") is None
    assert dead.task_delete("x") is None
    dead.terminate()  # no server: nothing raised, as riggerlib


def test_8_configure_plugin_of_a_missing_instance_does_nothing(
    rigger: Messages, caplog: pytest.LogCaptureFixture
) -> None:
    started(rigger, plugins(rec={"plugin": "recorder", "enabled": False}))
    rigger.configure_plugin("missing")
    assert "rigger_mp.Rigger raises PluginError" in caplog.text
    rigger.configure_plugin("rec")  # disabled instances are built, as riggerlib built them
    obj = rigger.get_instance_obj("rec")
    assert obj is not None and obj.configured


def test_9_events_fired_before_start_are_queued_in_order(rigger: Messages) -> None:
    early = rigger.fire_hook("ev", x=1)
    rigger.config = plugins(rec={"plugin": "recorder", "enabled": True})
    rigger.register_plugin(Recorder, "recorder")
    rigger.parse_config()
    rigger.fire_hook("ev", x=2)  # still held: initialized is not set yet
    rigger.global_data = {"seen": []}
    rigger.initialized = True
    last = rigger.fire_hook("ev", x=3)
    assert early.result(5)["x"] == 1
    last.result(5)
    assert rigger.global_data["seen"] == [1, 2, 3]


def test_9_tcp_fires_are_held_until_initialized_and_get_config(rigger: Messages) -> None:
    """The intake's batches are held like in-process events, and get ``config`` too."""
    rigger.config = {
        "server_enabled": True,
        "server_port": 0,
        **plugins(rec={"plugin": "recorder", "enabled": True}),
    }
    rigger.register_plugin(Recorder, "recorder")
    rigger.parse_config()
    obj = rigger.get_instance_obj("rec")
    assert isinstance(obj, Recorder) and rigger.server_port is not None
    with ModernClient("127.0.0.1", rigger.server_port, timeout=30) as client:
        client.fire_hook("ev", x=1)  # acked: in the intake once wait_background returns
        assert rigger.wait_background(30)
        assert obj.calls == []  # held: initialized is not set yet
        rigger.initialized = True
        assert client.fire_hook("ev", wait_for_task=True, x=2) is True
    config = rigger.config
    assert obj.calls == [("ev", {"x": 1, "config": config}), ("ev", {"x": 2, "config": config})]


def test_9_an_event_fired_after_stop_is_dropped_with_a_warning(
    rigger: Messages, caplog: pytest.LogCaptureFixture
) -> None:
    started(rigger, {})
    rigger.stop()
    task = rigger.fire_hook("ev", x=1)
    with pytest.raises(ShuttingDown):
        task.result(0)
    assert "rigger_mp.Rigger.fire_hook raises ShuttingDown" in caplog.text


def test_10_background_instances_need_no_main_guard(tmp_path: Path) -> None:
    program = compat_copy(PROGRAMS / "unguarded.py", tmp_path)
    out = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "packed a b c" in out.stdout.splitlines()


def test_register_plugin_hook_bg_is_ignored_as_riggerlib_ignored_it(
    rigger: Messages, caplog: pytest.LogCaptureFixture
) -> None:
    class Bg(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev", self.ev, bg=True)

        def ev(self) -> tuple[dict[str, Any], None]:
            return {"ran_in_foreground": True}, None

    rigger.register_plugin(Bg, "bg")
    started(rigger, plugins(b={"plugin": "bg", "enabled": True}))
    assert rigger.fire_hook("ev").result(5)["ran_in_foreground"] is True
    assert "riggerlib 3.1.6 did (it ignored bg)" in caplog.text


# -- the artifactor-style program under riggerlib 3.1.6 and under compat -------------


def compat_copy(program: Path, dest: Path) -> Path:
    """``program`` with its riggerlib import changed to rigger_mp.compat, nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    text = program.read_text()
    ported = text.replace("from riggerlib import ", "from rigger_mp.compat import ")
    changed = [
        (a, b) for a, b in zip(text.splitlines(), ported.splitlines(), strict=True) if a != b
    ]
    assert changed and all(a.startswith("from riggerlib import ") for a, _ in changed)
    target = dest / program.name
    target.write_text(ported)
    return target


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` and its children if they are still running."""
    try:
        family = [*psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(family, timeout=10)


@pytest.fixture(scope="session")
def riggerlib_python(request: pytest.FixtureRequest) -> Path:
    """A Python with riggerlib 3.1.6, pytest and pytest-xdist: built once, kept in the cache."""
    root = Path(str(request.config.cache.mkdir("compat-riggerlib-3.1.6")))
    python = root / "venv" / "bin" / "python"
    marker = root / "installed"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers build it once between them
        if not marker.exists():
            shutil.rmtree(root / "venv", ignore_errors=True)
            try:
                subprocess.run(
                    [sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=60
                )
                proc = subprocess.run(
                    [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                     "--timeout", "20", RIGGERLIB, "pytest", "pytest-xdist"],
                    capture_output=True, text=True, timeout=90, check=False,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"cannot build a venv with {RIGGERLIB}: {exc}")
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"cannot install {RIGGERLIB} from the package index: {tail}")
            marker.write_text(RIGGERLIB)
    return python


def run_session(python: Path, work: Path, env_extra: dict[str, str]) -> list[str]:
    """Run the artifactor program, a pytest -n 2 session firing to it, and its end."""
    port = free_port()
    config = {
        "log_dir": str(work / "log"),
        "artifact_dir": str(work / "artifacts"),
        "run_id": "run1",
        "per_run": "run",
        "squash_exceptions": True,
        "threaded": False,
        "server_enabled": True,
        "server_address": "127.0.0.1",
        "server_port": port,
        "plugins": {
            "filedump": {"plugin": "filedump", "enabled": True},
            "reporter": {"plugin": "reporter", "enabled": True},
            "archiver": {"plugin": "archiver", "enabled": True, "background": True},
            "flaky": {"plugin": "flaky", "enabled": True},
            "video": {"plugin": "video", "enabled": False},
        },
    }
    (work / "config.json").write_text(json.dumps(config))
    env = {**os.environ, **env_extra, "ARTIFACTOR_PORT": str(port)}
    path = [str(work / "session"), *env_extra.get("PYTHONPATH", "").split(os.pathsep)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    server_cmd = [str(python), str(work / "artifactor.py"), str(work / "config.json")]
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=work)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == f"serving {port}"
        session = subprocess.run(
            [str(python), "-m", "pytest", "-q", "-n", "2", "-p", "artifactor_client",
             "-p", "no:cacheprovider", "session_tests.py"],
            cwd=work / "session", env=env, capture_output=True, text=True, timeout=90,
            check=False,
        )
        assert session.returncode == 1, session.stdout + session.stderr  # one test fails
        finish = subprocess.run(
            [str(python), str(work / "session" / "finish_session.py"), str(port)],
            cwd=work, env=env, capture_output=True, text=True, timeout=60, check=True,
        )
        assert server.wait(60) == 0
    finally:
        reap(server)
    keys: list[str] = json.loads(finish.stdout.strip().splitlines()[-1])
    return keys


def artifacts(work: Path) -> dict[str, Any]:
    """Every file the program left, by relative path: text, or an archive's members."""
    found: dict[str, Any] = {}
    for path in sorted((work / "artifacts").rglob("*")) + sorted((work / "log").rglob("*")):
        rel = str(path.relative_to(work))
        if path.is_dir() or path.name == "artifactor.log":
            continue
        if path.suffix == ".gz":
            with tarfile.open(path) as tar:
                found[rel] = {
                    m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                }
        elif path.name == "failures.txt":
            found[rel] = sorted(path.read_text().splitlines())
        else:
            found[rel] = path.read_text()
    return found


def test_artifactor_program_matches_riggerlib(riggerlib_python: Path, tmp_path: Path) -> None:
    sources = [PROGRAMS / "artifactor.py"]
    session = sorted((PROGRAMS / "session").glob("*.py"))
    old, new = tmp_path / "riggerlib", tmp_path / "compat"
    for work, ported in ((old, False), (new, True)):
        for src in sources:
            if ported:
                compat_copy(src, work)
            else:
                work.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, work)
        for src in session:
            if ported and "from riggerlib import " in src.read_text():
                compat_copy(src, work / "session")
            else:
                (work / "session").mkdir(parents=True, exist_ok=True)
                shutil.copy(src, work / "session")
    old_keys = run_session(
        riggerlib_python, old, {"PYTHONPATH": str(PROGRAMS / "riggerlib_shims")}
    )
    new_keys = run_session(Path(sys.executable), new, {})
    assert set(new_keys) - {"archives"} == set(old_keys) - {"archives"}
    got, expected = artifacts(new), artifacts(old)
    assert got == expected
    assert len([k for k in got if k.endswith(".tar.gz")]) == 8
    assert got["log/failures.txt"] == ["ValueError: flaky plugin cannot start test_boom"]


def test_log_message_prints_as_riggerlibs_did(capsys: pytest.CaptureFixture[str]) -> None:
    r = Rigger(None)
    r.parse_config()
    r.stop()
    assert "started with 0 enabled instance(s)" in capsys.readouterr().out
    assert r.initialized is False  # only the program sets it, as in riggerlib
