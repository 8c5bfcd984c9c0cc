"""The live page (GET /) in a real browser: headless Chromium loads it from a running
dispatcher, its script polls /stats, and the figures it shows are the dispatcher's."""

from __future__ import annotations

import multiprocessing.resource_tracker
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from . import browser
from ._http import Http, http_port, make_http_rigger
from ._tcp import WAIT

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOKEN = "page-token"


class Page(HTMLParser):
    """The rendered page: the text of each element with an id, the worker rows, the
    failures' tracebacks, the charts' lines."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.workers: list[list[str]] = []
        self.tracebacks: list[str] = []
        self.polylines = 0
        self.body: dict[str, str | None] = {}
        self.classes: dict[str, str | None] = {}  # id -> class
        self.heads: list[str] = []  # the failure cards' titles
        self.hidden: set[str] = set()  # ids of elements with the hidden attribute
        self._open: list[tuple[str, str | None, str | None]] = []  # (tag, id, class)
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "polyline":
            self.polylines += 1
            return
        if tag == "tr" and a.get("class") == "worker":
            self.workers.append([])
        if tag == "pre" and a.get("class") == "traceback":
            self.tracebacks.append("")
        if tag == "div" and a.get("class") == "head":
            self.heads.append("")
        if a.get("id"):
            self.classes[str(a["id"])] = a.get("class")
            if "hidden" in a:
                self.hidden.add(str(a["id"]))
        if tag in ("link", "meta", "line", "polygon"):
            return
        self._open.append((tag, a.get("id"), a.get("class")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("polyline", "link", "meta", "line", "polygon"):
            return
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for _, ident, _ in self._open:
            if ident:
                self.text[ident] = self.text.get(ident, "") + data
        if self._open and self._open[-1][0] == "td" and self.workers:
            self.workers[-1].append(data)
        if self._open and self._open[-1][2] == "traceback":
            self.tracebacks[-1] += data
        if self._open and self._open[-1][2] == "head":
            self.heads[-1] += data


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's resource tracker outlives tests: start it before one counts processes."""
    multiprocessing.resource_tracker.ensure_running()


def test_the_live_page_shows_the_dispatchers_figures(tmp_path: Path) -> None:
    browser.chromium()  # skips loudly before any process starts if there is none
    rigger = make_http_rigger(
        server_token=TOKEN,
        workers=2,
        start_method="spawn",
        plugins={
            "counter": {"plugin": "counting"},
            "p": {"plugin": "tests.pool_plugins:PidPlugin"},
        },
    )
    try:
        port = http_port(rigger)
        with Http(port, TOKEN) as client:
            for i in range(37):
                client.fire("count", data={"c": "page", "i": i})
            for _ in range(3):
                client.fire("fail")
            for n in range(4):
                client.fire("work", data={"n": n})
        assert rigger.wait_background(WAIT)
        stats = rigger.stats()
        url = f"http://127.0.0.1:{port}/?interval=500#token={TOKEN}"
        page = Page(browser.dump_url(url))
        assert int(page.body.get("data-polls") or 0) >= 2, page.text.get("status")
        assert page.text["accepted"] == str(stats["events"]["accepted"]) == "44"
        assert page.text["done"] == str(stats["events"]["done"]) == "41"
        assert page.text["failed"] == "3"
        assert page.classes["failed-figure"] == "figure bad"  # red: some failed
        assert page.text["queued"] == "0"
        assert page.text["background"] == "0 / 0 / 4 / 0"
        pids = sorted(str(w["pid"]) for w in stats["workers"])
        assert sorted(row[0] for row in page.workers) == pids and len(pids) == 2
        assert sum(int(row[3]) for row in page.workers) == 4
        assert all(row[1].endswith("MiB") and row[2].endswith("%") for row in page.workers)
        assert len(page.tracebacks) == 3
        assert all("ValueError: boom" in tb and "Traceback" in tb for tb in page.tracebacks)
        assert len(page.heads) == 3 and all(h.endswith(" · ValueError: boom") for h in page.heads)
        assert "3 in all" in page.text["failure-count"]
        assert page.polylines == 2  # events/s and queue depth, drawn from the polls
        shot = tmp_path / "live.png"
        browser.screenshot_url(url, shot, size=(1100, 1000))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("RIGGER_MP_WRITE_DOCS"):
            DOCS.mkdir(exist_ok=True)
            (DOCS / "live.png").write_bytes(shot.read_bytes())
    finally:
        rigger.stop()


def test_without_the_token_the_page_says_why_it_shows_nothing() -> None:
    browser.chromium()
    rigger = make_http_rigger(server_token=TOKEN)
    try:
        page = Page(browser.dump_url(f"http://127.0.0.1:{http_port(rigger)}/"))
        assert "unauthorized" in page.text["status"]
        assert page.text["accepted"] == "\u2013"  # the placeholder dash
        assert page.text["failures"] == "\u2013"  # unknown, not "none"
        assert "token-hint" not in page.hidden
        assert "has a server_token: open this page as http://127.0.0.1:" in page.text["token-hint"]
        assert "/#token=YOUR_TOKEN" in page.text["token-hint"]
    finally:
        rigger.stop()


def test_no_failures_are_not_drawn_in_red() -> None:
    browser.chromium()
    rigger = make_http_rigger(plugins={"counter": {"plugin": "counting"}})
    try:
        port = http_port(rigger)
        with Http(port) as client:
            client.fire("count", data={"c": "page", "i": 0})
        page = Page(browser.dump_url(f"http://127.0.0.1:{port}/?interval=200"))
        assert page.text["failed"] == "0"
        assert page.classes["failed-figure"] == "figure"
        assert page.text["failures"] == "none"
        assert "token-hint" in page.hidden
    finally:
        rigger.stop()
