"""Each test's story in the report: failure text (collapsed, expandable), captured
sections, attachments (thumbnails linking to the files), worker and host, xfailed and
xpassed, flaky tests, markers, the environment; the bounds on the text it keeps; the
wrap and the deep link, measured in Chromium; the screenshots of the docs."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import PluginError, Rigger
from rigger_mp.plugins.report import ReportPlugin
from rigger_mp.plugins.run_values import CUT_NOTE
from rigger_mp.plugins.runs import Limits, Runs
from tests import _story, browser
from tests.test_report import Dom, page_data

DOCS = Path(__file__).resolve().parent.parent / "docs"


def report_config(root: Path, **keys: Any) -> dict[str, Any]:
    return {"plugins": {"report": {"plugin": "report", "dir": str(root), **keys}}}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("story")
    with Rigger(report_config(root)) as rigger:
        _story.fire_run(rigger, root, "run-1")
    return root / "run-1" / "report.html"


def by_name(page: Path) -> dict[str, list[Any]]:
    return {t[2]: t for t in page_data(page)["tests"]}


# -- without a browser ------------------------------------------------------------------


def test_the_page_carries_each_tests_story(page: Path) -> None:
    data = page_data(page)
    tests = by_name(page)
    counts: dict[str, int] = {}
    for t in data["tests"]:
        counts[t[0]] = counts.get(t[0], 0) + 1
    assert counts == _story.EXPECTED_OUTCOMES  # xfailed and xpassed are their own
    assert data["flaky"] == 1
    failed = tests["test_bad_password"]
    names = data["names"]
    assert (names[failed[4]], names[failed[5]]) == ("gw1", "ci-host-2")
    assert failed[3] == 1.5  # pytest's duration, as the event said
    extra = failed[10]
    assert extra["f"] == _story.FAILURE
    assert extra["c"] == "tests/test_login.py:12: AssertionError" and extra["w"] == "call"
    assert [s[:2] for s in extra["s"]] == [["call", "stdout"], ["call", "stderr"], ["call", "log"]]
    assert extra["m"] == ["login", "smoke"]
    link = "./tests/test_login.py/test_bad_password/"
    assert extra["a"] == [
        ["shots/login.png", link + "shots/login.png", 200, 1],
        ["server.log", link + "server.log", 34, 0],
    ]
    assert tests["test_flaky"][0] == "passed" and tests["test_flaky"][10]["t"] == [
        "failed",
        "passed",
    ]
    # An earlier attempt's failure text stays: the reader learns why it was flaky.
    assert "TimeoutError" in tests["test_flaky"][10]["f"]
    assert tests["test_discount"][10] == {"k": "known bug: rounding"}
    assert tests[_story.LONG_NAME][10] == 0  # nothing more: the payload stays compact
    hangs = tests["test_hangs"]
    assert hangs[0] == "missing"
    assert hangs[10] == {"k": "started, never finished (no finish_test)"}


def test_everything_sent_stays_text(page: Path) -> None:
    text = page.read_text("utf-8")
    assert text.count("<script") == 2 and text.count("</script>") == 2
    assert "<img" not in text and "data:image" not in text and "base64" not in text
    head = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text)
    assert head is not None
    assert head[1] == (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"script-src '{re.search(r'sha256-[A-Za-z0-9+/=]+', text)[0]}'; "  # type: ignore[index]
        "img-src 'self'"
    )
    # The environment block: rendered here, escaped.
    env = text[text.index('id="environment"') :]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;" in env
    for fact in (
        "3.11.7",
        "Linux-6.1-x86_64",
        "9.2.0",
        "rerunfailures 16.7",
        "xdist 3.8.0",
        "ci-host-1, ci-host-2",
        "gw0, gw1",
        "run-1",
        "-n 2 --rigger-config",
    ):
        assert fact in env, fact


def test_failure_text_and_sections_are_bounded_per_test_and_in_total() -> None:
    runs = Runs("r", Limits(max_failure_bytes=100, max_capture_bytes=50, max_text_bytes=400))

    def finish(name: str, longrepr: Any, sections: Any) -> None:
        runs.finish_test(
            {"test_name": name, "test_result": "failed", "longrepr": longrepr, "sections": sections}
        )

    finish("a", "é" * 1000, [{"when": "call", "kind": "stdout", "text": "x" * 40}] * 3)
    run = runs.run(None)
    case = run.cases[("", "", "a")]
    assert case.longrepr is not None
    assert case.longrepr.startswith("é" * 50) and "é" * 51 not in case.longrepr
    assert case.longrepr.endswith(CUT_NOTE.format(key="max_failure_bytes", limit=100))
    assert [len(s.text) for s in case.sections][:1] == [40]
    assert len(case.sections) == 2 and "max_capture_bytes" in case.sections[1].text
    for n in range(10):  # the total: later tests keep only a note
        finish(f"t{n}", "y" * 90, [])
    assert runs.held[1] == 400  # every byte of room used, none beyond
    last = run.cases[("", "", "t9")].longrepr
    assert last == CUT_NOTE.format(key="max_text_bytes", limit=0)
    # Malformed values are dropped, not trusted.
    runs.finish_test(
        {
            "test_name": "bad",
            "longrepr": 3,
            "sections": {"a": 1},
            "attachments": [{"name": 5}, "x", {"name": "ok"}] * 100,
            "markers": ["m"] * 1000,
            "rerun": -4,
            "crash": "no",
            "outcome": "<b>",
        }
    )
    bad = run.cases[("", "", "bad")]
    assert (bad.longrepr, bad.sections, bad.crash, bad.rerun) == (None, (), None, 0)
    assert len(bad.attachments) == 21 and len(bad.markers) == 64
    assert bad.outcome == "unknown"
    # Values of the wrong type anywhere, unhashable ones included, are not trusted either.
    runs.finish_test(
        {
            "test_name": ["n"],
            "test_location": {"a": 1},
            "test_result": {"r": 1},
            "outcome": ["failed"],
            "sections": [{"text": "out", "kind": ["stdout"], "when": {"w": 1}}],
            "crash": {"path": 1, "line": "12", "message": ["m"]},
            "worker": 5,
            "host": ["h"],
            "duration": "1",
            "rerun": "2",
            "when": 3,
            "skip_reason": 4,
            "artifact_path": 5,
        }
    )
    odd = run.cases[("", "{'a': 1}", "['n']")]
    assert (odd.outcome, odd.result) == ("{'r': 1}", "{'r': 1}")
    assert odd.sections[0].kind == "other" and odd.crash is not None
    assert (odd.crash.line, odd.worker, odd.host, odd.when) == (None, None, None, None)
    assert (odd.skip_reason, odd.artifact_path, odd.rerun) == (None, None, 0)


def test_the_limits_are_config_keys() -> None:
    plugin = ReportPlugin("r", {"max_failure_bytes": 10, "max_text_bytes": 20})
    assert plugin.limits == Limits(max_failure_bytes=10, max_text_bytes=20)
    for bad in ({"max_capture_bytes": -1}, {"max_failure_bytes": "1"}, {"max_text_bytes": 1.5}):
        with pytest.raises(PluginError):
            ReportPlugin("r", bad)


def test_attachment_names_cannot_climb_out(tmp_path: Path) -> None:
    with Rigger(report_config(tmp_path)) as rigger:
        rigger.fire_hook(
            "finish_test",
            run_id="r",
            test_name="t",
            test_result="passed",
            artifact_path=str(tmp_path / "r" / "t"),
            attachments=[{"name": n} for n in ("../../../etc/passwd", "/etc/passwd", "a/../b")],
        )
        rigger.fire_hook("finish_session", run_id="r").result(30)
    (test,) = page_data(tmp_path / "r" / "report.html")["tests"]
    assert [a[1] for a in test[10]["a"]] == [None, None, None]


# -- in Chromium -------------------------------------------------------------------------


def test_browser_shows_the_failure_collapsed_and_expands_it(page: Path) -> None:
    closed = browser.dump_dom(page, "#result=failed")
    opened = browser.dump_dom(page, "#result=failed&open=1")
    for dom in (closed, opened):
        assert dom.count("<details") == 4  # the failure and three sections
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # text, in <pre>
        assert len(Dom(dom).rows) == 2  # the test and its detail row
    assert '<details class="failure">' in closed
    assert '<details class="failure" open="">' in opened
    assert len(re.findall(r'<details class="section \w+" open="">', opened)) == 3
    imgs = re.findall(r"<img [^>]*>", opened)
    assert (
        len(imgs) == 1
        and 'src="./tests/test_login.py/test_bad_password/shots/login.png"' in (imgs[0])
    )
    assert Dom(opened).tags.get("script") == 2


def test_browser_loads_the_thumbnail_under_the_pages_policy(page: Path) -> None:
    width = browser.evaluate(
        page,
        "new Promise(r => { const i = document.images[0]; "
        "i.complete ? r(i.naturalWidth) : i.onload = () => r(i.naturalWidth); })",
        "#result=failed&open=1",
    )
    assert width == 320  # the PNG itself, by its relative URL


def test_browser_never_breaks_a_result_beside_a_long_name(page: Path) -> None:
    lines = browser.evaluate(
        page,
        "Array.from(document.querySelectorAll('#rows td.result')).map(td => {"
        " const r = document.createRange(); r.selectNodeContents(td.firstChild);"
        " return r.getClientRects().length; })",
        size=(700, 900),
    )
    assert lines and set(lines) == {1}, lines


@pytest.mark.parametrize(("fragment", "at_list"), [("#result=failed", True), ("", False)])
def test_browser_a_link_to_a_filtered_view_shows_the_list(
    page: Path, fragment: str, at_list: bool
) -> None:
    top = browser.evaluate(
        page,
        "document.getElementById('tests').getBoundingClientRect().top",
        fragment,
        size=(1000, 600),
    )
    assert (abs(top) < 2) if at_list else top > 300, top


IMAGES_LOADED = (
    "Promise.all(Array.from(document.images).map(i => i.complete ? i.naturalWidth :"
    " new Promise(r => { i.onload = () => r(i.naturalWidth); })))"
)


def test_browser_screenshots_for_the_docs(page: Path, tmp_path: Path) -> None:
    size = (1200, 900)
    shots = {
        "report.png": ("", [320]),
        "report-list.png": ("#q=tests%2F", [320]),  # the whole list, failures collapsed
        "report-failure.png": ("#result=failed&open=1", [320]),
    }
    for name, (fragment, widths) in shots.items():
        loaded = browser.evaluate(page, IMAGES_LOADED, fragment, size, tmp_path / name)
        assert loaded == widths  # the thumbnail is in the picture, loaded
        head = (tmp_path / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == size
    if os.environ.get("RIGGER_MP_WRITE_DOCS"):
        for name in shots:
            (DOCS / name).write_bytes((tmp_path / name).read_bytes())
