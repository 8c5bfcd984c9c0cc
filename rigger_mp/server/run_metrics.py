"""``GET /metrics``, per run: the live view's runs as Prometheus metric families.

The families (label ``run_id``; at most :data:`~.run_board.MAX_RUNS` runs, so the
label's values are bounded):

- ``rigger_mp_run_tests{run_id, result}``: the run's tests by outcome (``passed``,
  ``failed``, ``error``, ``skipped``, ``xfailed``, ``xpassed``, ``unfinished``,
  ``missing`` once the run has ended);
- ``rigger_mp_run_tests_expected{run_id}``: the tests the run said it would run, for
  a run that said so;
- ``rigger_mp_run_tests_missing{run_id}``: expected and never finished, once known;
- ``rigger_mp_run_finished{run_id}``: 1 once the run has ended, else 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .run_board import RunBoard, head


class RunCollector(Collector):
    """The families above, made from the board at each scrape."""

    def __init__(self, board: RunBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        if not self.board.entries:  # no run seen: no empty families in the scrape
            return
        tests = GaugeMetricFamily(
            "rigger_mp_run_tests", "Tests of a run by result", labels=["run_id", "result"]
        )
        expected = GaugeMetricFamily(
            "rigger_mp_run_tests_expected", "Tests a run expects", labels=["run_id"]
        )
        missing = GaugeMetricFamily(
            "rigger_mp_run_tests_missing",
            "Tests a run expected that never finished",
            labels=["run_id"],
        )
        finished = GaugeMetricFamily(
            "rigger_mp_run_finished", "1 once the run has ended", labels=["run_id"]
        )
        for entry in self.board.entries.values():
            shown = head(self.board, entry)
            run_id = shown["run_id"]
            for result, n in sorted(shown["counts"].items()):
                tests.add_metric([run_id, result], n)
            if shown["expected"] is not None:
                expected.add_metric([run_id], shown["expected"])
            if shown["missing"] is not None:
                missing.add_metric([run_id], shown["missing"])
            finished.add_metric([run_id], 1 if shown["finished"] else 0)
        yield from (tests, expected, missing, finished)

