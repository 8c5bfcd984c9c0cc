"""The HTTP front (rigger_mp.server.http): real requests to a real server on 127.0.0.1."""

from __future__ import annotations

import json
import multiprocessing.resource_tracker
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ._http import Http, http_port, make_http_rigger  # skips loudly without the http extra
from ._tcp import HOST, WAIT, Raw, counter, port_of, server_pid
from .conftest import Dispatchers
from .test_cli import Served, env

parser = pytest.importorskip("prometheus_client.parser")
text_string_to_metric_families = parser.text_string_to_metric_families

from rigger_mp import Rigger  # noqa: E402
from rigger_mp.core.event_thread import MAX_HOOK_COUNTERS, OTHER_HOOKS  # noqa: E402
from rigger_mp.core.failures import MAX_FAILURES  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture
def rigger(dispatchers: Dispatchers) -> Rigger:
    return dispatchers.add(make_http_rigger())


def served(rigger: Rigger, token: str | None = None) -> None:
    """After an attack: a fresh HTTP client is served, and the TCP intake answers ping."""
    with Http(http_port(rigger), token) as client:
        status, reply = client.fire("count", data={"c": "fresh"}, wait_for_task=True)
        assert (status, reply["ok"]) == (200, True), reply
    with Raw(port_of(rigger)) as raw:
        if token is not None:
            assert raw.request({"op": "auth", "token": token})["ok"]
        assert raw.request({"op": "ping"}) == {"ok": True}


def test_fire_replies_like_tcp_and_tasks_report_the_tid(rigger: Rigger) -> None:
    with Http(http_port(rigger)) as client:  # one keep-alive connection for all
        status, ack = client.fire("count", data={"c": 1, "i": 0})
        assert status == 200 and ack["ok"] and ack["tid"].startswith("tcp1-")
        status, grabbed = client.fire("count", data={"c": 1, "i": 1}, grab_result=True)
        assert status == 200
        assert grabbed["output"] == {"c": 1, "i": 1, "counted": True}
        assert client.fire("count", data={"c": 1, "i": 2}, wait_for_task=True) == (
            200,
            {"ok": True, "tid": grabbed["tid"][:5] + "3"},
        )
        status, failed = client.fire("fail", wait_for_task=True)
        assert status == 500 and failed["error"]["code"] == "hook_failed"
        assert "boom" in failed["error"]["message"]
        assert rigger.wait_background(WAIT)
        status, task = client.json("GET", f"/tasks/{ack['tid']}")
        assert (status, task["status"]) == (200, "done")
        status, unknown = client.json("GET", "/tasks/tcp9-999")
        assert status == 404 and unknown["error"]["code"] == "unknown_task"
    assert counter(rigger).seen[(1, 0)] == counter(rigger).seen[(1, 1)] == 1


def test_stats_are_the_dispatchers_with_the_http_counters(rigger: Rigger) -> None:
    with Http(http_port(rigger)) as client:
        for i in range(5):
            client.fire("count", data={"i": i}, wait_for_task=True)
        client.fire("fail", wait_for_task=True)
        stats = client.stats()
    local = rigger.stats()
    assert stats["events"]["accepted"] == local["events"]["accepted"] == 6
    assert stats["events"]["done"] == 5 and stats["events"]["failed"] == 1
    assert stats["hooks"]["count"] == {"accepted": 5, "done": 5, "failed": 0, "abandoned": 0}
    assert stats["recent_failures"][-1]["hook_name"] == "fail"
    assert "ValueError: boom" in stats["recent_failures"][-1]["traceback"]
    http = stats["server"]["http"]
    assert http["requests"] == 7 and http["connections_open"] == 1
    assert stats["server"]["process"]["connections_open"] == 0  # TCP: none


def test_metrics_parse_as_prometheus_text_and_match_stats(rigger: Rigger) -> None:
    with Http(http_port(rigger)) as client:
        for i in range(3):
            client.fire("count", data={"i": i}, wait_for_task=True)
        client.fire("fail", wait_for_task=True)
        status, body, headers = client.raw("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("rigger_mp_events_accepted_total", ())] == 4
    assert samples[("rigger_mp_events_ended_total", (("outcome", "failed"),))] == 1
    ended = "rigger_mp_named_events_ended_total"
    assert samples[(ended, (("event", "count"), ("outcome", "done")))] == 3
    assert samples[(ended, (("event", "fail"), ("outcome", "failed")))] == 1
    assert samples[("rigger_mp_events_queued", ())] == 0
    assert samples[("rigger_mp_connections_open", (("transport", "http"),))] == 1
    assert samples[("rigger_mp_connections_open", (("transport", "tcp"),))] == 0
    assert samples[("rigger_mp_server_restarts_total", ())] == 0
    assert ("rigger_mp_background_running", ()) in samples


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's resource tracker outlives tests: start it before one counts processes."""
    multiprocessing.resource_tracker.ensure_running()


def test_metrics_show_each_worker_slots_memory_cpu_and_tasks() -> None:
    rigger = make_http_rigger(
        workers=1, start_method="spawn", plugins={"p": {"plugin": "tests.pool_plugins:PidPlugin"}}
    )
    try:
        rigger.fire_hook("work", n=1)
        assert rigger.wait_background(WAIT)
        pid = rigger.stats()["workers"][0]["pid"]
        with Http(http_port(rigger)) as client:
            _, body, _ = client.raw("GET", "/metrics")
        samples = {
            (s.name, s.labels.get("slot")): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert pid > 0
        assert samples[("rigger_mp_worker_resident_memory_bytes", "0")] > 1_000_000
        assert samples[("rigger_mp_worker_cpu_seconds_total", "0")] >= 0
        assert samples[("rigger_mp_worker_tasks_done_total", "0")] == 1
    finally:
        rigger.stop()


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/fire", b'{"hook_name": "count", "data": ', {}, 400, "bad_json"),
        ("POST", "/fire", b"\xff\xfe", {}, 400, "bad_json"),
        ("POST", "/fire", b"[1, 2]", {}, 400, "bad_request"),
        ("POST", "/fire", b'{"op": "ping"}', {}, 400, "bad_request"),
        ("POST", "/fire", b'{"hook_name": "count", "x": 1}', {}, 400, "bad_request"),
        ("POST", "/fire", b'{"hook_name": "count"}', {"Content-Type": "text/plain"}, 400,
         "bad_request"),
        ("POST", "/terminate", b"", {"Content-Type": "application/x-www-form-urlencoded"}, 400,
         "bad_request"),
        ("GET", "/nowhere", None, {}, 404, "unknown_op"),
        ("DELETE", "/stats", None, {}, 405, "unknown_op"),
        ("GET", "/fire", None, {}, 405, "unknown_op"),
        ("GET", "/tasks/" + "x" * 300, None, {}, 400, "bad_request"),
    ],
)
def test_bad_input_gets_a_json_error_and_the_server_goes_on(
    rigger: Rigger,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    with Http(http_port(rigger)) as client:
        got, data, _ = client.raw(method, path, body, headers)
        reply = json.loads(data)
        assert (got, reply["ok"], reply["error"]["code"]) == (status, False, code), reply
    assert rigger.stats()["events"]["accepted"] == 0
    served(rigger)


def test_a_body_over_max_message_bytes_is_too_large_declared_or_chunked() -> None:
    rigger = make_http_rigger(max_message_bytes=1024)
    try:
        big = json.dumps({"hook_name": "count", "data": {"x": "y" * 2000}}).encode()
        with Http(http_port(rigger)) as client:
            status, data, _ = client.raw("POST", "/fire", big)
            assert status == 413 and json.loads(data)["error"]["code"] == "too_large"
        with socket.create_connection((HOST, http_port(rigger)), timeout=WAIT) as sock:
            sock.sendall(
                b"POST /fire HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(3):  # no Content-Length: counted as it arrives
                sock.sendall(b"200\r\n" + b" " * 0x200 + b"\r\n")
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 413"), head
            assert b'"too_large"' in head or b'"too_large"' in sock.recv(65536)
        assert rigger.stats()["events"]["accepted"] == 0
        served(rigger)
    finally:
        rigger.stop()


def test_the_token_is_asked_of_every_data_endpoint() -> None:
    rigger = make_http_rigger(server_token=TOKEN)
    try:
        port = http_port(rigger)
        for token in (None, "wrong"):
            with Http(port, token) as client:
                for method, path, obj in (
                    ("POST", "/fire", {"hook_name": "count"}),
                    ("GET", "/stats", None),
                    ("GET", "/metrics", None),
                    ("GET", "/tasks/tcp1-1", None),
                    ("POST", "/terminate", {}),
                ):
                    status, reply = client.json(method, path, obj)
                    assert status == 401 and reply["error"]["code"] == "unauthorized", path
        with Http(port) as client:  # the page itself holds no figures: served without
            status, page, _ = client.raw("GET", "/")
            assert status == 200 and b"live.js" in page
        assert rigger.stats()["events"]["accepted"] == 0
        with Http(port, TOKEN) as client:
            assert client.fire("count", wait_for_task=True)[0] == 200
        served(rigger, TOKEN)
    finally:
        rigger.stop()


def test_terminate_stops_the_dispatcher_after_the_drain() -> None:
    rigger = make_http_rigger(server_token=TOKEN)
    try:
        with Http(http_port(rigger), TOKEN) as client:
            client.fire("count", data={"c": "t"})
            assert client.json("POST", "/terminate", {}) == (200, {"ok": True})
        assert rigger.wait_stopped(WAIT)
        assert counter(rigger).seen[("t", None)] == 1
    finally:
        rigger.stop()


def test_a_new_connection_over_http_max_connections_closes_the_idle_one() -> None:
    """Two idle keep-alive connections fill the table: a third closes the one idle the
    longest and is served (a busy table answers 503: see test_http_stalls)."""
    rigger = make_http_rigger(http_max_connections=2)
    try:
        port = http_port(rigger)
        with Http(port) as a, Http(port) as b:
            a.stats()
            b.stats()  # both open, counted, and idle now; a the longer
            with Http(port) as c:
                http = c.stats()["server"]["http"]
            assert (http["evicted"], http["refused"], http["connections_open"]) == (1, 0, 2)
            assert b.stats()["server"]["http"]["evicted"] == 1  # b kept its connection
        served(rigger)
    finally:
        rigger.stop()


def test_the_http_port_survives_a_server_restart(rigger: Rigger) -> None:
    port = http_port(rigger)
    old = psutil.Process(server_pid(rigger))
    old.kill()
    old.wait(WAIT)
    with Http(port) as client:  # waits in the backlog while the next process starts
        status, reply = client.fire("count", data={"c": "after"}, wait_for_task=True)
        assert (status, reply["ok"]) == (200, True)
        stats = client.stats()
    assert stats["server"]["restarts"] == 1 and stats["server"]["http_port"] == port
    assert reply["tid"].startswith("tcp2-")


def test_hook_counters_and_recent_failures_are_bounded(rigger: Rigger) -> None:
    for i in range(MAX_HOOK_COUNTERS + 50):
        rigger.fire_hook(f"name{i}")
    for _ in range(MAX_FAILURES + 5):
        with pytest.raises(ValueError):
            rigger.fire_hook("fail").result(WAIT)
    stats = rigger.stats()
    assert len(stats["hooks"]) == MAX_HOOK_COUNTERS + 1
    # the first MAX_HOOK_COUNTERS names (count and fail came after): the rest is "other"
    assert stats["hooks"][OTHER_HOOKS]["accepted"] == 50 + MAX_FAILURES + 5
    assert stats["hooks"][OTHER_HOOKS]["failed"] == MAX_FAILURES + 5
    assert len(stats["recent_failures"]) == MAX_FAILURES
    assert stats["failures_total"] == MAX_FAILURES + 5


def test_serve_http_and_status_watch(tmp_path: Path) -> None:
    """``rigger-mp serve --http 127.0.0.1:0`` serves HTTP; ``status --watch`` refreshes
    until SIGINT and exits 0."""
    served = Served("--http", "127.0.0.1:0", "--artifacts", str(tmp_path / "a"), cwd=tmp_path)
    try:
        assert served.proc.stdout is not None
        line = served.proc.stdout.readline()
        match = re.match(r"rigger-mp: HTTP on http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        with Http(int(match[1])) as client:
            assert client.fire("start_session", wait_for_task=True)[0] == 200
            assert client.stats()["events"]["accepted"] == 1
        watcher = subprocess.Popen(
            [sys.executable, "-m", "rigger_mp", "status", "--port", served.port, "--watch", "0.2"],
            env=env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None
        tables = 0
        for text in watcher.stdout:  # blocks on the pipe until each table is printed
            tables += text.startswith("rigger_mp at ")
            if tables == 2:
                break
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(WAIT) == 0
        assert tables == 2
        assert served.cmd("terminate").returncode == 0
        assert served.finish()[0] == 0
    finally:
        served.kill()
