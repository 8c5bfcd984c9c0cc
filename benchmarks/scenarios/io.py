"""Hooks that wait on the network: the I/O lane and async stages against the other ways.

A real aiohttp server on loopback, in a process of its own, answers each POST after
50 ms, as a dashboard or an object store would. Every subject's hook POSTs once per event.

- ``io.lane``: events per second until every hook has ended (fire N events, then
  ``wait_background``): an ``async def`` hook with ``bg="io"`` (the I/O lane), against a
  plain hook in the foreground (one POST at a time), the same with ``threaded: true``, and
  a backgrounded hook in a worker pool of 2. The slow subjects are measured on fewer
  events (their rate does not depend on the count); the lane's target is 1,000 events
  settled within 2 s, that is at least 500 events/s.
- ``io.stage``: the latency of one event whose stage has three ``async def`` hooks of one
  POST each (at most 80 ms: they run together), against three plain hooks.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar, Final

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
from rigger_mp import Rigger, RiggerBasePlugin

DELAY: Final = 0.05
FOREGROUND = "plain hook, foreground"
THREADED = "plain hook, threaded: true"
POOL = "plain hook, worker pool of 2"
PLAIN_STAGE = "three plain hooks"

SERVER: Final = r"""
import asyncio, sys
from aiohttp import web

async def handle(request):
    await request.read()
    await asyncio.sleep(float(sys.argv[1]))
    return web.Response(text="ok")

async def main():
    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Posting(RiggerBasePlugin):
    """One POST per event to ``url``: ``mode`` says how (both instance keys, so that a
    worker process builds the same instance)."""

    config_keys: ClassVar[Any] = {"mode": str, "url": str}

    def plugin_initialize(self) -> None:
        self.url = str(self.data["url"])
        self.session: Any = None
        mode = self.data.get("mode", "plain")
        if mode == "io":
            self.register_plugin_hook("post", self.post_async, bg="io")
        elif mode == "async":
            self.register_plugin_hook("post", self.post_async)
        else:
            self.register_plugin_hook("post", self.post_plain, bg=mode == "pool")
        self.register_plugin_hook("close", self.close if mode in ("io", "async") else self.noop)

    async def post_async(self, i: int) -> None:
        if self.session is None:  # made on the dispatcher's coroutine thread, kept open
            import aiohttp

            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with self.session.post(self.url, data=b"%d" % i) as response:
            await response.read()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def noop(self) -> None:
        """Nothing to close: urllib opens a connection per request."""

    def post_plain(self, i: int) -> None:
        with urllib.request.urlopen(self.url, data=b"%d" % i, timeout=60) as response:
            response.read()


def _stop(rigger: Rigger) -> None:
    rigger.fire_hook("close").result(60)
    rigger.stop()


def _dispatcher(url: str, mode: str, instances: int = 1, **config: Any) -> Rigger:
    plugins = {f"p{n}": {"plugin": "posting", "mode": mode, "url": url} for n in range(instances)}
    rigger = Rigger({"plugins": plugins, **config})
    rigger.register_plugin(Posting, "posting")
    return rigger.start()


def _rate(rigger: Rigger, events: int) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        for i in range(events):
            rigger.fire_hook("post", i=i)
        assert rigger.wait_background(600), "the hooks did not settle"
        return events / (time.perf_counter() - start)

    return sample


def _latency(rigger: Rigger) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        rigger.fire_hook("post", i=0).result(60)
        return time.perf_counter() - start

    return sample


class Server:
    """The 50 ms server, in its own process, for the whole scenario."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(DELAY)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port = self.proc.stdout.readline().strip()
        if not port:
            self.close()
            raise RuntimeError("the benchmark's HTTP server did not start")
        self.url = f"http://127.0.0.1:{port}/"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def lane(ctx: RunContext) -> list[Measurement]:
    name, unit = "io.lane", "events/s"
    metric = "events whose hook POSTs once (50 ms), until every hook has ended"
    reason = extra_missing("http", "aiohttp")
    if reason is not None:
        return skip_all(name, metric, unit, [SUBJECT, FOREGROUND, THREADED, POOL], reason, True)
    fast, slow = ctx.pick(1_000, 100), ctx.pick(60, 10)
    server = Server()
    url = server.url
    riggers = {
        SUBJECT: _dispatcher(url, "io"),
        FOREGROUND: _dispatcher(url, "plain"),
        THREADED: _dispatcher(url, "plain", threaded=True),
        POOL: _dispatcher(url, "pool", workers=2),
    }
    try:
        got = interleaved(
            {
                subject: _rate(rigger, fast if subject == SUBJECT else slow)
                for subject, rigger in riggers.items()
            },
            ctx.repeats,
        )
    finally:
        for rigger in riggers.values():
            _stop(rigger)
        server.close()
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            True,
            note=f"{fast} events, bg='io', io_concurrency 64",
            targets=(Target(">=", fast / 2.0),),
        ),
        *(
            Measurement(name, metric, s, unit, got[s], True, note=f"{slow} events")
            for s in (FOREGROUND, THREADED, POOL)
        ),
    ]


def stage(ctx: RunContext) -> list[Measurement]:
    name, unit = "io.stage", "s"
    metric = "one event, three hooks of one 50 ms POST each in one stage"
    reason = extra_missing("http", "aiohttp")
    if reason is not None:
        return skip_all(name, metric, unit, [SUBJECT, PLAIN_STAGE], reason, False)
    server = Server()
    riggers = {
        SUBJECT: _dispatcher(server.url, "async", 3),
        PLAIN_STAGE: _dispatcher(server.url, "plain", 3),
    }
    try:
        got = interleaved({s: _latency(r) for s, r in riggers.items()}, max(ctx.repeats, 5) * 2)
    finally:
        for rigger in riggers.values():
            _stop(rigger)
        server.close()
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            False,
            note="async def hooks",
            targets=(Target("<=", 0.080),),
        ),
        Measurement(name, metric, PLAIN_STAGE, unit, got[PLAIN_STAGE], False),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("io.lane", "hooks that POST (50 ms): the I/O lane vs foreground, threads, pool", lane),
    Scenario("io.stage", "three async hooks of 50 ms in one stage vs three plain ones", stage),
]
