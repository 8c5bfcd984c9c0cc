"""The HTTP front: POST /fire over keep-alive connections, beside TCP in the same run, and
whether Prometheus scrapes slow the event flow.

Subjects, all on 127.0.0.1, one Rigger with its TCP server and the HTTP front
(``http_port``) and one trivial hook:

- ``rigger_mp``: POST /fire (acked fires), http.client keep-alive connections in client
  processes, each request answered before the next is sent;
- ``rigger_mp TCP``: the same fires over the TCP protocol (RiggerClient, one ack each);
- for the scrape scenario: TCP ``fire_many`` handled end to end, with a process scraping
  ``/metrics`` every 100 ms (``rigger_mp``) and without (``no scrape``).

Throughput is "handled end to end": the clock stops when an event queued behind all the
others has run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Final

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
from benchmarks.scenarios.tcp import ROOT, TIMEOUT, TrivialPlugin, run_clients
from rigger_mp import Rigger

TCP: Final = "rigger_mp TCP"
NO_SCRAPE: Final = "no scrape"
SCRAPE_EVERY: Final = 0.1

HTTP_CLIENTS: Final = r"""
import http.client, json, sys, threading, time
port, clients, events = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(clients)]
headers = {"Content-Type": "application/json"}
for c in conns:
    c.request("GET", "/stats")
    c.getresponse().read()
print("ready", flush=True)
sys.stdin.readline()
def run(c):
    for i in range(events):
        c.request("POST", "/fire", body=b'{"hook_name":"ev","data":{"x":%d}}' % i, headers=headers)
        r = c.getresponse()
        if r.status != 200:
            raise SystemExit(r.read())
        r.read()
threads = [threading.Thread(target=run, args=(c,)) for c in conns]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"seconds": time.perf_counter() - start, "each": {}}), flush=True)
"""

SCRAPER: Final = r"""
import http.client, sys, time
port, every = int(sys.argv[1]), float(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
print("ready", flush=True)
n = 0
while True:  # a load generator: one scrape per interval, as Prometheus would
    c.request("GET", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and b"rigger_mp_events_accepted_total" in r.read()
    n += 1
    time.sleep(every)
"""


class Served:
    """A Rigger with TCP and HTTP on free loopback ports, for the whole scenario."""

    def __init__(self) -> None:
        self.rigger = Rigger(
            {
                "server_enabled": True,
                "server_port": 0,
                "http_port": 0,
                "plugins": {"p": {"plugin": "trivial"}},
            }
        )
        self.rigger.register_plugin(TrivialPlugin, "trivial")
        self.rigger.start()
        assert self.rigger.server_port is not None
        self.tcp_port = self.rigger.server_port
        self.http_port: int = self.rigger.stats()["server"]["http_port"]

    def handled(self, seconds: float) -> float:
        """``seconds`` plus the wait until an event queued after the others has run."""
        start = time.perf_counter()
        self.rigger.fire_hook("ev", x=-1).result(TIMEOUT)
        return seconds + time.perf_counter() - start

    def close(self) -> None:
        self.rigger.stop()


def _http_clients(port: int, processes: int, per_process: int, events: int) -> float:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HTTP_CLIENTS, str(port), str(per_process), str(events)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark HTTP client failed to connect")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            json.loads(proc.stdout.readline())
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


def _fire_rate(served: Served, subject: str, clients: int, events: int) -> Callable[[], float]:
    processes = min(clients, 4)
    per_process = clients // processes

    def sample() -> float:
        if subject == SUBJECT:
            seconds = _http_clients(served.http_port, processes, per_process, events)
        else:
            got: dict[str, Any] = run_clients(
                served.tcp_port, processes, per_process, events, "request"
            )
            seconds = float(got["seconds"])
        return clients * events / served.handled(seconds)

    return sample


def missing() -> str | None:
    """Why the HTTP front cannot be measured, or None."""
    return extra_missing("http", "aiohttp", "prometheus_client")


def fire(ctx: RunContext) -> list[Measurement]:
    name, unit = "http.fire", "events/s"
    reason = missing()
    if reason is not None:
        metric = "keep-alive clients, fire and wait for each ack"
        return skip_all(name, metric, unit, [SUBJECT, TCP], reason, True)
    served = Served()
    out: list[Measurement] = []
    try:
        for clients, total in ((1, ctx.pick(5_000, 300)), (16, ctx.pick(16_000, 1_024))):
            events = total // clients
            got = interleaved(
                {s: _fire_rate(served, s, clients, events) for s in (SUBJECT, TCP)}, ctx.repeats
            )
            metric = f"{clients} client(s), keep-alive, fire and wait for each ack"
            out.append(
                Measurement(
                    name,
                    metric,
                    SUBJECT,
                    unit,
                    got[SUBJECT],
                    True,
                    note=f"POST /fire, {clients} x {events} events",
                )
            )
            out.append(Measurement(name, metric, TCP, unit, got[TCP], True, note="same run"))
    finally:
        served.close()
    return out


def _flow(served: Served, subject: str, events: int) -> Callable[[], float]:
    def sample() -> float:
        scraper = None
        if subject == SUBJECT:
            scraper = subprocess.Popen(
                [sys.executable, "-c", SCRAPER, str(served.http_port), str(SCRAPE_EVERY)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert scraper.stdout is not None
            scraper.stdout.readline()
        try:
            got = run_clients(served.tcp_port, 1, 1, events, "pipelined")
            return events / served.handled(float(got["seconds"]))
        finally:
            if scraper is not None:
                scraper.kill()
                scraper.wait()
                if scraper.stdout is not None:
                    scraper.stdout.close()

    return sample


def scrape(ctx: RunContext) -> list[Measurement]:
    events = ctx.pick(200_000, 5_000)
    name, unit = "http.scrape", "events/s"
    metric = "TCP fire_many handled end to end, /metrics scraped every 100 ms or not"
    reason = missing()
    if reason is not None:
        return skip_all(name, metric, unit, [SUBJECT, NO_SCRAPE], reason, True)
    served = Served()
    try:
        got = interleaved({s: _flow(served, s, events) for s in (SUBJECT, NO_SCRAPE)}, ctx.repeats)
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
            note=f"{events} events per repeat, a scrape every 100 ms",
            targets=(Target(">=", 0.95, peer=NO_SCRAPE),),
        ),
        Measurement(name, metric, NO_SCRAPE, unit, got[NO_SCRAPE], True),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("http.fire", "POST /fire, 1 and 16 keep-alive clients, beside TCP", fire),
    Scenario("http.scrape", "the event flow with and without /metrics scrapes", scrape),
]
