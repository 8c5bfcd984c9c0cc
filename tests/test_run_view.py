"""The live run view: GET /runs and /runs/{id} against a real pytest run, the stream's
bounds (subscribers, a subscriber that does not read), the per-run metrics."""

from __future__ import annotations

import asyncio
import select
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.journal import JournalStore, encode
from rigger_mp.plugins.report import ReportPlugin

from ._http import Http, http_port, make_http_rigger
from ._live import Stream, finish, send_all
from ._tcp import HOST, WAIT, instance, port_of
from .test_pytest_plugin import pytest_env
from .test_report_pytest import OUTCOMES, SUITE


def test_the_runs_json_tells_a_real_pytest_run(tmp_path: Path) -> None:
    root = tmp_path / "art"
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: a slow test\n")
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "login.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    rigger = make_http_rigger(plugins={"report": {"plugin": "report", "dir": str(root)}})
    rigger.artifacts_root = root
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "test_sample.py",
                "-n",
                "2",
                "--rigger-run-id=live-1",
                f"--rigger=127.0.0.1:{port_of(rigger)}",
            ],
            cwd=tmp_path,
            env=pytest_env(FLAKY_FLAG=str(tmp_path / "flaky")),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert instance(rigger, "report", ReportPlugin).writer.wait(WAIT)
        with Http(http_port(rigger)) as client:
            status, listing = client.json("GET", "/runs")
            status, reply = client.json("GET", "/runs/live-1")
            _, missing = client.json("GET", "/runs/nothing%2Fhere")
            _, matched = client.json("GET", "/runs/live-1/tests?q=LONG&outcome=passed")
            status_report, page, headers = client.raw("GET", run_href(client, "live-1"))
            attached = next(t for t in matched_all(client) if t["name"] == "test_attaches")
            listing_path = "/files/" + quote(attached["artifacts"]) + "/"
            (root / attached["artifacts"] / "<b>x<i>.txt").write_text("hostile name")
            status_listing, dir_page, _ = client.raw("GET", listing_path)
            status_note, note, note_headers = client.raw("GET", listing_path + "notes.txt")
            status_up, _, _ = client.raw("GET", "/files/live-1/..%2F..%2Fetc/passwd")
            (root / "live-1" / "link").symlink_to("/etc/passwd")
            status_link, _, _ = client.raw("GET", "/files/live-1/link")
    finally:
        rigger.stop()
    assert status == 200 and [r["run_id"] for r in listing["runs"]] == ["live-1"]
    run = reply["run"]
    assert run["counts"] == dict(Counter(OUTCOMES.values()))
    assert run["tests"] == len(OUTCOMES) and run["expected"] == len(OUTCOMES)
    assert run["missing"] == 0 and (run["sessions"], run["sessions_open"]) == (1, 0)
    assert run["finished"] is True and run["exit_status"] == 1
    assert run["report"] == str(root / "live-1" / "report.html")
    assert status_report == 200 and page == (root / "live-1" / "report.html").read_bytes()
    assert headers["Content-Security-Policy"] == "sandbox allow-scripts"  # its own origin
    assert status_listing == 200 and b'<a href="notes.txt">notes.txt</a>' in dir_page
    assert b'<a href="shots/">shots/</a>' in dir_page
    assert b'<a href="%3Cb%3Ex%3Ci%3E.txt">&lt;b&gt;x&lt;i&gt;.txt</a>' in dir_page
    assert status_note == 200 and note == b"some notes"
    assert note_headers["Content-Type"].startswith("text/plain")
    assert status_up == 400 and status_link == 404
    lanes = {(lane["host"], lane["worker"]): lane for lane in run["lanes"]}
    assert {worker for _, worker in lanes} == {"gw0", "gw1"}
    assert all(lane["test"] is None for lane in lanes.values())  # the run is over
    # every attempt counts on its lane: the flaky test ran twice
    assert sum(lane["done"] for lane in lanes.values()) == len(OUTCOMES) + 1
    failures = {f["name"]: f for f in run["failures"]}
    assert set(failures) == {"test_fails", "test_fixture_error", "test_xpass", "test_flaky"}
    assert "<script>alert(1)</script>" in failures["test_fails"]["text"]
    assert "the database is down" in failures["test_fixture_error"]["text"]
    slowest = [t["duration"] for t in run["slowest"]]
    assert slowest == sorted(slowest, reverse=True) and len(slowest) == 10
    assert {t["name"] for t in run["recent"]} == set(OUTCOMES)
    assert missing["error"]["code"] == "unknown_run"
    assert matched["matched"] == 2 and {t["name"][:11] for t in matched["tests"]} == {
        "test_long[a",
        "test_long[b",
    }


def run_href(client: Http, run_id: str) -> str:
    """The report's address as the run's JSON gives it (the page links it)."""
    _, reply = client.json("GET", f"/runs/{run_id}")
    return "/" + str(reply["run"]["report_href"])


def matched_all(client: Http) -> list[dict[str, Any]]:
    _, reply = client.json("GET", "/runs/live-1/tests")
    return list(reply["tests"])


def test_the_stream_sends_a_snapshot_then_only_what_changed() -> None:
    rigger = make_http_rigger()
    try:
        port = port_of(rigger)
        send_all(port, [finish("r", f"t{i}") for i in range(3)])
        stream = Stream(http_port(rigger))
        try:
            assert stream.status == 200
            kind, first = stream.event()
            assert kind == "snapshot" and first["run"]["counts"] == {"passed": 3}
            assert len(first["run"]["recent"]) == 3
            send_all(port, [finish("r", "t9", "failed", longrepr="boom")])
            kind, delta = stream.event()
        finally:
            stream.close()
    finally:
        rigger.stop()
    assert kind == "delta" and delta["seq"] > first["seq"]
    assert delta["run"]["counts"] == {"passed": 3, "failed": 1}
    assert [t["name"] for t in delta["run"]["recent"]] == ["t9"]  # the new row alone
    assert [f["text"] for f in delta["run"]["failures"]] == ["boom"]


def test_a_run_gone_quiet_ends_on_the_page_at_the_report_plugins_run_timeout(
    tmp_path: Path,
) -> None:
    report = {"plugin": "report", "dir": str(tmp_path), "run_timeout": 0.5}
    rigger = make_http_rigger(plugins={"report": report})
    try:
        port = port_of(rigger)
        test = {"run_id": "quiet", "test_location": "t.py", "worker": "gw0", "host": "h1"}
        send_all(port, [("start_test", {**test, "test_name": "hangs"})])
        stream = Stream(http_port(rigger))
        try:
            run = stream.event()[1]["run"]
            while not run["finished"]:  # no event is sent: the board's clock ends it
                run = stream.event()[1]["run"]
        finally:
            stream.close()
    finally:
        rigger.stop()
    assert run["timed_out"] and run["counts"] == {"missing": 1}
    assert [lane["test"] for lane in run["lanes"]] == [None]
    assert (tmp_path / "quiet" / "report.html").is_file()  # the report's own clock, alike


def test_a_page_still_following_at_stop_is_ended_cleanly(capfd: pytest.CaptureFixture[str]) -> None:
    rigger = make_http_rigger()
    stream: Stream | None = None
    try:
        send_all(port_of(rigger), [finish("r", "a")])
        stream = Stream(http_port(rigger))
        assert stream.event()[0] == "snapshot"
    finally:
        rigger.stop()
        if stream is not None:
            while stream.sock.recv(65536):  # the server ended the stream: EOF
                pass
            stream.close()
    err = capfd.readouterr().err
    assert "Task was destroyed" not in err and "Event loop is closed" not in err, err


def test_a_page_following_the_latest_run_stays_on_it_while_another_goes() -> None:
    rigger = make_http_rigger()
    try:
        port = port_of(rigger)
        send_all(port, [finish("first", "a")])
        stream = Stream(http_port(rigger))
        try:
            assert stream.event()[1]["run"]["run_id"] == "first"
            send_all(port, [finish("second", "b")])  # now the latest
            send_all(port, [finish("first", "c")])
            followed = []
            while True:  # until the row fired last has come
                run = stream.event()[1]["run"]
                if run is not None:
                    followed.append(run["run_id"])
                    if "c" in {t["name"] for t in run["recent"]}:
                        break
        finally:
            stream.close()
    finally:
        rigger.stop()
    assert set(followed) == {"first"}  # the other run's row is in "runs", not on this page


def test_live_streams_are_bounded_by_live_max_subscribers() -> None:
    rigger = make_http_rigger(live_max_subscribers=2, server_token="tk")
    try:
        port = http_port(rigger)
        streams = [Stream(port, "tk") for _ in range(2)]
        try:
            assert [s.event()[0] for s in streams] == ["snapshot", "snapshot"]
            with Http(port, "tk") as client:
                status, reply = client.json("GET", "/live/stream")
                unauthorized = Stream(port)
                assert unauthorized.status == 401
                unauthorized.close()
                assert status == 503 and reply["error"]["code"] == "too_many_subscribers"
                assert "live_max_subscribers" in reply["error"]["message"]
                assert client.stats()["server"]["http"]["live"]["refused"] == 1
        finally:
            for stream in streams:
                stream.close()
    finally:
        rigger.stop()


def test_a_subscriber_that_does_not_read_is_dropped() -> None:
    rigger = make_http_rigger()
    try:
        port = port_of(rigger)
        stream = Stream(http_port(rigger), rcvbuf=4096)
        try:
            assert stream.event()[0] == "snapshot"
            poller = select.poll()  # a reset, not the data waiting unread, wakes it
            poller.register(stream.sock, select.POLLRDHUP)
            text = "x" * 8000
            # Failures (8 KB of text each) until the stream is dropped: the kernel's
            # buffers in between take megabytes, then a write waits WRITE_TIMEOUT.
            for batch in range(5000):
                failures = [
                    finish("r", f"t{batch}-{i}", "failed", longrepr=text) for i in range(50)
                ]
                send_all(port, failures)
                if poller.poll(0):
                    break
            assert poller.poll(0), "the stream was not dropped"
        finally:
            stream.close()
        with Http(http_port(rigger)) as client:
            live = client.stats()["server"]["http"]["live"]
    finally:
        rigger.stop()
    assert live["dropped"] == 1 and live["subscribers"] == 0


def test_per_run_metrics_follow_prometheus_conventions() -> None:
    rigger = make_http_rigger()
    try:
        events = [finish("m1", f"t{i}", "failed" if i < 2 else "passed") for i in range(5)]
        events.append(("finish_session", {"run_id": "m1", "exit_status": 1}))
        send_all(port_of(rigger), events)
        with Http(http_port(rigger)) as client:
            status, body, _ = client.raw("GET", "/metrics")
    finally:
        rigger.stop()
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    tests = families["rigger_mp_run_tests"]
    assert tests.type == "gauge"
    assert {(s.labels["run_id"], s.labels["result"]): s.value for s in tests.samples} == {
        ("m1", "failed"): 2.0,
        ("m1", "passed"): 3.0,
    }
    assert families["rigger_mp_run_finished"].samples[0].value == 1.0
    assert families["rigger_mp_run_tests_expected"].type == "gauge"
    assert families["rigger_mp_run_tests_missing"].type == "gauge"
    assert "rigger_mp_events_accepted" in families  # the dispatcher's families are still there


def test_a_poke_while_an_update_is_written_is_not_lost() -> None:
    from rigger_mp.server.run_view import Subscriber  # aiohttp: imported past _http's skip

    async def run() -> None:
        subscriber = Subscriber(asyncio.get_running_loop(), None)
        subscriber.poke()  # the timer fired while the last update was being written
        await asyncio.wait_for(subscriber.woken(), WAIT)  # at once, not at the next change
        assert not subscriber.wake.done()  # consumed: the next wait is for the next poke
        subscriber.poke()
        await asyncio.wait_for(subscriber.woken(), WAIT)

    asyncio.run(run())


class HeldSession(RiggerBasePlugin):
    """Holds the event thread in ``start_session`` until ``go`` is set."""

    started = threading.Event()
    go = threading.Event()

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_session", self.hold)

    def hold(self) -> None:
        HeldSession.started.set()
        HeldSession.go.wait(WAIT)


def test_a_restart_shows_the_journals_replay_on_the_page_before_it_has_run(
    tmp_path: Path,
) -> None:
    """Events a dispatcher accepted and did not run before it went away are replayed
    at its next start, to the plugins only: the live view is handed them with its
    settings, beside the state files as they were before the replay began. Here the
    replay is held in its first event, so no state file has any of it yet."""
    root, journal = tmp_path / "art", tmp_path / "journal.sqlite"
    test = {"run_id": "r", "session_id": "s", "test_location": "t.py", "host": "h", "worker": "gw0"}
    pending = [
        ("start_session", {"run_id": "r", "session_id": "s"}),
        ("start_test", {**test, "test_name": "a"}),
        finish("r", "a", session_id="s", test_location="t.py", host="h"),
        ("start_test", {**test, "test_name": "b"}),
    ]
    store = JournalStore.open(journal)
    try:
        rows = [(f"tcp1-{n}", name, *encode(name, data)) for n, (name, data) in enumerate(pending)]
        store.commit(rows)
    finally:
        store.close()
    HeldSession.started.clear()
    HeldSession.go.clear()
    rigger = Rigger(
        {
            "server_enabled": True,
            "server_address": HOST,
            "server_port": 0,
            "http_address": HOST,
            "http_port": 0,
            "journal": str(journal),
            "plugins": {
                "held": {"plugin": "held"},
                "report": {"plugin": "report", "dir": str(root)},
            },
        }
    )
    rigger.register_plugin(HeldSession, "held")
    rigger.artifacts_root = root
    rigger.start()
    try:
        assert HeldSession.started.wait(WAIT)  # the replay is held in its first event
        with Http(http_port(rigger)) as client:
            status, reply = client.json("GET", "/runs/r")
        HeldSession.go.set()
        assert rigger.wait_background(WAIT)  # the replay has run: the plugins have it
        with Http(http_port(rigger)) as client:
            _, after = client.json("GET", "/runs/r")
    finally:
        HeldSession.go.set()
        rigger.stop()
    assert status == 200, reply
    run = reply["run"]
    assert run["counts"] == {"passed": 1, "unfinished": 1} and run["tests"] == 2
    assert [lane["test"] for lane in run["lanes"]] == ["b"]  # running when it went away
    assert after["run"]["counts"] == run["counts"] and after["run"]["tests"] == 2
    assert [lane["done"] for lane in after["run"]["lanes"]] == [1]  # shown once, not twice
