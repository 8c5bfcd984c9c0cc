"""The live page's run view in Chromium: rows arrive while a real pytest run goes, the
names clients send stay text, and a run of 100,000 tests opens and filters in time."""

from __future__ import annotations

import json
import multiprocessing.resource_tracker
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from . import browser
from ._http import http_port, make_http_rigger
from ._live import finish, send_all
from ._tcp import WAIT, port_of
from .test_pytest_plugin import pytest_env

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOKEN = "runs-token"
HOSTILE = "<img src=x onerror=document.title='pwned'>"

SUITE = f"""
import os

import pytest


@pytest.mark.parametrize("n", range(12), ids=[f"{HOSTILE}{{i}}" for i in range(12)])
def test_quick(n):
    assert n % 5 != 3, "<b>not bold</b>"


def test_gate():
    # Held until the page has shown the rows above: a pipe the test process writes to.
    fd = os.open(os.environ["GATE"], os.O_RDONLY)
    assert os.read(fd, 1) == b"g"
    os.close(fd)
"""

UNTIL = """
new Promise((resolve) => {
  const check = () => {
    const rows = document.querySelectorAll("#tests tbody tr").length;
    const text = (selector) => [...document.querySelectorAll(selector)].map((e) => e.textContent);
    const busy = text("tr.lane.busy td.now");
    if (CONDITION) {
      observer.disconnect();
      resolve({
        rows: rows,
        busy: busy,
        names: text("#tests tbody td.name"),
        images: document.querySelectorAll("img").length,
        bolds: document.querySelectorAll("b").length,
        title: document.title,
        failures: text(".run-failure .traceback"),
        progress: document.getElementById("progress-text").textContent,
        counts: document.getElementById("counts").textContent,
      });
      return true;
    }
    return false;
  };
  const observer = new MutationObserver(check);
  const all = { childList: true, subtree: true, attributes: true };
  if (!check()) observer.observe(document.body, all);
})
"""


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    multiprocessing.resource_tracker.ensure_running()


def test_rows_arrive_on_the_page_while_a_real_pytest_run_goes(tmp_path: Path) -> None:
    browser.chromium()
    (tmp_path / "test_live.py").write_text(textwrap.dedent(SUITE))
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    held = os.open(gate, os.O_RDWR)  # the test's open does not wait; its read does
    rigger = make_http_rigger(server_token=TOKEN)
    proc = None
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "test_live.py",
                "--rigger-run-id=live-page",
                f"--rigger=127.0.0.1:{port_of(rigger)}",
                f"--rigger-token={TOKEN}",
            ],
            cwd=tmp_path,
            env=pytest_env(GATE=str(gate)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{http_port(rigger)}/#token={TOKEN}"
        shot = tmp_path / "live-run.png"
        seen = browser.evaluate_url(
            url,
            UNTIL.replace("CONDITION", 'rows >= 12 && busy.includes("test_gate")'),
            size=(1200, 1100),
            screenshot=shot,
        )
        running = proc.poll() is None  # the run still goes: test_gate waits on the pipe
        os.write(held, b"g")
        out, _ = proc.communicate(timeout=WAIT * 4)
    finally:
        os.close(held)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        rigger.stop()
    assert running and proc.returncode == 1, out
    assert seen["rows"] == 12 and seen["busy"] == ["test_gate"]
    assert sorted(seen["names"]) == sorted(
        f"test_live.py::test_quick[{HOSTILE}{i}]" for i in range(12)
    )
    assert seen["images"] == 0 and seen["bolds"] == 0 and seen["title"] == "rigger_mp live"
    assert len(seen["failures"]) == 2 and all("<b>not bold</b>" in f for f in seen["failures"])
    assert "12 of 13 expected" in seen["progress"] and "1 running" in seen["progress"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RIGGER_MP_WRITE_DOCS"):
        (DOCS / "live-run.png").write_bytes(shot.read_bytes())


FIRST_AND_FILTER = """
new Promise((resolve) => {
  const ready = () => document.body.dataset.updates !== "0";
  const measure = () => {
    const first = Number(document.body.dataset.first);
    const input = document.getElementById("filter");
    const began = performance.now();
    const done = new MutationObserver(() => {
      if (document.body.dataset.filtered) {  // timed to the frame after the rows changed
        done.disconnect();
        requestAnimationFrame(() => setTimeout(() => resolve({
          first: first,
          filter: performance.now() - began,
          shown: document.querySelectorAll("#tests tbody tr").length,
          count: document.getElementById("test-count").textContent,
          total: document.getElementById("progress-text").textContent,
        }), 0));
      }
    });
    done.observe(document.body, { attributes: true });
    input.value = "test_4242";
    input.dispatchEvent(new Event("input"));
  };
  if (ready()) { measure(); return; }
  const wait = new MutationObserver(() => { if (ready()) { wait.disconnect(); measure(); } });
  wait.observe(document.body, { attributes: true });
})
"""


def test_a_run_of_100000_tests_opens_and_filters_in_time(tmp_path: Path) -> None:
    browser.chromium()
    rigger = make_http_rigger(plugins={})
    try:
        tests = 100_000
        events = [
            finish("big", f"test_{i}", "failed", longrepr="E   assert 1 == 2")
            if i % 1000 == 7
            else finish("big", f"test_{i}")
            for i in range(tests)
        ]
        assert send_all(port_of(rigger), events) == tests
        shot = tmp_path / "live-100k.png"
        seen = browser.evaluate_url(
            f"http://127.0.0.1:{http_port(rigger)}/", FIRST_AND_FILTER, screenshot=shot
        )
    finally:
        rigger.stop()
    print(json.dumps(seen))
    # test_4242, test_42420..test_42429: 11 of 100,000
    assert seen["shown"] == 11 and "11 match" in seen["count"]
    assert "100,000 done" in seen["total"]
    assert seen["first"] < 3000, seen
    assert seen["filter"] < 300, seen
    if os.environ.get("RIGGER_MP_WRITE_DOCS"):
        (DOCS / "live-100k.png").write_bytes(shot.read_bytes())
