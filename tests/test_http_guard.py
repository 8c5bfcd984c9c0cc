"""The HTTP front's Host and Origin checks: forged headers over raw requests, and a real
Chromium page under a host name that resolves to 127.0.0.1 (DNS rebinding)."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rigger_mp import Rigger
from rigger_mp.server.http_guard import Guard, host_name

from ._http import Http, http_port, make_http_rigger  # skips loudly without the http extra
from ._tcp import HOST, WAIT, counter
from .browser import chromium, dump_url

TOKEN = "s3cret-token"
ENDPOINTS: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("POST", "/fire", {"hook_name": "count", "data": {"c": "forged"}, "wait_for_task": True}),
    ("POST", "/terminate", {}),
    ("GET", "/stats", None),
    ("GET", "/metrics", None),
    ("GET", "/tasks/tcp1-1", None),
    ("GET", "/", None),
)


@pytest.fixture
def rigger() -> Iterator[Rigger]:
    rigger = make_http_rigger(http_allowed_hosts=["dispatch.internal"])
    yield rigger
    rigger.stop()


def test_host_names_are_read_with_or_without_a_port() -> None:
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:80") == "::1"
    assert host_name("::1") == "::1"
    assert host_name("example.com.") == "example.com"
    guard = Guard("10.1.2.3", ["ci.example"])
    for good in ("localhost", "127.0.0.1:9", "127.3.4.5", "[::1]:1", "10.1.2.3:80", "CI.example"):
        assert guard.host_ok(good), good
    for bad in ("evil.example", "localhost.evil.example", "10.1.2.4", "", None, "127.0.0.1.evil"):
        assert not guard.host_ok(bad), bad


@pytest.mark.parametrize("token", [None, TOKEN])
def test_a_forged_host_is_refused_before_routing_with_or_without_a_token(
    token: str | None,
) -> None:
    rigger = make_http_rigger(server_token=token)
    try:
        port = http_port(rigger)
        with Http(port, token) as client:
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io"):
                for method, path, obj in ENDPOINTS:
                    status, reply = client.json(method, path, obj, headers={"Host": host})
                    assert status == 421, (host, path)
                    assert reply["error"]["code"] == "bad_host", reply
            assert rigger.stats()["events"]["accepted"] == 0
            assert client.stats()["server"]["http"]["errors"]["bad_host"] == 3 * len(ENDPOINTS)
        assert not rigger.wait_stopped(0)  # /terminate did not stop it
    finally:
        rigger.stop()


def test_a_request_without_a_host_is_refused(rigger: Rigger) -> None:
    with socket.create_connection((HOST, http_port(rigger)), timeout=WAIT) as sock:
        sock.sendall(b"GET /stats HTTP/1.0\r\n\r\n")
        head = sock.makefile("rb").read()
    assert head.startswith(b"HTTP/1.0 421") or head.startswith(b"HTTP/1.1 421"), head[:80]
    assert b'"bad_host"' in head


def test_loopback_names_http_address_and_allowed_hosts_are_served(rigger: Rigger) -> None:
    port = http_port(rigger)
    with Http(port) as client:
        for host in ("localhost", f"localhost:{port}", "127.0.0.2", f"[::1]:{port}",
                     "dispatch.internal", f"{HOST}:{port}"):
            fire = {"hook_name": "count", "data": {"c": host}, "wait_for_task": True}
            status, reply = client.json("POST", "/fire", fire, headers={"Host": host})
            assert (status, reply["ok"]) == (200, True), host
    assert rigger.wait_background(WAIT)
    assert rigger.stats()["events"]["done"] == 6


def test_a_state_change_from_another_origin_is_refused(rigger: Rigger) -> None:
    port = http_port(rigger)
    fire = {"hook_name": "count", "data": {"c": "cross"}, "wait_for_task": True}
    with Http(port) as client:
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null",
                       f"https://{HOST}:{port}", f"http://{HOST}:{port + 1}"):
            for path, obj in (("/fire", fire), ("/terminate", {})):
                status, reply = client.json("POST", path, obj, headers={"Origin": origin})
                assert (status, reply["error"]["code"]) == (403, "bad_origin"), (origin, path)
        # Reading is not a state change (and CORS keeps the reply from the page).
        status, _ = client.json("GET", "/stats", headers={"Origin": "http://evil.example"})
        assert status == 200
        # The front's own origin, as its live page would send it.
        status, reply = client.json("POST", "/fire", fire, headers={"Origin": f"http://{HOST}:{port}"})
        assert (status, reply["ok"]) == (200, True)
    assert counter(rigger).seen.get(("cross", None)) == 1
    assert not rigger.wait_stopped(0)


class _RebindingSite:
    """The attacker's site at ``evil.example:<port>``: serves its page, then, as DNS
    rebinding would have it, every later request of the browser to the same origin
    reaches the dispatcher's front unchanged (bytes forwarded both ways)."""

    def __init__(self, page: bytes, front_port: int) -> None:
        self.page = page
        self.front_port = front_port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.forwarded: list[bytes] = []  # request lines
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            if head.startswith(b"GET /attack.html "):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(self.page), self.page)
                )
                return
            self.forwarded.append(head.split(b"\r\n", 1)[0])
            with socket.create_connection((HOST, self.front_port)) as front:
                front.sendall(_one_request(head))
                pump = threading.Thread(target=_pump, args=(conn, front), daemon=True)
                pump.start()
                _pump(front, conn)
                pump.join()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close would not)
        self.listener.close()
        self.accepter.join()
        for thread in self.threads:
            thread.join()


def _one_request(head: bytes) -> bytes:
    """``head`` asking the front to close after its answer: the browser then sends its
    next request on a new connection, whose first line is counted (on a kept-alive one,
    a second request would pass unseen)."""
    headers, sep, rest = head.partition(b"\r\n\r\n")
    lines = [h for h in headers.split(b"\r\n") if not h.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + rest


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


ATTACK = """<!doctype html><html><body><pre id="out">pending</pre><script>
async function attempt(url, init) {
  try { const r = await fetch(url, init); return r.status + " " + await r.text(); }
  catch (e) { return "blocked " + e; }
}
(async () => {
  const fire = JSON.stringify({hook_name: "count", data: {c: "rebound"}, wait_for_task: true});
  const out = {};
  out.fire = await attempt("/fire", {method: "POST", body: fire,
                                     headers: {"Content-Type": "application/json"}});
  out.stats = await attempt("/stats", {});
  out.direct = await attempt("http://evil.example:FRONT/fire",
                             {method: "POST", mode: "no-cors", body: fire,
                              headers: {"Content-Type": "text/plain"}});
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>"""


def test_a_page_under_a_rebound_host_name_can_neither_fire_nor_read(rigger: Rigger) -> None:
    chromium()  # skips loudly (fails in CI) without a browser
    port = http_port(rigger)
    site = _RebindingSite(ATTACK.replace("FRONT", str(port)).encode(), port)
    try:
        url = f"http://evil.example:{site.port}/attack.html"
        dom = dump_url(url, host_rules=f"MAP evil.example {HOST}")
    finally:
        site.close()
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    out = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert out["fire"].startswith("421 ") and '"bad_host"' in out["fire"], out
    assert out["stats"].startswith("421 ") and "events" not in out["stats"], out
    # Both reached the front under the rebound name (the browser asks for a favicon too).
    assert {b"POST /fire HTTP/1.1", b"GET /stats HTTP/1.1"} <= set(site.forwarded)
    with Http(port) as client:
        stats = client.stats()
    # Every request under that name was refused, the no-cors POST to the front too
    # (Chromium retries a 421 once).
    errors = stats["server"]["http"]["errors"]
    assert set(errors) == {"bad_host"} and errors["bad_host"] >= len(site.forwarded) + 1
    assert stats["events"]["accepted"] == 0 and ("rebound", None) not in counter(rigger).seen

