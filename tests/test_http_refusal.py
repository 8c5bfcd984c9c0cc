"""The JSON-lines port refuses HTTP: a web page cannot fire into it or terminate it.

A browser's ``text/plain`` POST, read line by line, would have its body lines obeyed.
These tests send HTTP to the port from a real Chromium page on another origin and from
raw sockets: the connection gets one ``bad_request`` naming ``http_port`` and is closed,
nothing it carries runs, and the dispatcher goes on serving.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rigger_mp import Rigger, RiggerClient
from rigger_mp import protocol as proto
from rigger_mp.server.http_refusal import MAX_HEAD, looks_like_http
from tests import browser
from tests._tcp import HOST, Raw, counter, make_rigger, port_of

FIRE_LINE = b'{"hook_name": "count", "data": {"c": "http", "i": 1}}'
TERMINATE_LINE = b'{"op": "terminate"}'
BODY = FIRE_LINE + b"\n" + TERMINATE_LINE + b"\n" + FIRE_LINE + b"\0"


@pytest.fixture
def rigger() -> Iterator[Rigger]:
    rigger = make_rigger()
    try:
        yield rigger
    finally:
        rigger.stop()


def still_serving(rigger: Rigger) -> None:
    """A new client's fire runs, and nothing the refused connection carried ran before it
    (events run in order: one queued earlier would have run by then)."""
    with RiggerClient(HOST, port_of(rigger)) as client:
        assert client.fire_hook("count", c="after", i=0, wait_for_task=True)
        assert client.ping()
    assert dict(counter(rigger).seen) == {("after", 0): 1}
    assert rigger.stats()["events"]["accepted"] == 1


def refused(port: int, data: bytes) -> dict[str, Any]:
    """Send ``data`` on a new connection: its one reply, once the server has closed it."""
    with Raw(port) as raw:
        raw.send(data)
        rest = raw.wait_closed()
    lines = rest.splitlines()
    assert len(lines) == 1, rest
    reply = json.loads(lines[0])
    assert isinstance(reply, dict)
    return reply


def assert_refusal(reply: dict[str, Any]) -> None:
    assert reply["ok"] is False
    assert reply["error"]["code"] == proto.BAD_REQUEST
    assert "http_port" in reply["error"]["message"]


def http_refused(rigger: Rigger) -> int:
    with Raw(port_of(rigger)) as raw:
        stats = raw.request({"op": "stats"})["stats"]["server"]["process"]
    count = stats["errors"].get("http_refused", 0)
    assert isinstance(count, int)
    return count


# -- what counts as HTTP -------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        *(
            f"{method} / HTTP/1.1\r\n".encode()
            for method in (
                "GET",
                "POST",
                "PUT",
                "HEAD",
                "OPTIONS",
                "DELETE",
                "PATCH",
                "CONNECT",
                "TRACE",
                "PROPFIND",
            )
        ),
        b"POST ",
        b"Host: 127.0.0.1:21212\r\n",
        b"content-type:text/plain\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\n",
    ],
)
def test_a_request_line_or_a_header_line_is_http(head: bytes) -> None:
    assert looks_like_http(head) is True


@pytest.mark.parametrize(
    "head",
    [
        b'{"op": "ping"}\n',
        b'  {"op": "ping"}\n',
        b'{"op": "ping"}\0',
        b"\0",
        b"hello\n",
        b"[1, 2]\n",
        b"X" * (MAX_HEAD + 1),
        b"\r\n" * MAX_HEAD,
    ],
)
def test_json_lines_and_garbage_are_not_http(head: bytes) -> None:
    assert looks_like_http(head) is False


@pytest.mark.parametrize("head", [b"", b"G", b"POS", b"\r\n", b"Content-Typ"])
def test_too_few_bytes_to_tell_wait_for_more(head: bytes) -> None:
    assert looks_like_http(head) is None


# -- raw sockets ---------------------------------------------------------------------------


def test_a_text_plain_post_gets_one_bad_request_and_nothing_runs(rigger: Rigger) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    assert_refusal(refused(port_of(rigger), request))
    still_serving(rigger)
    assert http_refused(rigger) == 1


def test_a_header_line_first_is_refused_too(rigger: Rigger) -> None:
    assert_refusal(refused(port_of(rigger), b"Host: 127.0.0.1\r\n\r\n" + BODY))
    still_serving(rigger)


def test_a_request_line_sent_byte_by_byte_is_refused(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        # The refusal may come, and the connection close, before the last byte is sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in b"GET / HTTP/1.1\r\n\r\n":
                raw.send(bytes([byte]))
            raw.send(BODY)
        rest = raw.wait_closed()
    assert len(rest.splitlines()) == 1
    assert_refusal(json.loads(rest))
    still_serving(rigger)


def test_blank_lines_before_json_are_still_json(rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        assert raw.request(b'\r\n\r\n{"op": "ping"}\n') == {"ok": True}
        assert raw.request(b'hello\n')["error"]["code"] == proto.BAD_JSON  # not HTTP: on
        assert raw.request(b'{"op": "ping"}\0') == {"ok": True}
    assert http_refused(rigger) == 0


def test_a_short_start_closed_at_once_is_read_as_json_lines(rigger: Rigger) -> None:
    """``GE`` then end-of-file: too short to be HTTP, so it is a (bad) message."""
    with Raw(port_of(rigger)) as raw:
        raw.send(b"GE")
        raw.sock.shutdown(1)
        reply = raw.reply()
    assert reply["error"]["code"] == proto.BAD_JSON
    assert http_refused(rigger) == 0


# -- a real browser ----------------------------------------------------------------------


PAGE = """<!doctype html>
<html><body data-state="sending"><script>
const body = %(body)s;
fetch("http://127.0.0.1:%(port)d/", {
  method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body,
}).then(
  () => { document.body.dataset.state = "answered"; },
  (err) => { document.body.dataset.state = "failed: " + err; },
);
</script></body></html>
"""


class _Page(http.server.BaseHTTPRequestHandler):
    """Serves the attacking page, on an origin of its own."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_page_on_another_origin_cannot_fire_or_terminate(rigger: Rigger) -> None:
    browser.chromium()  # skips loudly before anything starts if there is none
    body = (FIRE_LINE + b"\n" + TERMINATE_LINE + b"\n").decode()
    _Page.page = (PAGE % {"body": json.dumps(body), "port": port_of(rigger)}).encode()
    site = http.server.ThreadingHTTPServer((HOST, 0), _Page)
    thread = threading.Thread(target=site.serve_forever, name="attacking-site")
    thread.start()
    try:
        dom = browser.dump_url(f"http://{HOST}:{site.server_address[1]}/")
    finally:
        site.shutdown()
        site.server_close()
        thread.join()
    assert 'data-state="failed' in dom, dom[-500:]  # the fetch went out and settled
    assert http_refused(rigger) >= 1  # it reached the port (a browser may retry once)
    still_serving(rigger)
