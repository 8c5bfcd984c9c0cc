"""In-process dispatch: fire-and-wait latency, pipelined throughput, scaling with instances.

Every subject runs the same trivial hook, ``ev(x) -> None``:

- ``rigger_mp``: one (or k) enabled instances of a plugin binding ``ev``; events go through
  the global queue and its thread, so each figure includes the hand-off between threads.
- ``pluggy`` and ``blinker``: the same function called synchronously in this thread. They
  have no queue and no thread, so their per-call time is the floor a dispatcher can reach.
- ``thread+queue``: a bare ``queue.SimpleQueue`` drained by one thread that calls the hook
  and completes a plain ``concurrent.futures.Future`` per event: the simplest queued
  design the stdlib offers (two thread hand-offs per fire-and-wait). rigger_mp does the
  same hand-offs plus namespaces and stages, so the distance between the two is rigger_mp's
  own cost (or saving: its task handle is cheaper than a plain Future when nobody waits).
- ``riggerlib`` 3.1.6 (in its own venv, see :mod:`benchmarks.peers.riggerlib_peer`): the
  predecessor. Its queue thread sleeps 0.1 s whenever its queue is empty, so each
  fire-and-wait costs about 100 ms; it gets few events to keep the run short.
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

import blinker
import pluggy

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    interleaved,
    measured_or_skipped,
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
    """One thread draining a ``SimpleQueue``, a plain ``Future`` per event."""

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
# Each helper warms its subject up when made and then returns one sample per call, so
# that the scenarios can hand them to ``interleaved`` and let the subjects take turns.


def per_call_us(call: Callable[[int], object], n: int) -> Callable[[], float]:
    """Sampler: per-call time in µs of a synchronous ``call`` over ``n`` calls."""
    time_loop(call, min(n, 10_000))  # warm up
    return lambda: time_loop(call, n) / n * 1e6


def calls_per_s(call: Callable[[int], object], n: int) -> Callable[[], float]:
    """Sampler: calls per second of a synchronous ``call`` over ``n`` calls."""
    time_loop(call, min(n, 10_000))  # warm up
    return lambda: n / time_loop(call, n)


def fire_and_wait(subject: Fires, events: int) -> Callable[[], tuple[float, float]]:
    """Sampler: (median, p99) µs of ``events`` fire-then-wait round trips, one after another."""
    fire = subject.fire_hook

    def one(i: int) -> object:
        return fire(HOOK, x=i).result()

    time_each(one, min(events, 500))  # warm up

    def sample() -> tuple[float, float]:
        us = [s * 1e6 for s in time_each(one, events)]
        return statistics.median(us), percentile(us, 99)

    return sample


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


def pipelined(subject: Fires, events: int) -> Callable[[], tuple[float, float]]:
    """Sampler: (events/s, share of the time spent in the firing loop) for ``events``."""
    _pipelined(subject, min(events, 5_000))  # warm up

    def sample() -> tuple[float, float]:
        total, fired = _pipelined(subject, events)
        return events / total, fired / total

    return sample


def cost_per_event_us(subject: Fires, events: int) -> Callable[[], float]:
    """Sampler: µs per event, pipelined (the inverse of :func:`pipelined`'s rate)."""
    rate = pipelined(subject, events)
    return lambda: 1e6 / rate()[0]


def _riggerlib(
    scenario: str, metric: str, unit: str, kind: str, events: int, ctx: RunContext
) -> Measurement:
    """riggerlib's figure for ``kind``, or a skipped record saying why."""
    result = riggerlib_peer.measure(
        kind, events=events, repeats=ctx.repeats, log=ctx.log, quick=ctx.quick
    )
    note = f"{events} events per repeat, run after the others"
    if kind == "latency":
        note += "; its queue thread sleeps 0.1 s when idle"
    higher = kind == "throughput"
    return measured_or_skipped(scenario, metric, "riggerlib", unit, result, higher, note)


# --------------------------------------------------------------------------- scenarios

SYNC_NOTE = "synchronous call in this thread: no queue, no thread"
BARE_NOTE = "stdlib SimpleQueue + 1 thread + plain Future per event"


def latency(ctx: RunContext) -> list[Measurement]:
    """Fire one event, wait for its result, then the next: median and p99 per repeat."""
    name = "inprocess.latency"
    events = ctx.pick(5_000, 1_000)
    floor_n = ctx.pick(200_000, 20_000)
    rigger, bare = start_rigger(), BareThreadQueue()
    try:
        pluggy_us = per_call_us(pluggy_caller(), floor_n)
        blinker_us = per_call_us(blinker_caller(), floor_n)
        samples = interleaved(
            {
                SUBJECT: fire_and_wait(rigger, events),
                BARE: fire_and_wait(bare, events),
                "pluggy": lambda: (pluggy_us(), math.nan),
                "blinker": lambda: (blinker_us(), math.nan),
            },
            ctx.repeats,
        )
    finally:
        rigger.stop()
        bare.stop()
    med, p99 = "median latency", "p99 latency"

    def fig(subject: str, metric: str, col: int, **kw: Any) -> Measurement:
        values = [s[col] for s in samples[subject]]
        return Measurement(name, metric, subject, US, values, False, **kw)

    return [
        fig(SUBJECT, med, 0, note=f"{events} events per repeat", targets=(Target("<=", 50.0),)),
        fig(BARE, med, 0, note=BARE_NOTE),
        fig("pluggy", med, 0, note=SYNC_NOTE),
        fig("blinker", med, 0, note=SYNC_NOTE),
        _riggerlib(name, med, US, "latency", ctx.pick(10, 5), ctx),
        fig(SUBJECT, p99, 1),
        fig(BARE, p99, 1),
    ]


def throughput(ctx: RunContext) -> list[Measurement]:
    """Fire many events without waiting, then wait for the last: events per second."""
    name = "inprocess.throughput"
    events = ctx.pick(100_000, 10_000)
    rigger, bare = start_rigger(), BareThreadQueue()
    try:
        pluggy_rate = calls_per_s(pluggy_caller(), events)
        blinker_rate = calls_per_s(blinker_caller(), events)
        samples = interleaved(
            {
                SUBJECT: pipelined(rigger, events),
                BARE: pipelined(bare, events),
                "pluggy": lambda: (pluggy_rate(), math.nan),
                "blinker": lambda: (blinker_rate(), math.nan),
            },
            ctx.repeats,
        )
    finally:
        rigger.stop()
        bare.stop()
    metric = "events/s, pipelined"
    share = statistics.median(s[1] for s in samples[SUBJECT]) * 100

    def fig(subject: str, unit: str, **kw: Any) -> Measurement:
        values = [s[0] for s in samples[subject]]
        return Measurement(name, metric, subject, unit, values, True, **kw)

    return [
        fig(
            SUBJECT,
            "events/s",
            note=f"{events} events per repeat; firing loop ended at {share:.0f}% of the time",
            targets=(Target(">=", 150_000.0), Target(">=", 0.40, peer="pluggy")),
        ),
        fig(BARE, "events/s", note=BARE_NOTE),
        fig("pluggy", "calls/s", note=SYNC_NOTE),
        fig("blinker", "sends/s", note=SYNC_NOTE),
        _riggerlib(name, metric, "events/s", "throughput", ctx.pick(20_000, 2_000), ctx),
    ]


def scaling(ctx: RunContext) -> list[Measurement]:
    """Cost per event with 1..32 enabled instances, and how far from linear it grows."""
    name = "inprocess.scaling"
    events = ctx.pick(20_000, 2_000)
    series = "cost per event vs enabled instances"
    riggers = {k: start_rigger(k) for k in INSTANCE_COUNTS}
    try:
        samplers: dict[str, Callable[[], float]] = {}
        for k, rigger in riggers.items():
            samplers[f"{SUBJECT}:{k}"] = cost_per_event_us(rigger, events)
            samplers[f"pluggy:{k}"] = per_call_us(pluggy_caller(k), events)
        samples = interleaved(samplers, ctx.repeats)
    finally:
        for rigger in riggers.values():
            rigger.stop()
    data = {
        subject: {k: samples[f"{subject}:{k}"] for k in INSTANCE_COUNTS}
        for subject in (SUBJECT, "pluggy")
    }

    out: list[Measurement] = []
    for k in INSTANCE_COUNTS:
        metric = f"cost per event, {k} instance{'s' if k > 1 else ''}"
        for subject in (SUBJECT, "pluggy"):
            out.append(
                Measurement(name, metric, subject, US, data[subject][k], False, series=series, x=k)
            )
    lo, hi = INSTANCE_COUNTS[0], INSTANCE_COUNTS[-1]
    metric = f"cost per event per instance, {hi} vs {lo}"
    for subject in (SUBJECT, "pluggy"):
        costs = data[subject]
        ratios = [(b / hi) / (a / lo) for a, b in zip(costs[lo], costs[hi], strict=True)]
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
    for subject in (SUBJECT, "pluggy"):
        costs = data[subject]
        slopes = [
            _slope(INSTANCE_COUNTS, [costs[k][r] for k in INSTANCE_COUNTS])
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
