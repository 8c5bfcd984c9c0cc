"""Control characters from events are escaped wherever they reach a terminal, a log or a
scrape: the escaping itself, the loggers, the real CLI (journal, status, fire) and a real
``/metrics`` scrape."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import Rigger
from rigger_mp.journal import JournalStore, encode
from rigger_mp.printable import printable

from .test_cli import rigger_mp

ROOT = Path(__file__).parent.parent
HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\rfake line\n\x9b31m\u202eend\\x"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def assert_escaped(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text[:300])
    assert "\\x1b]0;pwned\\x07" in text


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("plain name, é ü ☃") == "plain name, é ü ☃"
    assert printable(HOSTILE) == (
        "evil\\x1b]0;pwned\\x07\\x1b[2J\\rfake line\\n\\x9b31m\\u202eend\\\\x"
    )
    assert printable("a\\x1b") != printable("a\x1b")  # two names never show alike
    assert printable("line 1\n\tline 2\x1b\r", keep_lines=True) == "line 1\n\tline 2\\x1b\\r"


def test_every_logger_of_the_package_escapes() -> None:
    """One way to make a logger, so none is left without the filter."""
    for path in (ROOT / "rigger_mp").rglob("*.py"):
        if path.name != "printable.py":
            assert "getLogger(" not in path.read_text(encoding="utf-8"), path


def test_a_failing_event_is_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    def explode(test_name: str) -> None:
        raise ValueError(f"cannot run {test_name}")

    rigger = Rigger()
    rigger.register_hook_callback(HOSTILE, "pre", explode, name="explode")
    rigger.start()
    try:
        with caplog.at_level(logging.ERROR, logger="rigger_mp"):
            rigger.fire_hook(HOSTILE, test_name=HOSTILE)  # no waiter: logged
            rigger.stop()  # drains the event first
    finally:
        rigger.stop()
    text = caplog.text
    assert "ValueError: cannot run" in text and 'File "' in text  # the frames are there
    assert_escaped(text)
    # The hook name, an argument, starts no line; an exception's text keeps its lines.
    assert "event 'evil\\x1b]0;pwned\\x07\\x1b[2J\\rfake line\\n" in text


def test_a_record_of_any_shape_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("rigger_mp")
    with caplog.at_level(logging.INFO, logger="rigger_mp"):
        log.error(KeyError(HOSTILE))  # an object alone as the message
        log.info("%(name)s ran", {"name": HOSTILE})  # arguments by name
        log.info("%d events named %r", 3, HOSTILE)  # a number stays a number
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert_escaped(text)
    assert "3 events named 'evil\\x1b]0;pwned" in text


def test_journal_list_and_show_escape_hook_names_and_data(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    try:
        store.commit([("tcp1-1", HOSTILE, *encode(HOSTILE, {"test_name": HOSTILE}))])
    finally:
        store.close()
    listed = rigger_mp("journal", "list", "-j", str(path))
    assert listed.returncode == 0, listed.stderr
    assert_escaped(listed.stdout)
    assert len(listed.stdout.splitlines()) == 3  # header, one row, the count: no forged line
    shown = rigger_mp("journal", "show", "-j", str(path), "tcp1-1")
    assert shown.returncode == 0, shown.stderr
    assert_escaped(shown.stdout)
    as_json = rigger_mp("journal", "list", "-j", str(path), "--json")
    assert json.loads(as_json.stdout)["events"][0]["hook"] == HOSTILE  # JSON: exact, escaped
    for char in RAW:
        assert char not in as_json.stdout


class _LyingServer:
    """A dispatcher that answers with hostile text: its tids, its stats, its errors."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                for line in stream:
                    stream.write(json.dumps(self._reply(json.loads(line))).encode() + b"\n")
                    stream.flush()

    @staticmethod
    def _reply(msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("op") == "stats":
            return {"ok": True, "stats": {"uptime": 1.0, "workers": [{"pid": HOSTILE}]}}
        if msg.get("wait_for_task"):
            return {"ok": False, "error": {"code": "hook_failed", "message": HOSTILE}}
        return {"ok": True, "tid": HOSTILE}

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join()


@pytest.fixture
def lying() -> Iterator[_LyingServer]:
    server = _LyingServer()
    yield server
    server.close()


def test_status_and_fire_escape_what_a_server_sends(lying: _LyingServer) -> None:
    port = str(lying.port)
    status = rigger_mp("status", "--port", port)
    assert status.returncode == 0, status.stderr
    assert_escaped(status.stdout)
    fired = rigger_mp("fire", "--port", port, "start_test", "test_name=x")
    assert fired.returncode == 0, fired.stderr
    assert_escaped(fired.stdout)
    failed = rigger_mp("fire", "--port", port, "--wait", "start_test", "test_name=x")
    assert failed.returncode != 0
    assert_escaped(failed.stderr)


def test_metrics_label_values_are_escaped() -> None:
    pytest.importorskip("aiohttp")
    parser = pytest.importorskip("prometheus_client.parser")
    from ._http import Http, http_port, make_http_rigger

    rigger = make_http_rigger()
    try:
        with Http(http_port(rigger)) as client:
            status, reply = client.json(
                "POST", "/fire", {"hook_name": HOSTILE, "data": {}, "wait_for_task": True}
            )
            assert status == 200, reply
            status, body, _ = client.raw("GET", "/metrics")
    finally:
        rigger.stop()
    assert status == 200
    text = body.decode()
    for char in RAW:
        assert char not in text
    events = {
        sample.labels["event"]
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
        if "event" in sample.labels
    }
    assert printable(HOSTILE) in events
    assert re.search(r'event="evil\\\\x1b\]0;pwned', text)  # the backslash itself escaped
