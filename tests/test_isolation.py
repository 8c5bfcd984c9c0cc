"""Code in the working directory: never run by the server process, the workers, the
fork server or the main process of ``rigger-mp serve`` unless a config names it.

The working directory of a real ``serve`` subprocess (the console script, and
``python -m rigger_mp``) holds a ``hmac.py``, a ``json.py`` and a ``pickle.py`` that
write a marker file when imported (and then stand in for the real module, so that the
run goes on either way). After it served foreground and backgrounded events and
stopped, no marker exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from rigger_mp.client import RiggerClient
from tests.conftest import assert_processes_gone
from tests.test_cli import ROOT, SERVING

WAIT = 60.0
SHADOWED = ("hmac", "json", "pickle")

MARKER_MODULE = """\
import importlib, os, sys
_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "IMPORTED-{name}-%d" % os.getpid()), "w") as _out:
    _out.write(" ".join(sys.argv))
del sys.modules["{name}"]
_saved = list(sys.path)
sys.path[:] = [p for p in sys.path if p not in ("", ".", _here)]
try:
    sys.modules["{name}"] = importlib.import_module("{name}")
finally:
    sys.path[:] = _saved
"""

PLUGIN_MODULE = """\
import os
from rigger_mp import RiggerBasePlugin

class Where(RiggerBasePlugin):
    '''Writes the pid it ran in to a file named after the event's ``n``.'''

    def plugin_initialize(self):
        self.register_plugin_hook("work", self.work)

    def work(self, n):
        with open(os.path.join(self.data["out"], f"{self.ident}-{n}"), "w") as f:
            f.write(str(os.getpid()))
"""


def serve_command(how: str) -> list[str]:
    if how == "script":
        script = shutil.which("rigger-mp", path=os.path.dirname(sys.executable))
        assert script is not None, "the rigger-mp console script is not installed"
        return [script]
    return [sys.executable, "-m", "rigger_mp"]


@pytest.mark.parametrize("how", ["script", "module"])
def test_modules_in_the_working_directory_are_never_imported(tmp_path: Path, how: str) -> None:
    cwd, out, plugins = tmp_path / "cwd", tmp_path / "out", tmp_path / "plugins"
    for path in (cwd, out, plugins):
        path.mkdir()
    for name in SHADOWED:
        (cwd / f"{name}.py").write_text(MARKER_MODULE.format(name=name))
    # Under `python -m` a plugin module in the working directory that the config names
    # still imports (the directory comes last on sys.path); the script never had it.
    plugin_file = (cwd if how == "module" else plugins) / "where_plugin.py"
    plugin_file.write_text(PLUGIN_MODULE)
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            workers: 1
            plugins:
              fg: {{plugin: "where_plugin:Where", out: "{out}"}}
              bg: {{plugin: "where_plugin:Where", out: "{out}", background: true}}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{plugins}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*serve_command(how), "serve", "--port", "0", "-c", str(config)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = SERVING.match(first)
        assert match is not None, f"serve did not start: {first!r}\n{proc.communicate()[1]}"
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        with RiggerClient(port=int(match["port"]), timeout=WAIT) as client:
            for n in range(3):
                assert client.fire_hook("work", wait_for_task=True, n=n)
            assert client.ping()
            assert client.terminate()
        _, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
        assert_processes_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    ran = {p.name: int(p.read_text()) for p in out.iterdir()}
    assert sorted(ran) == [f"{ident}-{n}" for ident in ("bg", "fg") for n in range(3)]
    assert ran["fg-0"] == proc.pid and ran["bg-0"] != proc.pid  # a worker ran bg
    imported = sorted(p.name for p in cwd.iterdir() if p.name.startswith("IMPORTED-"))
    assert imported == [], f"modules of the working directory were imported: {imported}"
