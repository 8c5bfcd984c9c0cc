"""``GET /metrics``: the dispatcher's figures in the Prometheus text format.

Each scrape asks the main process for one ``stats()`` (the same request as the TCP
``stats`` op) and hands it to a :class:`StatsCollector`, a custom prometheus_client
collector that turns the mapping into metric families; nothing is kept between scrapes,
so the figures are never older than the scrape and no registry grows. Beside it, in the
same registry:

- prometheus_client's own process collector twice: once as it comes (``process_*``: the
  server process, which serves ``/metrics``), once pointed at the main process's pid
  (``rigger_mp_main_process_*``: the process that runs the events and the hooks, the one
  whose cost matters), both read from ``/proc`` at the scrape (Linux; elsewhere they
  yield nothing);
- its platform collector (``python_info``).

Events are counted so that the families sum without double counting: every accepted
event is either ended (done, failed or abandoned: ``rigger_mp_events_ended_total``) or
in flight (queued or running: ``rigger_mp_events_in_flight``), so
``rigger_mp_events_accepted_total == sum(rigger_mp_events_ended_total) +
rigger_mp_events_in_flight`` in every scrape.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..printable import printable

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
ENDED: Final = ("done", "failed", "abandoned")
"""How an accepted event (or a backgrounded hook) ends: the ``outcome`` label's values."""
VERSION: Final = importlib.metadata.version("rigger_mp")


def _num(section: Any, key: str) -> float | None:
    """``section[key]`` if it is a number (the stats come from another process: check)."""
    if isinstance(section, Mapping):
        value = section.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _gauge(name: str, doc: str, section: Any, key: str) -> Iterator[Metric]:
    value = _num(section, key)
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, section: Any, key: str) -> Iterator[Metric]:
    value = _num(section, key)
    if value is not None:
        yield CounterMetricFamily(name, doc, value=value)


def _ended(name: str, doc: str, section: Any) -> Metric:
    """A counter of ``section``'s :data:`ENDED` outcomes, labelled ``outcome``."""
    ended = CounterMetricFamily(name, doc, labels=["outcome"])
    for outcome in ENDED:
        value = _num(section, outcome)
        if value is not None:
            ended.add_metric([outcome], value)
    return ended


def _buckets(section: Any) -> tuple[list[tuple[str, float]], float] | None:
    """A histogram snapshot (``bounds``, per-bucket ``counts``, ``sum``) as cumulative
    ``(le, count)`` pairs ending in ``+Inf``, and its sum; None if it is malformed."""
    if not isinstance(section, Mapping):
        return None
    bounds, counts, total = section.get("bounds"), section.get("counts"), _num(section, "sum")
    if not (isinstance(bounds, list) and isinstance(counts, list) and total is not None):
        return None
    if len(counts) != len(bounds) + 1:
        return None
    les = [*bounds, math.inf]
    cumulative = 0.0
    out = []
    for le, count in zip(les, counts, strict=True):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (le, count)):
            return None
        cumulative += count
        out.append(("+Inf" if le == math.inf else repr(float(le)), cumulative))
    return out, total


class StatsCollector(Collector):
    """Metric families made from one ``stats()`` mapping."""

    def __init__(self, stats: Mapping[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        build = GaugeMetricFamily(
            "rigger_mp_build_info", "The rigger_mp version serving /metrics", labels=["version"]
        )
        build.add_metric([VERSION], 1.0)
        yield build
        yield from _gauge(
            "rigger_mp_start_time_seconds",
            "When the dispatcher started, in seconds since the epoch",
            stats,
            "start_time",
        )
        yield from _gauge("rigger_mp_uptime_seconds", "Seconds since start()", stats, "uptime")
        yield from self._events(stats.get("events"))
        yield from self._named_events(stats.get("hooks"))
        yield from _counter(
            "rigger_mp_failures",
            "Failures kept for the live page (events and callables)",
            stats,
            "failures_total",
        )
        yield from self._timings(stats.get("timings"))
        yield from self._background(stats.get("background"))
        yield from self._workers(stats.get("workers"))
        yield from self._server(stats.get("server"))
        yield from _gauge(
            "rigger_mp_journal_pending",
            "Journaled events not yet done",
            stats.get("journal"),
            "pending",
        )

    @staticmethod
    def _events(events: Any) -> Iterator[Metric]:
        yield from _counter(
            "rigger_mp_events_accepted",
            "Events accepted, from every source",
            events,
            "accepted",
        )
        yield _ended(
            "rigger_mp_events_ended",
            "Accepted events that ended, by outcome (done, failed, abandoned at a stop)",
            events,
        )
        yield from _gauge(
            "rigger_mp_events_in_flight",
            "Accepted events not ended yet (queued or running)",
            events,
            "in_flight",
        )
        yield from _gauge(
            "rigger_mp_events_queued",
            "Events and internal jobs waiting for the event thread",
            events,
            "queued",
        )

    @staticmethod
    def _named_events(hooks: Any) -> Iterator[Metric]:
        accepted = CounterMetricFamily(
            "rigger_mp_named_events_accepted",
            "Events accepted by event name (names past the first 256 count as '(other)')",
            labels=["event"],
        )
        ended = CounterMetricFamily(
            "rigger_mp_named_events_ended",
            "Events ended by event name and outcome (names past the first 256: '(other)')",
            labels=["event", "outcome"],
        )
        if isinstance(hooks, Mapping):
            for name, counts in hooks.items():
                label = printable(str(name))
                value = _num(counts, "accepted")
                if value is not None:
                    accepted.add_metric([label], value)
                for outcome in ENDED:
                    value = _num(counts, outcome)
                    if value is not None:
                        ended.add_metric([label, outcome], value)
        yield from (accepted, ended)

    @staticmethod
    def _timings(timings: Any) -> Iterator[Metric]:
        if not isinstance(timings, Mapping):
            return
        for key, name, doc in (
            (
                "queue_wait_seconds",
                "rigger_mp_event_queue_wait_seconds",
                "From an event's acceptance to the event thread taking it",
            ),
            (
                "event_latency_seconds",
                "rigger_mp_event_latency_seconds",
                "From an event's acceptance to the end of its run, done or failed "
                "(its backgrounded hooks may still run)",
            ),
        ):
            parsed = _buckets(timings.get(key))
            if parsed is not None:
                yield HistogramMetricFamily(name, doc, buckets=parsed[0], sum_value=parsed[1])
        hooks = HistogramMetricFamily(
            "rigger_mp_hook_duration_seconds",
            "How long a plugin's hook run on the event thread takes, by plugin instance "
            "and the event it binds",
            labels=["plugin", "hook"],
        )
        entries = timings.get("hook_duration_seconds")
        for entry in entries if isinstance(entries, list) else []:
            parsed = _buckets(entry)
            if parsed is not None:
                labels = [printable(str(entry.get("plugin"))), printable(str(entry.get("hook")))]
                hooks.add_metric(labels, parsed[0], parsed[1])
        yield hooks

    @staticmethod
    def _background(section: Any) -> Iterator[Metric]:
        if not isinstance(section, Mapping):
            return
        for state in ("queued", "running"):
            yield from _gauge(
                f"rigger_mp_background_{state}", f"Backgrounded hooks {state} now", section, state
            )
        yield _ended("rigger_mp_background_ended", "Backgrounded hooks ended, by outcome", section)

    @staticmethod
    def _workers(workers: Any) -> Iterator[Metric]:
        live = [w for w in workers if isinstance(w, Mapping)] if isinstance(workers, list) else []
        yield GaugeMetricFamily("rigger_mp_workers", "Live pool workers", value=len(live))
        rss = GaugeMetricFamily(
            "rigger_mp_worker_resident_memory_bytes",
            "Resident memory of the worker in each slot",
            labels=["slot"],
        )
        cpu = CounterMetricFamily(
            "rigger_mp_worker_cpu_seconds",
            "CPU time (user and system) used in each slot, by the worker in it and those "
            "it replaced",
            labels=["slot"],
        )
        tasks = CounterMetricFamily(
            "rigger_mp_worker_tasks_done",
            "Backgrounded hooks run in each slot, by the worker in it and those it replaced",
            labels=["slot"],
        )
        for worker in live:
            slot = worker.get("slot")
            # A local pool's slot number; a Dask worker has none and is named by its address.
            label = [printable(str(slot if isinstance(slot, int) else worker.get("address")))]
            for family, key in (
                (rss, "rss_bytes"),
                (cpu, "slot_cpu_seconds"),
                (tasks, "slot_tasks_done"),
            ):
                value = _num(worker, key)
                if value is not None:
                    family.add_metric(label, value)
        yield from (rss, cpu, tasks)

    @staticmethod
    def _server(server: Any) -> Iterator[Metric]:
        if not isinstance(server, Mapping):
            return
        yield from _counter(
            "rigger_mp_server_restarts", "Server processes replaced", server, "restarts"
        )
        open_ = GaugeMetricFamily(
            "rigger_mp_connections_open", "Client connections open now", labels=["transport"]
        )
        total = CounterMetricFamily(
            "rigger_mp_connections", "Client connections made", labels=["transport"]
        )
        for transport, section in (("tcp", server.get("process")), ("http", server.get("http"))):
            for family, key in ((open_, "connections_open"), (total, "connections_total")):
                value = _num(section, key)
                if value is not None:
                    family.add_metric([transport], value)
        yield from (open_, total)


def _main_process(stats: Mapping[str, Any]) -> Collector | None:
    """prometheus_client's process collector reading the main process (``stats["pid"]``)."""
    pid = stats.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return ProcessCollector(namespace="rigger_mp_main", pid=lambda: pid, registry=None)


def render(stats: Mapping[str, Any], *more: Collector) -> bytes:
    """The text a scrape gets for ``stats``; ``more``: further collectors to add."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (StatsCollector(stats), PROCESS_COLLECTOR, PLATFORM_COLLECTOR, *more):
        registry.register(collector)
    main = _main_process(stats)
    if main is not None:
        registry.register(main)
    return generate_latest(registry)
