"""The live run view: how soon a test's ``finish_test`` reaches a page following the run,
and what following it costs the event flow.

One Rigger with its TCP server and HTTP front on 127.0.0.1. Client processes (4 x 4 =
16 connections, ``RiggerClient``, each fire acked) send tests as the pytest plugin does:
``start_test`` then ``finish_test``. The page is an SSE client in this process (a thread
reading ``GET /live/stream`` with ``http.client``) that timestamps each row as it
arrives; a test's name carries the wall time its ``finish_test`` was sent, so the latency
is arrival minus send, on one clock.

- ``live.latency``: 1,000 tests/s (paced, 16 clients), the page open: p50 and p95 of
  ``finish_test`` to row on the page;
- ``live.rate``: the same clients unpaced, tests/s handled end to end with the page open
  (``rigger_mp``) and without (``no page``), in turns.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    extra_missing,
    interleaved,
    skip_all,
)
from benchmarks.scenarios.tcp import ROOT, TIMEOUT
from rigger_mp import Rigger, RiggerClient

NO_PAGE: Final = "no page"
PROCESSES: Final = 4
PER_PROCESS: Final = 4

TEST_CLIENTS: Final = r"""
import sys, threading, time
from rigger_mp import RiggerClient
port, clients, tests, rate, tag = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                   float(sys.argv[4]), sys.argv[5])
conns = [RiggerClient("127.0.0.1", port, timeout=120) for _ in range(clients)]
for c in conns:
    c.ping()
print("ready", flush=True)
sys.stdin.readline()
def run(k, c):
    start = time.perf_counter()
    for i in range(tests):
        if rate:  # a load generator: the next test at its slot, as a paced suite would
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        name = "t%s-%d-%d" % (tag, k, i)
        c.fire_hook("start_test", run_id="bench", test_name=name, test_location="bench.py",
                    worker="gw%d" % k, host="h%s" % tag)
        c.fire_hook("finish_test", run_id="bench", test_name="%s@%.6f" % (name, time.time()),
                    test_location="bench.py", test_result="passed", outcome="passed",
                    duration=0.001, worker="gw%d" % k, host="h%s" % tag)
threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
"""


class Served:
    """A Rigger with TCP and the HTTP front on free loopback ports."""

    def __init__(self) -> None:
        self.rigger = Rigger({"server_enabled": True, "server_port": 0, "http_port": 0})
        self.rigger.start()
        assert self.rigger.server_port is not None
        self.tcp_port = self.rigger.server_port
        self.http_port: int = self.rigger.stats()["server"]["http_port"]

    def handled(self, seconds: float) -> float:
        """``seconds`` plus the wait until an event queued after the others has run."""
        start = time.perf_counter()
        self.rigger.fire_hook("ev").result(TIMEOUT)
        return seconds + time.perf_counter() - start

    def close(self) -> None:
        self.rigger.stop()


class Page:
    """An SSE client of ``/live/stream``: the delay of each row it is sent."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.conn.request("GET", "/live/stream?run=bench")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.delays: list[float] = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.response:
                line = raw.decode()
                if not line.startswith("data: "):
                    continue
                now = time.time()
                run = json.loads(line[6:]).get("run") or {}
                for row in run.get("recent", ()):
                    sent = row["name"].rpartition("@")[2]
                    if row["name"] == "end@":
                        self.ended.set()
                    elif sent:
                        self.delays.append(now - float(sent))
        except (OSError, ValueError):
            return  # closed by close()

    def close(self) -> None:
        if self.conn.sock is not None:  # wakes the reader blocked in recv
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(TIMEOUT)
        self.conn.close()


def _clients(port: int, tests: int, rate: float) -> float:
    """Seconds for the 16 connections to send ``tests`` tests each (``rate`` per second
    per connection, 0: as fast as they can)."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                TEST_CLIENTS,
                str(port),
                str(PER_PROCESS),
                str(tests),
                str(rate),
                str(n),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for n in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark client process failed to connect")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "done":
                raise RuntimeError("a benchmark client process failed")
        seconds = time.perf_counter() - start
        for proc in procs:
            proc.wait(TIMEOUT)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    return seconds


def missing() -> str | None:
    return extra_missing("http", "aiohttp", "prometheus_client")


def latency(ctx: RunContext) -> list[Measurement]:
    name, metric = "live.latency", "finish_test to row on the page, 1,000 tests/s, 16 clients"
    if (reason := missing()) is not None:
        return skip_all(name, metric, "ms", [SUBJECT], reason, False)
    clients = PROCESSES * PER_PROCESS
    tests = ctx.pick(10_000, 1_000) // clients  # per connection: 10 s at 1,000 tests/s
    p50s, p95s = [], []
    for _ in range(ctx.repeats):
        served = Served()
        try:
            page = Page(served.http_port)
            try:
                _clients(served.tcp_port, tests, 1000 / clients)
                with RiggerClient("127.0.0.1", served.tcp_port, timeout=TIMEOUT) as client:
                    client.fire_hook("finish_test", run_id="bench", test_name="end@")
                if not page.ended.wait(TIMEOUT):
                    raise RuntimeError("the page never showed the last test")
            finally:
                page.close()
        finally:
            served.close()
        delays = sorted(d for d in page.delays if d < 3600)
        p50s.append(1000 * statistics.median(delays))
        p95s.append(1000 * delays[int(0.95 * (len(delays) - 1))])
    note = f"{clients} x {tests} tests, SSE client timestamps arrivals (same clock)"
    return [
        Measurement(
            name,
            metric + " (p95)",
            SUBJECT,
            "ms",
            p95s,
            False,
            note=note,
            targets=(Target("<=", 1000.0),),
        ),
        Measurement(name, metric + " (p50)", SUBJECT, "ms", p50s, False, note=note),
    ]


def _rate(served: Served, subject: str, tests: int) -> Callable[[], float]:
    def sample() -> float:
        page = Page(served.http_port) if subject == SUBJECT else None
        try:
            seconds = _clients(served.tcp_port, tests, 0)
            return PROCESSES * PER_PROCESS * tests / served.handled(seconds)
        finally:
            if page is not None:
                page.close()

    return sample


def rate(ctx: RunContext) -> list[Measurement]:
    name, unit = "live.rate", "tests/s"
    metric = "16 clients unpaced, start_test + finish_test each, a page following or not"
    if (reason := missing()) is not None:
        return skip_all(name, metric, unit, [SUBJECT, NO_PAGE], reason, True)
    tests = ctx.pick(20_000, 800) // (PROCESSES * PER_PROCESS)
    served = Served()
    try:
        got = interleaved({s: _rate(served, s, tests) for s in (SUBJECT, NO_PAGE)}, ctx.repeats)
    finally:
        served.close()
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            True,
            note="the page: an SSE client of /live/stream",
            targets=(Target(">=", 0.8, peer=NO_PAGE),),
        ),
        Measurement(name, metric, NO_PAGE, unit, got[NO_PAGE], True, note="same run"),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("live.latency", "finish_test to the live page at 1,000 tests/s", latency),
    Scenario("live.rate", "the test event rate with and without a live page open", rate),
]
