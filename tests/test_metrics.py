"""``GET /metrics`` read as Prometheus reads it: prometheus_client's parser on a real scrape.

The families are checked for their names, types, unit suffixes and label sets; the
histograms for cumulative buckets and counts equal to the events fired; the event
outcomes for summing to the accepted count; the workers' CPU counters for never going
back when a worker is killed with a real signal and replaced.
"""

from __future__ import annotations

import math
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from ._http import Http, http_port, make_http_rigger  # skips loudly without the http extra
from ._tcp import WAIT, Counting, counter, server_pid
from .conftest import Dispatchers

text_string_to_metric_families = pytest.importorskip(
    "prometheus_client.parser"
).text_string_to_metric_families

from rigger_mp import Rigger  # noqa: E402
from rigger_mp.core.timings import LATENCY_BOUNDS  # noqa: E402
from rigger_mp.server import metrics  # noqa: E402

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

Families = dict[str, tuple[str, list["Sample"]]]

EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    # family name (as the parser gives it): (type, label names of its samples)
    "rigger_mp_build_info": ("gauge", frozenset({"version"})),
    "rigger_mp_start_time_seconds": ("gauge", frozenset()),
    "rigger_mp_uptime_seconds": ("gauge", frozenset()),
    "rigger_mp_events_accepted": ("counter", frozenset()),
    "rigger_mp_events_ended": ("counter", frozenset({"outcome"})),
    "rigger_mp_events_in_flight": ("gauge", frozenset()),
    "rigger_mp_events_queued": ("gauge", frozenset()),
    "rigger_mp_named_events_accepted": ("counter", frozenset({"event"})),
    "rigger_mp_named_events_ended": ("counter", frozenset({"event", "outcome"})),
    "rigger_mp_failures": ("counter", frozenset()),
    "rigger_mp_event_queue_wait_seconds": ("histogram", frozenset({"le"})),
    "rigger_mp_event_latency_seconds": ("histogram", frozenset({"le"})),
    "rigger_mp_hook_duration_seconds": ("histogram", frozenset({"plugin", "hook", "le"})),
    "rigger_mp_background_queued": ("gauge", frozenset()),
    "rigger_mp_background_running": ("gauge", frozenset()),
    "rigger_mp_background_ended": ("counter", frozenset({"outcome"})),
    "rigger_mp_workers": ("gauge", frozenset()),
    "rigger_mp_worker_resident_memory_bytes": ("gauge", frozenset({"slot"})),
    "rigger_mp_worker_cpu_seconds": ("counter", frozenset({"slot"})),
    "rigger_mp_worker_tasks_done": ("counter", frozenset({"slot"})),
    "rigger_mp_server_restarts": ("counter", frozenset()),
    "rigger_mp_connections_open": ("gauge", frozenset({"transport"})),
    "rigger_mp_connections": ("counter", frozenset({"transport"})),
    "process_cpu_seconds": ("counter", frozenset()),
    "process_resident_memory_bytes": ("gauge", frozenset()),
    "process_start_time_seconds": ("gauge", frozenset()),
    "process_open_fds": ("gauge", frozenset()),
    "rigger_mp_main_process_cpu_seconds": ("counter", frozenset()),
    "rigger_mp_main_process_resident_memory_bytes": ("gauge", frozenset()),
    "rigger_mp_main_process_start_time_seconds": ("gauge", frozenset()),
    "rigger_mp_main_process_open_fds": ("gauge", frozenset()),
    "rigger_mp_main_process_max_fds": ("gauge", frozenset()),
    "rigger_mp_main_process_virtual_memory_bytes": ("gauge", frozenset()),
    "python_info": (
        "gauge",
        frozenset({"implementation", "major", "minor", "patchlevel", "version"}),
    ),
}
HOSTILE = 'evil"name\n{le="1"}'
"""An event name nobody binds, made to look like a label: it must never become one."""


def parse(body: bytes | str) -> Families:
    text = body.decode() if isinstance(body, bytes) else body
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def scrape(rigger: Rigger) -> Families:
    with Http(http_port(rigger)) as client:
        status, body, headers = client.raw("GET", "/metrics")
    assert status == 200 and headers["Content-Type"] == metrics.CONTENT_TYPE
    return parse(body)


def value(families: Families, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly ``labels``."""
    family = name.removesuffix("_total")
    found = [s.value for s in families[family][1] if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, families[family][1])
    return found[0]


def histogram(samples: Iterable[Sample], **labels: str) -> tuple[list[float], float, float]:
    """``(cumulative bucket counts in le order, _count, _sum)`` of one labelled histogram."""
    buckets: list[tuple[float, float]] = []
    count = total = math.nan
    for s in samples:
        rest = {k: v for k, v in s.labels.items() if k != "le"}
        if rest != labels:
            continue
        if s.name.endswith("_bucket"):
            buckets.append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            count = s.value
        elif s.name.endswith("_sum"):
            total = s.value
    buckets.sort()
    assert [le for le, _ in buckets] == [*LATENCY_BOUNDS, math.inf]
    return [n for _, n in buckets], count, total


def assert_outcomes_sum(families: Families) -> None:
    accepted = value(families, "rigger_mp_events_accepted_total")
    ended = sum(s.value for s in families["rigger_mp_events_ended"][1])
    assert accepted == ended + value(families, "rigger_mp_events_in_flight")
    for s in families["rigger_mp_named_events_accepted"][1]:
        by_name = [
            e.value
            for e in families["rigger_mp_named_events_ended"][1]
            if e.labels["event"] == s.labels["event"]
        ]
        assert len(by_name) == 3 and sum(by_name) <= s.value


@pytest.fixture(scope="module", autouse=True)
def _multiprocessing_helpers() -> None:
    """The stdlib's helpers serve the whole interpreter: started before any count."""
    multiprocessing.forkserver.ensure_running()
    multiprocessing.resource_tracker.ensure_running()


@pytest.fixture
def rigger(dispatchers: Dispatchers) -> Rigger:
    return dispatchers.add(make_http_rigger())


def test_every_family_has_its_name_type_unit_and_labels(rigger: Rigger) -> None:
    rigger.fire_hook("count", c=1).result(WAIT)
    families = scrape(rigger)
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, name
        assert families[name][0] == kind, name
        for sample in families[name][1]:
            # a histogram's _count and _sum have its labels less ``le``
            wanted = labels if sample.name.endswith("_bucket") else labels - {"le"}
            assert set(sample.labels) == wanted, (name, sample)
            if kind == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
    for name in families:  # the units are base units, spelled out at the end of the name
        assert not name.endswith(("_ms", "_milliseconds", "_percent", "_kb", "_mb")), name
    ours = {name for name in families if name.startswith("rigger_mp_")}
    assert ours - set(EXPECTED) == set()  # every family is checked (no journal here)
    assert not any("pid" in s.labels for _, samples in families.values() for s in samples)
    assert value(families, "rigger_mp_build_info", version=metrics.VERSION) == 1.0
    started = rigger.stats()["start_time"]
    assert value(families, "rigger_mp_start_time_seconds") == started


def test_process_figures_say_which_process_they_are(rigger: Rigger) -> None:
    families = scrape(rigger)
    main, served = psutil.Process(os.getpid()), psutil.Process(server_pid(rigger))
    for prefix, proc in (("rigger_mp_main_process", main), ("process", served)):
        started = value(families, f"{prefix}_start_time_seconds")
        assert abs(started - proc.create_time()) < 1.0, prefix
        cpu = value(families, f"{prefix}_cpu_seconds_total")
        times = proc.cpu_times()
        assert 0 < cpu <= times.user + times.system + 0.05, prefix
    assert main.create_time() < served.create_time()  # the server is the main one's child


def test_histograms_are_cumulative_and_count_the_events_fired(rigger: Rigger) -> None:
    fired = [rigger.fire_hook("count", c=2, i=i) for i in range(7)]
    fired += [rigger.fire_hook("fail") for _ in range(3)]
    fired += [rigger.fire_hook(HOSTILE), rigger.fire_hook("nobody_binds_this")]
    for task in fired:
        task.exception(WAIT)
    families = scrape(rigger)
    for name in ("rigger_mp_event_queue_wait_seconds", "rigger_mp_event_latency_seconds"):
        buckets, count, total = histogram(families[name][1])
        assert buckets == sorted(buckets)  # cumulative: never falls
        assert buckets[-1] == count == len(fired), name
        assert 0 < total < WAIT * len(fired)
    hooks = families["rigger_mp_hook_duration_seconds"][1]
    pairs = {(s.labels["plugin"], s.labels["hook"]) for s in hooks}
    assert pairs == {("counter", "count"), ("counter", "fail")}  # bound hooks only
    for hook, times in (("count", 7), ("fail", 3)):
        buckets, count, _ = histogram(hooks, plugin="counter", hook=hook)
        assert buckets == sorted(buckets) and buckets[-1] == count == times
    assert value(families, "rigger_mp_named_events_accepted_total", event="nobody_binds_this") == 1


def test_event_outcomes_partition_the_accepted_events(rigger: Rigger) -> None:
    for i in range(4):
        rigger.fire_hook("count", c=3, i=i).result(WAIT)
    rigger.fire_hook("fail").exception(WAIT)
    plugin = counter(rigger)
    blocked = rigger.fire_hook("block")
    assert plugin.entered.wait(WAIT)
    queued = [rigger.fire_hook("count", c=4, i=i) for i in range(3)]
    try:
        families = scrape(rigger)
        assert value(families, "rigger_mp_events_in_flight") == 4  # one running, three queued
        assert value(families, "rigger_mp_events_accepted_total") == 9
        assert value(families, "rigger_mp_events_ended_total", outcome="done") == 4
        assert value(families, "rigger_mp_events_ended_total", outcome="failed") == 1
        assert value(families, "rigger_mp_events_ended_total", outcome="abandoned") == 0
        assert_outcomes_sum(families)
    finally:
        plugin.release.set()
    for task in [blocked, *queued]:
        task.result(WAIT)
    after = parse(metrics.render(rigger.stats()))  # a fresh stats(), not the 100 ms snapshot
    assert value(after, "rigger_mp_events_in_flight") == 0
    assert value(after, "rigger_mp_events_ended_total", outcome="done") == 8
    assert_outcomes_sum(after)


HOG = {"plugin": "tests.pool_plugins:HogPlugin"}
CPU = 0.5  # seconds of CPU each hog burns
TICK = 2 / os.sysconf("SC_CLK_TCK")
"""The kernel counts CPU in clock ticks, the hog with ``time.process_time``."""


def hog(rigger: Rigger) -> int:
    """Run one hog; the pid of the worker that ran it."""
    rigger.fire_hook("hog", cpu=CPU)
    assert rigger.wait_background(WAIT)
    pid: int = rigger.global_data["hog_pids"][-1]
    return pid


def test_worker_cpu_counter_keeps_a_killed_workers_time(dispatchers: Dispatchers) -> None:
    rigger = dispatchers.add(make_http_rigger(workers=1, plugins={"h": HOG}))
    first = hog(rigger)
    before = scrape(rigger)
    cpu_before = value(before, "rigger_mp_worker_cpu_seconds_total", slot="0")
    assert cpu_before >= CPU - TICK
    assert value(before, "rigger_mp_worker_tasks_done_total", slot="0") == 1
    os.kill(first, signal.SIGKILL)
    second = hog(rigger)  # runs on the worker started in the killed one's place
    assert second != first
    after = parse(metrics.render(rigger.stats()))
    assert value(after, "rigger_mp_workers") == 1
    cpu_after = value(after, "rigger_mp_worker_cpu_seconds_total", slot="0")
    assert cpu_after >= cpu_before + CPU - TICK  # the killed worker's time is kept
    assert value(after, "rigger_mp_worker_tasks_done_total", slot="0") == 2
    live: list[dict[str, Any]] = rigger.stats()["workers"]
    assert [(w["pid"], w["slot"]) for w in live] == [(second, 0)]
    assert live[0]["cpu_seconds"] < cpu_after  # the worker's own figure starts afresh


def test_hooks_run_on_a_thread_pool_are_each_counted() -> None:
    plugins = {name: {"plugin": "counting"} for name in ("a", "b", "c")}
    rigger = Rigger({"threaded": True, "plugins": plugins})
    rigger.register_plugin(Counting, "counting")
    with rigger:
        for task in [rigger.fire_hook("count", c=5, i=i) for i in range(200)]:
            task.result(WAIT)
        families = parse(metrics.render(rigger.stats()))
    hooks = families["rigger_mp_hook_duration_seconds"][1]
    for name in plugins:  # three hooks per event, run at once on the stage's threads
        buckets, count, _ = histogram(hooks, plugin=name, hook="count")
        assert buckets[-1] == count == 200
