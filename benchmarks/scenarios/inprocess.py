"""In-process dispatch: fire-and-wait latency, pipelined throughput, scaling with instances.

Every subject runs the same trivial hook, ``ev(x) -> None``:

- ``rigger_mp``: one (or k) enabled instances of a plugin binding ``ev``; events go through
  the global queue and its thread, so each figure includes the hand-off between threads.
- ``pluggy`` and ``blinker``: the same function called synchronously in this thread. They
  have no queue and no thread, so their per-call time is the floor a dispatcher can reach.
- ``thread+queue``: a bare ``queue.SimpleQueue`` drained by one thread that calls the hook
  and completes a ``concurrent.futures.Future`` per event. This is the floor of any queued
  design in CPython (two thread hand-offs per fire-and-wait), so the distance between it and
  rigger_mp is rigger_mp's own overhead.
- ``riggerlib`` 3.1.6 (in its own venv, see :mod:`benchmarks.peers.riggerlib_peer`): the
  predecessor. Its queue thread sleeps 0.1 s whenever its queue is empty, so each
  fire-and-wait costs about 100 ms; it gets few events to keep the run short.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, Protocol

import blinker
import pluggy

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    percentile,
    settle,
    time_each,
    time_loop,
)
from benchmarks.peers import riggerlib_peer
from rigger_mp import Rigger, RiggerBasePlugin

HOOK = "ev"
INSTANCE_COUNTS = (1, 2, 4, 8, 16, 32)
BARE = "thread+queue"
US = "\u00b5s"


# --------------------------------------------------------------------------- subjects


class Fires(Protocol):
    """Anything with rigger_mp's ``fire_hook``: rigger_mp itself and the queued floor."""

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Future[dict[str, Any]]: ...

    def stop(self) -> None: ...


class TrivialPlugin(RiggerBasePlugin):
    """A plugin whose one hook takes ``x`` and does nothing."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook(HOOK, self.ev)

    def ev(self, x: int) -> None:
        return None


def start_rigger(instances: int = 1) -> Rigger:
    """A started Rigger with ``instances`` enabled instances of :class:`TrivialPlugin`."""
    plugins = {f"p{i}": {"plugin": "trivial", "enabled": True} for i in range(instances)}
    rigger = Rigger({"plugins": plugins})
    rigger.register_plugin(TrivialPlugin, "trivial")
    rigger.start()
    return rigger


def _trivial(x: int) -> None:
    return None


class BareThreadQueue:
    """One thread draining a ``SimpleQueue``, a ``Future`` per event: the queued floor."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[dict[str, Any]], dict[str, Any]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="bench-bare-queue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            future, kwargs = item
            if future.set_running_or_notify_cancel():
                _trivial(**kwargs)
                future.set_result(kwargs)

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        self._queue.put((future, kwargs))
        return future

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()


_hookspec = pluggy.HookspecMarker("bench")
_hookimpl = pluggy.HookimplMarker("bench")


class _Spec:
    @_hookspec
    def ev(self, x: int) -> None:
        """The trivial hook."""


class _Impl:
    @_hookimpl
    def ev(self, x: int) -> None:
        return None


def pluggy_caller(impls: int = 1) -> Callable[[int], object]:
    """``call(i)`` running the trivial hook through pluggy with ``impls`` plugins."""
    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(_Spec)
    for _ in range(impls):
        pm.register(_Impl())
    hook = pm.hook.ev

    def call(i: int) -> object:
        return hook(x=i)

    return call


def _receiver(sender: object, x: int) -> None:
    return None


def blinker_caller() -> Callable[[int], object]:
    """``call(i)`` sending the trivial signal through blinker to one receiver."""
    signal = blinker.Signal()
    signal.connect(_receiver, weak=False)
    send = signal.send

    def call(i: int) -> object:
        return send(None, x=i)

    return call


# --------------------------------------------------------------------------- timing


def _floor_per_call_us(call: Callable[[int], object], n: int, repeats: int) -> list[float]:
    """Per-call time in µs of a synchronous ``call``, one sample per repeat."""
    time_loop(call, min(n, 10_000))  # warm up
    return [time_loop(call, n) / n * 1e6 for _ in range(repeats)]


def _floor_rate(call: Callable[[int], object], n: int, repeats: int) -> list[float]:
    """Calls per second of a synchronous ``call``, one sample per repeat."""
    time_loop(call, min(n, 10_000))  # warm up
    return [n / time_loop(call, n) for _ in range(repeats)]


def _fire_and_wait(subject: Fires, events: int, repeats: int) -> tuple[list[float], list[float]]:
    """Median and p99 latency in µs of fire-then-wait, one (median, p99) per repeat."""
    fire = subject.fire_hook

    def one(i: int) -> object:
        return fire(HOOK, x=i).result()

    time_each(one, min(events, 500))  # warm up
    medians: list[float] = []
    p99s: list[float] = []
    for _ in range(repeats):
        us = [s * 1e6 for s in time_each(one, events)]
        medians.append(statistics.median(us))
        p99s.append(percentile(us, 99))
    return medians, p99s


def _pipelined(subject: Fires, n: int) -> tuple[float, float]:
    """Fire ``n`` events without waiting, then wait for the last.

    Returns (seconds until the last one finished, seconds the firing loop itself took).
    """
    fire = subject.fire_hook
    settle()
    start = time.perf_counter()
    last: Future[dict[str, Any]] | None = None
    for i in range(n):
        last = fire(HOOK, x=i)
    fired = time.perf_counter()
    assert last is not None
    last.result()
    return time.perf_counter() - start, fired - start


def _rates(subject: Fires, events: int, repeats: int) -> tuple[list[float], list[float]]:
    """Pipelined events/s per repeat, and the share of each run spent in the firing loop."""
    _pipelined(subject, min(events, 5_000))  # warm up
    rates: list[float] = []
    shares: list[float] = []
    for _ in range(repeats):
        total, fired = _pipelined(subject, events)
        rates.append(events / total)
        shares.append(fired / total)
    return rates, shares


def _using(make: Callable[[], Fires], measure: Callable[[Fires], Any]) -> Any:
    """Run ``measure`` against a fresh subject and stop it afterwards."""
    subject = make()
    try:
        return measure(subject)
    finally:
        subject.stop()


def _riggerlib(
    scenario: str, metric: str, unit: str, kind: str, events: int, ctx: RunContext
) -> Measurement:
    """riggerlib's figure for ``kind``, or a skipped record saying why."""
    result = riggerlib_peer.measure(kind, events=events, repeats=ctx.repeats, log=ctx.log)
    higher = kind == "throughput"
    if isinstance(result, str):
        return Measurement(scenario, metric, "riggerlib", unit, [], higher, skipped=result)
    note = f"{events} events per repeat"
    if kind == "latency":
        note += "; its queue thread sleeps 0.1 s when idle"
    return Measurement(scenario, metric, "riggerlib", unit, result, higher, note=note)


# --------------------------------------------------------------------------- scenarios


def latency(ctx: RunContext) -> list[Measurement]:
    """Fire one event, wait for its result, then the next: median and p99 per repeat."""
    name = "inprocess.latency"
    events = ctx.pick(5_000, 1_000)
    ours = _using(start_rigger, lambda r: _fire_and_wait(r, events, ctx.repeats))
    bare = _using(BareThreadQueue, lambda r: _fire_and_wait(r, events, ctx.repeats))
    floor_n = ctx.pick(200_000, 20_000)
    sync_note = "synchronous call, no queue, no thread"
    bare_note = "SimpleQueue + 1 thread + Future: the floor of a queued design"
    med, p99 = "median latency", "p99 latency"
    return [
        Measurement(
            name, med, SUBJECT, US, ours[0], False,
            note=f"{events} events per repeat", targets=(Target("<=", 50.0),),
        ),
        Measurement(name, med, BARE, US, bare[0], False, note=bare_note),
        Measurement(
            name, med, "pluggy", US,
            _floor_per_call_us(pluggy_caller(), floor_n, ctx.repeats), False, note=sync_note,
        ),
        Measurement(
            name, med, "blinker", US,
            _floor_per_call_us(blinker_caller(), floor_n, ctx.repeats), False, note=sync_note,
        ),
        _riggerlib(name, med, US, "latency", ctx.pick(10, 5), ctx),
        Measurement(name, p99, SUBJECT, US, ours[1], False),
        Measurement(name, p99, BARE, US, bare[1], False),
    ]  # fmt: skip


def throughput(ctx: RunContext) -> list[Measurement]:
    """Fire many events without waiting, then wait for the last: events per second."""
    name = "inprocess.throughput"
    events = ctx.pick(100_000, 10_000)
    rates, shares = _using(start_rigger, lambda r: _rates(r, events, ctx.repeats))
    bare_rates, _ = _using(BareThreadQueue, lambda r: _rates(r, events, ctx.repeats))
    metric = "events/s, pipelined"
    share = statistics.median(shares) * 100
    return [
        Measurement(
            name, metric, SUBJECT, "events/s", rates, True,
            note=f"{events} events per repeat; firing loop ended at {share:.0f}% of the time",
            targets=(Target(">=", 150_000.0), Target(">=", 0.40, peer="pluggy")),
        ),
        Measurement(
            name, metric, BARE, "events/s", bare_rates, True,
            note="SimpleQueue + 1 thread + Future: the floor of a queued design",
        ),
        Measurement(
            name, metric, "pluggy", "calls/s",
            _floor_rate(pluggy_caller(), events, ctx.repeats), True,
            note="synchronous call",
        ),
        Measurement(
            name, metric, "blinker", "sends/s",
            _floor_rate(blinker_caller(), events, ctx.repeats), True,
            note="synchronous send",
        ),
        _riggerlib(name, metric, "events/s", "throughput", ctx.pick(20_000, 2_000), ctx),
    ]  # fmt: skip


def scaling(ctx: RunContext) -> list[Measurement]:
    """Cost per event with 1..32 enabled instances, and how far from linear it grows."""
    name = "inprocess.scaling"
    events = ctx.pick(20_000, 2_000)
    series = "cost per event vs enabled instances"
    ours: dict[int, list[float]] = {}
    theirs: dict[int, list[float]] = {}
    for k in INSTANCE_COUNTS:
        rates, _ = _using(partial(start_rigger, k), lambda r: _rates(r, events, ctx.repeats))
        ours[k] = [1e6 / rate for rate in rates]
        theirs[k] = _floor_per_call_us(pluggy_caller(k), events, ctx.repeats)

    out: list[Measurement] = []
    for k in INSTANCE_COUNTS:
        metric = f"cost per event, {k} instance{'s' if k > 1 else ''}"
        for subject, data in ((SUBJECT, ours), ("pluggy", theirs)):
            out.append(Measurement(name, metric, subject, US, data[k], False, series=series, x=k))
    lo, hi = INSTANCE_COUNTS[0], INSTANCE_COUNTS[-1]
    metric = f"cost per event per instance, {hi} vs {lo}"
    for subject, data in ((SUBJECT, ours), ("pluggy", theirs)):
        ratios = [(b / hi) / (a / lo) for a, b in zip(data[lo], data[hi], strict=True)]
        is_ours = subject == SUBJECT
        out.append(
            Measurement(
                name, metric, subject, "\u00d7", ratios, False,
                targets=(Target("<=", 1.0),) if is_ours else (),
                note="1 = linear; below 1: fixed cost amortised; above: worse than linear"
                if is_ours else "",
            )
        )  # fmt: skip
    metric = "marginal cost per instance (least-squares slope)"
    for subject, data in ((SUBJECT, ours), ("pluggy", theirs)):
        slopes = [
            _slope(INSTANCE_COUNTS, [data[k][r] for k in INSTANCE_COUNTS])
            for r in range(ctx.repeats)
        ]
        out.append(Measurement(name, metric, subject, US, slopes, False))
    return out


def _slope(xs: tuple[int, ...], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs``."""
    mx = statistics.fmean(xs)
    my = statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den


SCENARIOS: list[Scenario] = [
    Scenario("inprocess.latency", "fire one event and wait for it, one after another", latency),
    Scenario(
        "inprocess.throughput",
        "fire many events without waiting, then wait for the last",
        throughput,
    ),
    Scenario("inprocess.scaling", "cost per event with 1..32 enabled instances", scaling),
]
