"""``GET /metrics``: the main process's figures in the Prometheus text format.

Each scrape asks the main process for one ``stats()`` (the same request as the TCP
``stats`` op) and hands it to a :class:`StatsCollector`, a custom prometheus_client
collector that turns the mapping into metric families; nothing is kept between scrapes,
so the figures are never older than the scrape and no registry grows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..printable import printable

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_EVENT_OUTCOMES: Final = ("accepted", "done", "failed", "abandoned")


def _num(section: Any, key: str) -> float | None:
    """``section[key]`` if it is a number (the stats come from another process: check)."""
    if isinstance(section, Mapping):
        value = section.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class StatsCollector(Collector):
    """Metric families made from one ``stats()`` mapping."""

    def __init__(self, stats: Mapping[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        events = stats.get("events")
        total = CounterMetricFamily(
            "rigger_mp_events", "Events by outcome, from every source", labels=["outcome"]
        )
        for outcome in _EVENT_OUTCOMES:
            value = _num(events, outcome)
            if value is not None:
                total.add_metric([outcome], value)
        yield total
        by_hook = CounterMetricFamily(
            "rigger_mp_hook_events",
            "Events by event name and outcome (names past the first 256 count as '(other)')",
            labels=["hook", "outcome"],
        )
        hooks = stats.get("hooks")
        if isinstance(hooks, Mapping):
            for name, counts in hooks.items():
                for outcome in _EVENT_OUTCOMES:
                    value = _num(counts, outcome)
                    if value is not None:
                        by_hook.add_metric([printable(str(name)), outcome], value)
        yield by_hook
        yield from self._gauge("rigger_mp_events_queued", "Events queued now", events, "queued")
        yield from self._gauge("rigger_mp_uptime_seconds", "Seconds since start()", stats, "uptime")
        yield from self._failures(stats)
        yield from self._background(stats.get("background"))
        yield from self._workers(stats.get("workers"))
        yield from self._server(stats.get("server"))
        journal = stats.get("journal")
        yield from self._gauge(
            "rigger_mp_journal_pending", "Journaled events not yet done", journal, "pending"
        )

    @staticmethod
    def _gauge(name: str, doc: str, section: Any, key: str) -> Iterator[Metric]:
        value = _num(section, key)
        if value is not None:
            yield GaugeMetricFamily(name, doc, value=value)

    @staticmethod
    def _failures(stats: Mapping[str, Any]) -> Iterator[Metric]:
        value = _num(stats, "failures_total")
        if value is not None:
            yield CounterMetricFamily(
                "rigger_mp_failures",
                "Failures kept for the live page (events and callables)",
                value=value,
            )

    @staticmethod
    def _background(section: Any) -> Iterator[Metric]:
        if not isinstance(section, Mapping):
            return
        for state in ("queued", "running"):
            value = _num(section, state)
            if value is not None:
                yield GaugeMetricFamily(
                    f"rigger_mp_background_{state}", f"Backgrounded hooks {state} now", value=value
                )
        settled = CounterMetricFamily(
            "rigger_mp_background", "Backgrounded hooks settled, by outcome", labels=["outcome"]
        )
        for outcome in ("done", "failed", "abandoned"):
            value = _num(section, outcome)
            if value is not None:
                settled.add_metric([outcome], value)
        yield settled

    @staticmethod
    def _workers(workers: Any) -> Iterator[Metric]:
        rss = GaugeMetricFamily("rigger_mp_worker_rss_bytes", "Worker RSS", labels=["pid"])
        cpu = GaugeMetricFamily("rigger_mp_worker_cpu_percent", "Worker CPU use", labels=["pid"])
        tasks = CounterMetricFamily(
            "rigger_mp_worker_tasks_done", "Backgrounded hooks each worker ran", labels=["pid"]
        )
        for worker in workers if isinstance(workers, list) else []:
            if not isinstance(worker, Mapping):
                continue
            pid = [printable(str(worker.get("pid")))]
            for family, key in ((rss, "rss_bytes"), (cpu, "cpu_percent"), (tasks, "tasks_done")):
                value = _num(worker, key)
                if value is not None:
                    family.add_metric(pid, value)
        yield from (rss, cpu, tasks)

    @staticmethod
    def _server(server: Any) -> Iterator[Metric]:
        if not isinstance(server, Mapping):
            return
        value = _num(server, "restarts")
        if value is not None:
            yield CounterMetricFamily(
                "rigger_mp_server_restarts", "Server processes replaced", value=value
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


def render(stats: Mapping[str, Any]) -> bytes:
    """The text a scrape gets for ``stats``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return generate_latest(registry)
