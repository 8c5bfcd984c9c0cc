"""A run's files: one directory per run, the runs' index, planted links never followed,
and the report written off the event thread (finish_session returns while the writer is
still busy; stop() waits for the file)."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.plugins import run_index
from rigger_mp.plugins.report import ReportPlugin
from rigger_mp.plugins.run_writer import Writer
from tests import _story, browser
from tests.test_report import page_data


def config(root: Path, **keys: Any) -> dict[str, Any]:
    return {
        "plugins": {
            "report": {"plugin": "report", "dir": str(root), **keys},
            "junit": {"plugin": "junit", "dir": str(root)},
        }
    }


def fire_run(rigger: Rigger, run_id: str, results: list[str]) -> None:
    rigger.fire_hook("start_session", run_id=run_id)
    for n, result in enumerate(results):
        rigger.fire_hook(
            "finish_test",
            run_id=run_id,
            test_location="tests/test_a.py",
            test_name=f"test_{n}",
            test_result=result,
            outcome=result,
        )
    rigger.fire_hook("finish_session", run_id=run_id, exit_status=0).result(30)


class Index(HTMLParser):
    """The index's rows: the cells' text and the links of each row."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[tuple[list[str], list[str]]] = []
        self._cell: list[str] | None = None
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append(([], []))
        elif self._in_body and tag == "td":
            self._cell = []
        elif self._in_body and tag == "a":
            self.rows[-1][1].append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][0].append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_each_run_has_its_directory_and_the_index_lists_them_newest_first(
    tmp_path: Path,
) -> None:
    with Rigger(config(tmp_path)) as rigger:
        fire_run(rigger, "runA", ["passed", "failed", "passed"])
    # A later dispatcher (the next pytest session) on the same root.
    with Rigger(config(tmp_path)) as rigger:
        fire_run(rigger, "runB", ["passed", "skipped"])
        rigger.fire_hook("finish_test", test_name="no_run", test_result="passed")
        rigger.fire_hook("finish_session").result(30)  # no run id: today's root/report.html
    for run_id, count in (("runA", 3), ("runB", 2)):
        assert len(page_data(tmp_path / run_id / "report.html")["tests"]) == count
        assert (tmp_path / run_id / "junit.xml").is_file()
    assert [t[2] for t in page_data(tmp_path / "report.html")["tests"]] == ["no_run"]
    index = Index((tmp_path / "index.html").read_text("utf-8"))
    assert [row[0][0] for row in index.rows] == ["runB", "runA"]
    (b_cells, b_links), (a_cells, a_links) = index.rows
    assert a_cells[3] == "3" and a_cells[4] == "1 failed · 2 passed"
    assert b_cells[3] == "2" and b_cells[4] == "1 skipped · 1 passed"
    assert a_links == ["./runA/report.html", "./runA/report.html", "./runA/junit.xml"]
    assert b_links[-1] == "./runB/junit.xml"


def test_a_run_id_is_one_safe_directory_name(tmp_path: Path) -> None:
    with Rigger(config(tmp_path)) as rigger:
        fire_run(rigger, "../../etc/<x>", ["passed"])
    assert sorted(os.listdir(tmp_path)) == ["_.._etc_x_", "index.html"]
    index = Index((tmp_path / "index.html").read_text("utf-8"))
    assert index.rows[0][0][0] == "../../etc/<x>"  # the id as text, its directory safe
    assert index.rows[0][1][0] == "./_.._etc_x_/report.html"


def test_a_planted_link_at_the_index_or_a_report_is_replaced_not_followed(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "r").mkdir(parents=True)
    outside.mkdir()
    for name in ("index", "report"):
        (outside / name).write_text("keep")
    os.symlink(outside / "index", root / "index.html")
    os.symlink(outside / "report", root / "r" / "report.html")
    with Rigger(config(root)) as rigger:
        fire_run(rigger, "r", ["passed"])
    assert [(outside / n).read_text() for n in ("index", "report")] == ["keep", "keep"]
    assert not (root / "index.html").is_symlink() and not (root / "r" / "report.html").is_symlink()
    assert Index((root / "index.html").read_text("utf-8")).rows[0][0][0] == "r"


def test_a_planted_link_at_the_run_directory_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "r")
    with caplog.at_level(logging.ERROR, "rigger_mp"), Rigger(config(root)) as rigger:
        fire_run(rigger, "r", ["passed"])
        fire_run(rigger, "fine", ["passed"])
    assert os.listdir(outside) == []  # nothing written through the link
    refused = [r.getMessage() for r in caplog.records if "writing" in r.getMessage()]
    assert len(refused) == 2  # the report and the JUnit file, each logged
    assert all(
        r.exc_info and "symbolic link" in str(r.exc_info[1])
        for r in caplog.records
        if "writing" in r.getMessage()
    )
    assert len(page_data(root / "fine" / "report.html")["tests"]) == 1  # the next run is fine


def test_the_index_reads_run_files_as_hostile_input(tmp_path: Path) -> None:
    planted = {
        "huge": b"{" + b" " * (run_index.MAX_RUN_FILE + 1) + b"}",
        "broken": b"{not json",
        "list": b"[1, 2]",
        "evil": json.dumps(
            {
                "run_id": "<img src=x onerror=alert(1)>",
                "counts": {"<b>x</b>": 2, "n": "NaN"},
                "finished": 1e300,
                "exit_status": True,
            }
        ).encode(),
    }
    for name, data in planted.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_bytes(data)
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "evil" / "run.json", tmp_path / "linked" / "run.json")
    page = run_index.write_index(tmp_path).read_text("utf-8")
    index = Index(page)
    assert [row[0][0] for row in index.rows] == ["<img src=x onerror=alert(1)>"]
    assert "<img" not in page and "<b>" not in page
    assert index.rows[0][0][4] == "2 <b>x</b>" and index.rows[0][0][5] == "\u2014"


@pytest.mark.timeout(600)  # 100,000 events and two files of 100,000 tests, on a busy machine
def test_finish_session_hands_100000_tests_to_a_writer_and_stop_waits_for_it(
    tmp_path: Path,
) -> None:
    tests = 100_000
    with Rigger(config(tmp_path)) as rigger:
        rigger.fire_hook("start_session", run_id="big")
        last = rigger.fire_many(
            (
                "finish_test",
                {
                    "run_id": "big",
                    "test_location": f"tests/test_{i % 100}.py",
                    "test_name": f"test_{i}",
                    "test_result": "failed" if i % 1000 == 0 else "passed",
                    "duration": 0.001 * (i % 50),
                    "worker": f"gw{i % 4}",
                    "host": "ci-host-1",
                },
            )
            for i in range(tests)
        )[-1]
        last.result(600)
        plugins = [rigger.get_instance_obj(name) for name in ("report", "junit")]
        assert isinstance(plugins[0], ReportPlugin)
        # Each writer first waits on a gate: the run's files can only be written after it
        # opens, so finish_session returning proves they are written off the event thread.
        gate = threading.Event()
        for plugin in plugins:
            getattr(plugin, "writer").submit(gate.wait, "the gate")  # noqa: B009
        try:
            rigger.fire_hook("finish_session", run_id="big", exit_status=1).result(60)
            assert not (tmp_path / "big" / "report.html").exists()
            assert not (tmp_path / "big" / "junit.xml").exists()
            assert plugins[0].runs.held[0] == tests
        finally:
            gate.set()
        # stop() (leaving the block) must wait for both files: seconds of work.
    data = page_data(tmp_path / "big" / "report.html")
    assert len(data["tests"]) == tests
    assert sum(t[0] == "failed" for t in data["tests"]) == tests // 1000
    junit = (tmp_path / "big" / "junit.xml").read_text("utf-8")
    assert junit.count("<testcase ") == tests and junit.rstrip().endswith("</testsuites>")
    assert plugins[0].runs.held == (0, 0)


def test_a_failing_write_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = Writer("w")
    done = threading.Event()

    def fail() -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.ERROR, "rigger_mp"):
        writer.submit(fail, "the first file")
        writer.submit(done.set, "the second file")
        assert writer.close(30)
    assert done.is_set()
    assert re.search(r"w: writing the first file failed", caplog.text)
    assert "disk full" in caplog.text


def test_a_missing_root_is_made(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    with Rigger(config(root)) as rigger:
        fire_run(rigger, "r", ["passed"])
    assert len(page_data(root / "r" / "report.html")["tests"]) == 1
    assert (root / "r" / "junit.xml").is_file()


def test_stop_lets_each_plugin_finish_and_logs_one_that_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[float | None] = []

    class Finishes(RiggerBasePlugin):
        def plugin_stop(self, timeout: float | None) -> None:
            calls.append(timeout)

    class Raises(RiggerBasePlugin):
        def plugin_stop(self, timeout: float | None) -> None:
            raise RuntimeError("cannot finish")

    rigger = Rigger({"plugins": {"a": {"plugin": "raises"}, "b": {"plugin": "finishes"}}})
    rigger.register_plugin(Raises, "raises")
    rigger.register_plugin(Finishes, "finishes")
    rigger.start()
    with caplog.at_level(logging.ERROR, "rigger_mp"):
        rigger.stop(timeout=30)
    assert len(calls) == 1 and calls[0] is not None and 0 < calls[0] <= 30
    assert "plugin_stop of instance 'a' failed" in caplog.text and "cannot finish" in caplog.text


def test_browser_shows_the_index_and_a_screenshot_for_the_docs(tmp_path: Path) -> None:
    with Rigger(config(tmp_path)) as rigger:
        for run_id in ("nightly-2026-12-06", "nightly-2026-12-07"):
            _story.fire_run(rigger, tmp_path, run_id)
    shot = tmp_path / "runs-index.png"
    rows = browser.evaluate(
        tmp_path / "index.html",
        "Array.from(document.querySelectorAll('#runs tbody tr'), tr => tr.cells[0].innerText)",
        size=(1000, 300),
        screenshot=shot,
    )
    assert rows == ["nightly-2026-12-07", "nightly-2026-12-06"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RIGGER_MP_WRITE_DOCS"):
        (Path(__file__).resolve().parent.parent / "docs" / "runs-index.png").write_bytes(
            shot.read_bytes()
        )
