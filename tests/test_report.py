"""The report plugin: the page's figures, order, bound, escaping and links, in a real
browser (headless Chromium, see tests/browser.py) and without one."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import PluginError, Rigger, RiggerClient
from rigger_mp.core.loading import resolve_plugin
from rigger_mp.plugins import artifacts, report, report_page, runs
from rigger_mp.plugins.archive import FORMATS, ArchivePlugin
from rigger_mp.plugins.report import ReportPlugin
from rigger_mp.plugins.report_page import Links, script_json
from tests import browser

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_LOCATION = "</script><img src=x onerror=alert(2)>.py"
HOSTILE_RESULT = "<b>bold</b>"

# (location, name, result, duration carried by the event)
SESSION = [
    ("tests/test_login.py", "test_ok", "passed", 0.5),
    ("tests/test_login.py", "test_bad_password", "failed", 1.5),
    ("tests/test_cart.py", "test_add[chrome]", "passed", 0.02),
    ("tests/test_cart.py", "test_add[firefox]", "error", 12.0),
    ("tests/test_cart.py", "test_remove", "skipped", 0.001),
    ("tests/test_search.py", HOSTILE_NAME, "failed", 3.0),
    (HOSTILE_LOCATION, "test_x", "passed", 75.0),
    ("tests/test_search.py", "test_y", HOSTILE_RESULT, 0.2),
    ("tests/test_search.py", "test_login_link", "passed", 0.3),
]


def report_config(root: Path, **keys: Any) -> dict[str, Any]:
    return {"plugins": {"report": {"plugin": "report", "dir": str(root), **keys}}}


def fire_session(rigger: Rigger, tests: list[tuple[str, str, str, float]], run_id: str) -> None:
    """start_session, each test's start/finish (carrying its duration), finish_session."""
    rigger.fire_hook("start_session", run_id=run_id)
    for location, name, result, seconds in tests:
        where = {"test_location": location, "test_name": name, "run_id": run_id}
        rigger.fire_hook("start_test", **where)
        rigger.fire_hook("finish_test", test_result=result, duration=seconds, **where)
    rigger.fire_hook("finish_session", run_id=run_id, exit_status=1).result(30)


def run_page(root: Path, run_id: str) -> Path:
    """Where the report of ``run_id`` is: in the run's directory, if it has an id."""
    name = runs.run_dir_name(run_id)
    return root / "report.html" if name is None else root / name / "report.html"


def page_data(page: Path) -> dict[str, Any]:
    """The JSON the page carries inline."""
    text = page.read_text("utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text)
    assert found is not None
    data: dict[str, Any] = json.loads(found[1])
    return data


class Dom(HTMLParser):
    """What a reader sees in the rendered page: rows, counts, elements by tag."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.links: list[list[tuple[str, str]]] = []
        self.counts: dict[str, int] = {}
        self.tags: dict[str, int] = {}
        self.by_id: dict[str, str] = {}
        self._in_rows = False
        self._td: list[str] | None = None
        self._dd: str | None = None
        self._id: str | None = None
        self._href: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if a.get("id") == "rows":
            self._in_rows = True
        elif self._in_rows and tag == "tr":
            self.rows.append([])
            self.links.append([])
        elif self._in_rows and tag == "td":
            self._td = []
        elif self._in_rows and tag == "a":
            self._href = a.get("href") or ""
        if tag == "dd":
            self._dd = a.get("data-result") or a.get("id")
        ident = a.get("id")
        if ident in ("shown", "unlisted"):
            self._id = ident
            self.by_id[ident] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_rows = False
        elif tag == "td" and self._td is not None:
            self.rows[-1].append("".join(self._td))
            self._td = None
        elif tag in ("dd",):
            self._dd = None
        elif tag in ("span", "p"):
            self._id = None

    def handle_data(self, data: str) -> None:
        if self._td is not None:
            self._td.append(data)
            if self._href is not None:
                self.links[-1].append((self._href, data))
                self._href = None
        if self._dd is not None:
            self.counts[self._dd] = int(data.replace(",", ""))
        if self._id is not None:
            self.by_id[self._id] += data


# -- without a browser ------------------------------------------------------------------


def test_script_json_cannot_leave_its_script_element() -> None:
    value = {"n": "</script><!-- & \u2028\u2029 <script>", "k": ["a>b"]}
    text = script_json(value)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == value


def test_hostile_names_are_text_in_the_html(tmp_path: Path) -> None:
    with Rigger(report_config(tmp_path)) as rigger:
        fire_session(rigger, SESSION, "r<1>")
    page = tmp_path / "r_1_" / "report.html"
    text = page.read_text("utf-8")
    # Only the page's own two script elements, and no element a name could have made.
    assert text.count("<script") == 2 and text.count("</script>") == 2
    assert "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # the slowest table (HTML)
    assert "<title>rigger_mp report: run r&lt;1&gt;</title>" in text
    names = {t[2] for t in page_data(page)["tests"]}
    assert HOSTILE_NAME in names


def test_failures_first_then_by_location_and_name(tmp_path: Path) -> None:
    with Rigger(report_config(tmp_path)) as rigger:
        rigger.fire_hook("start_test", test_name="never_finished", test_location="a.py")
        fire_session(rigger, SESSION, "")
    tests = page_data(tmp_path / "report.html")["tests"]
    results = [t[0] for t in tests]
    assert results == [
        "failed",
        "failed",
        "error",
        "missing",
        HOSTILE_RESULT,
        "skipped",
        "passed",
        "passed",
        "passed",
        "passed",
    ]
    assert [t[1:3] for t in tests[:2]] == [
        ["tests/test_login.py", "test_bad_password"],
        ["tests/test_search.py", HOSTILE_NAME],
    ]
    passed = [(t[1], t[2]) for t in tests if t[0] == "passed"]
    assert passed == sorted(passed)


def test_max_tests_bounds_the_rows_and_the_report_says_so(tmp_path: Path) -> None:
    with Rigger(report_config(tmp_path, max_tests=3)) as rigger:
        fire_session(rigger, SESSION, "r")
        instance = rigger.get_instance_obj("report")
        assert isinstance(instance, ReportPlugin)
        instance.writer.wait()
        assert instance.runs.held == (0, 0)  # the written run's tests left the bound
    page = run_page(tmp_path, "r")
    assert len(page_data(page)["tests"]) == 3
    dom = Dom(page.read_text("utf-8"))
    assert dom.counts["count-all"] == len(SESSION)
    assert dom.counts["failed"] == 2 and dom.counts["passed"] == 4
    assert "6 tests beyond max_tests (3)" in dom.by_id["unlisted"]
    # The unlisted tests' carried durations still count: 75 s is the slowest.
    assert "1 min 15 s" in page.read_text("utf-8")


def test_many_sources_interleaved_give_the_same_report(tmp_path: Path) -> None:
    """Three TCP clients (xdist workers, hosts) fire their tests at once; the controller
    fires the session events. The list does not depend on the interleaving."""
    tests = [
        (f"tests/test_{w}.py", f"test_{i}", random.choice(["passed", "failed"]), 0.1)
        for w in range(3)
        for i in range(40)
    ]
    config = {**report_config(tmp_path), "server_enabled": True, "server_port": 0}
    with Rigger(config) as rigger:
        assert rigger.server_port is not None
        port = rigger.server_port
        with RiggerClient("127.0.0.1", port) as controller:
            controller.fire_hook("start_session", run_id="R")

            def worker(w: int) -> None:
                with RiggerClient("127.0.0.1", port) as client:
                    for location, name, result, _ in tests[w * 40 : (w + 1) * 40]:
                        where: dict[str, Any] = {
                            "test_location": location,
                            "test_name": name,
                            "run_id": "R",
                        }
                        client.fire_hook("start_test", **where)
                        # The same name in another run must not be confused with this one.
                        client.fire_hook("start_test", **{**where, "run_id": "other"})
                        client.fire_hook("finish_test", test_result=result, **where)

            threads = [threading.Thread(target=worker, args=(w,)) for w in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            controller.fire_hook("finish_session", run_id="R", wait_for_task=True)
        instance = rigger.get_instance_obj("report")
        assert isinstance(instance, ReportPlugin)
        instance.writer.wait()
        over_tcp = page_data(run_page(tmp_path, "R"))["tests"]
        shuffled = random.sample(tests, len(tests))
        fire_session(rigger, shuffled, "R")
    in_order = page_data(run_page(tmp_path, "R"))["tests"]
    assert len(over_tcp) == len(tests)
    assert all(t[3] is not None and t[3] >= 0 for t in over_tcp)  # measured
    assert [t[:3] for t in over_tcp] == [t[:3] for t in in_order]
    assert sum(t[0] == "failed" for t in over_tcp) == sum(t[2] == "failed" for t in tests)


def test_a_run_is_reported_alone_and_old_open_runs_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "MAX_RUNS", 2)
    with Rigger(report_config(tmp_path)) as rigger:
        for run_id in ("a", "b", "c"):  # "a" is dropped when "c" opens
            rigger.fire_hook("start_test", test_name=f"t_{run_id}", run_id=run_id)
        rigger.fire_hook("finish_session", run_id="b").result(30)
        rigger.fire_hook("finish_session", run_id="a").result(30)  # dropped: ends nothing
    assert [t[2] for t in page_data(run_page(tmp_path, "b"))["tests"]] == ["t_b"]
    assert not run_page(tmp_path, "a").exists()  # no empty report for the dropped run


def test_durations_are_measured_unless_the_event_carries_one(tmp_path: Path) -> None:
    with Rigger(report_config(tmp_path)) as rigger:
        rigger.fire_hook("start_test", test_name="measured")
        rigger.fire_hook("finish_test", test_name="measured", test_result="passed")
        rigger.fire_hook("finish_test", test_name="carried", test_result="passed", duration=2.5)
        for bad in ("2", -1, float("nan"), True):
            rigger.fire_hook(
                "finish_test", test_name=f"bad {bad!r}", test_result="passed", duration=bad
            )
        rigger.fire_hook("finish_session").result(30)
    durations = {t[2]: t[3] for t in page_data(run_page(tmp_path, ""))["tests"]}
    assert durations.pop("carried") == 2.5
    assert 0 <= durations.pop("measured") < 30
    assert set(durations.values()) == {None}


def test_archives_are_linked_present_pending_or_failed(tmp_path: Path) -> None:
    """An archiver on an event of its own: finish_session comes before some archives."""
    root = tmp_path / "art"
    config: dict[str, Any] = {
        "plugins": {
            "log": {"plugin": "testlog"},
            "arch": {"plugin": "archive", "event": "pack", "background": False, "root": str(root)},
            "report": {"plugin": "report"},
        }
    }
    with Rigger(report.with_dir(config, root)) as rigger:
        artifacts.install(rigger, root)
        for name in ("made", "later", "gone"):
            rigger.fire_hook("start_test", test_name=name, test_location="tests/t.py")
            rigger.fire_hook(
                "finish_test", test_name=name, test_location="tests/t.py", test_result="passed"
            )
        rigger.fire_hook("pack", artifact_path=str(root / "tests/t.py/made")).result(30)
        shutil.rmtree(root / "tests/t.py/gone")
        rigger.fire_hook("pack", artifact_path=str(root / "tests/t.py/gone"))
        rigger.fire_hook("finish_session").result(30)
        instance = rigger.get_instance_obj("report")
        assert isinstance(instance, ReportPlugin)
        instance.writer.wait()
        before = {t[2]: t[6:10] for t in page_data(root / "report.html")["tests"]}
        rigger.fire_hook("pack", artifact_path=str(root / "tests/t.py/later")).result(30)
    assert report.rewrite_reports(rigger.instances) == [root / "report.html"]
    after = {t[2]: t[6:10] for t in page_data(root / "report.html")["tests"]}
    archiver = rigger.get_instance_obj("arch")
    assert isinstance(archiver, ArchivePlugin)
    ext = FORMATS[archiver.format].suffix  # whichever the archive plugin defaults to
    assert before["made"][:3] == ["./tests/t.py/made", "present", f"./tests/t.py/made{ext}"]
    assert before["later"][:3] == ["./tests/t.py/later", "pending", f"./tests/t.py/later{ext}"]
    assert before["gone"] == [None, "failed", None, "missing directory"]
    assert after["later"][:3] == ["./tests/t.py/later", "present", f"./tests/t.py/later{ext}"]


def test_paths_outside_the_root_get_no_link(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "javascript:alert(1)").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "link")
    links = Links(root.resolve(), {}, None)
    assert links.href(root / "javascript:alert(1)") == "./javascript%3Aalert%281%29"
    assert links.href(tmp_path / "outside") is None
    assert links.href(root / "link") is None
    assert links.href(root / ".." / "outside") is None
    assert links.href(root) is None
    forged = {str(tmp_path / "outside"): {"archive": str(tmp_path / "outside")}}
    assert Links(root.resolve(), forged, None).archive(str(tmp_path / "outside"))[1] is None


def test_config_is_checked_and_the_plugin_is_built_in(tmp_path: Path) -> None:
    assert resolve_plugin("report", "r", {}) is ReportPlugin
    for bad in (
        {"max_tests": -1},
        {"max_tests": "10"},
        {"dir": ""},
        {"background": True},
        {"archive": 3},
    ):
        with pytest.raises(PluginError):
            ReportPlugin("r", bad)
    config = {"plugins": {"a": {"plugin": "report"}, "b": {"plugin": "report", "dir": "x"}}}
    filled = report.with_dir(config, tmp_path)
    assert filled["plugins"]["a"]["dir"] == str(tmp_path)
    assert filled["plugins"]["b"]["dir"] == "x"
    assert "dir" not in config["plugins"]["a"]  # a copy


def test_the_page_assets_ship_with_the_package() -> None:
    js = report_page.asset("report.js")
    assert "</script" not in js.lower() and "fetch(" not in js
    assert "$title" in report_page.asset("report.html")


# -- in Chromium -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    with Rigger(report_config(root)) as rigger:
        rigger.fire_hook(
            "start_test", test_name="hangs", test_location="tests/test_cart.py", run_id="run-1"
        )
        fire_session(rigger, SESSION, "run-1")
    return run_page(root, "run-1")


def test_browser_shows_the_counts_and_rows_of_the_events(page: Path) -> None:
    dom = Dom(browser.dump_dom(page))
    expected: dict[str, int] = {"missing": 1}
    for _, _, result, _ in SESSION:
        expected[result] = expected.get(result, 0) + 1
    assert {k: v for k, v in dom.counts.items() if k != "count-all"} == expected
    assert dom.counts["count-all"] == len(SESSION) + 1
    rows = [row for row in dom.rows if len(row) > 1]  # a detail row is one cell
    assert len(rows) == len(SESSION) + 1
    assert [row[0] for row in rows[:4]] == ["failed", "failed", "error", "missing"]
    assert dom.rows[-1][0] == "passed"
    missing = dom.rows.index(rows[3])
    assert dom.rows[missing + 1] == ["reason: started, never finished (no finish_test)"]
    assert (
        dom.by_id["shown"] == f"{len(SESSION) + 1} of {len(SESSION) + 1} matching "
        f"({len(SESSION) + 1} listed)"
    )
    by_name = {row[2]: row for row in rows}
    assert by_name["test_add[firefox]"][1:4] == [
        "tests/test_cart.py",
        "test_add[firefox]",
        "12.00 s",
    ]
    assert by_name["test_x"][1] == HOSTILE_LOCATION and by_name["test_x"][3] == "1 min 15 s"
    # The hostile strings are text: no element they spell was made.
    assert HOSTILE_NAME in by_name and by_name["test_y"][0] == HOSTILE_RESULT
    assert dom.tags.get("script") == 2 and "img" not in dom.tags and "b" not in dom.tags


@pytest.mark.parametrize(
    ("fragment", "result", "text"),
    [
        ("#result=failed", "failed", ""),
        ("#q=LOGIN", "", "login"),
        ("#result=passed&q=login", "passed", "login"),
        ("#q=%3Cscript%3E", "", "<script>"),
        ("#result=" + "%3Cb%3Ebold%3C%2Fb%3E", HOSTILE_RESULT, ""),
    ],
)
def test_browser_filters_by_result_and_search(
    page: Path, fragment: str, result: str, text: str
) -> None:
    dom = Dom(browser.dump_dom(page, fragment))
    expected = [
        (location, name)
        for location, name, res, _ in SESSION
        if (not result or res == result) and text in f"{location}::{name}".lower()
    ]
    assert expected, "each case matches something"
    assert sorted((row[1], row[2]) for row in dom.rows) == sorted(expected)
    assert dom.by_id["shown"].startswith(f"{len(expected)} of {len(expected)} matching")


def test_browser_screenshot(page: Path, tmp_path: Path) -> None:
    shot = browser.screenshot(page, tmp_path / "report.png", size=(900, 700))
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (900, 700)


def test_a_missing_browser_skips_loudly_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("RIGGER_MP_NO_BROWSER", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="BROWSER TESTS NOT RUN"):
        browser.chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no Chromium"):
        browser.chromium()
    monkeypatch.setenv("RIGGER_MP_NO_BROWSER", "apt-get failed")
    with pytest.raises(pytest.skip.Exception, match="apt-get failed"):
        browser.chromium()


# -- the hosts: serve and the demo enable it and print its path ---------------------------


def test_serve_writes_the_report_and_prints_its_path_after_the_drain(tmp_path: Path) -> None:
    from tests.test_cli import Served

    root = tmp_path / "art"
    served = Served("--artifacts", str(root), cwd=tmp_path)
    try:
        with RiggerClient("127.0.0.1", int(served.port)) as client:
            client.fire_hook("start_session", run_id="S")
            for n in range(3):
                where: dict[str, Any] = {
                    "test_location": "tests/test_s.py",
                    "test_name": f"t{n}",
                    "run_id": "S",
                }
                client.fire_hook("start_test", **where)
                client.fire_hook("finish_test", test_result="failed" if n else "passed", **where)
            client.fire_hook("finish_session", run_id="S", wait_for_task=True)
        assert served.cmd("terminate").returncode == 0
        status, out, err = served.finish()
    finally:
        served.kill()
    assert status == 0, err
    assert out.splitlines()[-1] == f"rigger-mp: report: {root.absolute() / 'S' / 'report.html'}"
    tests = page_data(root / "S" / "report.html")["tests"]
    assert [(t[0], t[2]) for t in tests] == [("failed", "t1"), ("failed", "t2"), ("passed", "t0")]
    for t in tests:  # rewritten after the drain: every archive is made
        assert t[7] == "present" and t[8].startswith(f"./tests/test_s.py/{t[2]}.tar."), t


def test_demo_prints_the_report_path(tmp_path: Path) -> None:
    from tests.test_cli import rigger_mp

    done = rigger_mp("demo", "--tests", "2", "--workers", "1", "--dir", str(tmp_path), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("report: "), last
    page = Path(last.removeprefix("report: "))  # the run's own directory
    assert page.name == "report.html" and page.parent.parent == tmp_path / "artifacts"
    assert (page.parent / "junit.xml").is_file()  # serve's default config writes it too
    assert [t[7] for t in page_data(page)["tests"]] == ["present", "present"]
