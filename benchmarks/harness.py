"""Timing helpers, the result record, the table, the JSON file and the chart.

A scenario (see :mod:`benchmarks.scenarios`) returns :class:`Measurement` records: one
figure of one subject (``rigger_mp`` or a peer such as ``pluggy``), with one sample per
repeat. Figures of the same scenario and metric are compared with each other: every peer
row shows how fast rigger_mp is relative to that peer *in the same run*, so that a noisy
machine moves both sides together. Absolute numbers are always printed next to the ratios.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

SUBJECT = "rigger_mp"
"""The subject under test; every other subject of a metric is a peer."""

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Target:
    """A promised figure: the median ``op`` ``value``, or rigger_mp's speed ratio to ``peer``.

    A ratio target compares rigger_mp's row with the named peer's row of the same metric
    (speed ratio: above 1 means rigger_mp is faster; see :func:`speed_ratio`).
    """

    op: Literal[">=", "<="]
    value: float
    peer: str | None = None

    def describe(self, unit: str) -> str:
        sign = "\u2265" if self.op == ">=" else "\u2264"
        if self.peer is not None:
            return f"{sign} {self.value:g}\u00d7 {self.peer}"
        return f"{sign} {fmt(self.value)} {unit}"

    def met(self, figure: float | None, ratios: dict[str, float]) -> bool | None:
        """Whether the target holds; None when the figure it needs was not measured."""
        value = ratios.get(self.peer) if self.peer is not None else figure
        if value is None or math.isnan(value):
            return None
        return value >= self.value if self.op == ">=" else value <= self.value


@dataclass
class Measurement:
    """One figure of one subject, with one sample per repeat.

    ``skipped`` holds the reason when the subject could not be measured (``samples`` is then
    empty). ``series``/``x`` place the figure on a curve for the chart; name the series
    ``"<y> vs <x>"`` (e.g. ``"cost per event vs enabled instances"``): the part after
    ``" vs "`` labels the x axis. The table lists such points one per row.
    """

    scenario: str
    metric: str
    subject: str
    unit: str
    samples: list[float]
    higher_is_better: bool
    note: str = ""
    targets: tuple[Target, ...] = ()
    skipped: str | None = None
    series: str | None = None
    x: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def low(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def high(self) -> float | None:
        return max(self.samples) if self.samples else None

    def quartiles(self) -> tuple[float, float] | None:
        """First and third quartile of the samples (None for fewer than two)."""
        if len(self.samples) < 2:
            return None
        return percentile(self.samples, 25), percentile(self.samples, 75)


def skipped(
    scenario: str, metric: str, subject: str, unit: str, reason: str, higher_is_better: bool
) -> Measurement:
    """A record saying ``subject`` was not measured, and why."""
    return Measurement(scenario, metric, subject, unit, [], higher_is_better, skipped=reason)


def extra_missing(extra: str, *modules: str) -> str | None:
    """Why a scenario that needs rigger_mp's ``extra`` cannot run here, or None."""
    import importlib.util

    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (
        f"the {extra} extra is not installed ({', '.join(absent)}): "
        f"pip install 'rigger_mp[{extra}]'"
    )


def skip_all(
    scenario: str, metric: str, unit: str, subjects: Sequence[str], reason: str, higher: bool
) -> list[Measurement]:
    """A skipped record for each of ``subjects``, with the same reason."""
    return [skipped(scenario, metric, s, unit, reason, higher) for s in subjects]


def measured_or_skipped(
    scenario: str,
    metric: str,
    subject: str,
    unit: str,
    result: list[float] | str,
    higher_is_better: bool,
    note: str = "",
) -> Measurement:
    """A peer's figure from its samples, or a skipped record when ``result`` is the reason."""
    if isinstance(result, str):
        return skipped(scenario, metric, subject, unit, result, higher_is_better)
    return Measurement(scenario, metric, subject, unit, result, higher_is_better, note=note)


@dataclass(frozen=True)
class RunContext:
    """What a scenario is told about the run: quick or full, how many repeats, where to log."""

    quick: bool
    repeats: int
    log: Callable[[str], None] = field(default=print)

    def pick(self, full: int, quick: int) -> int:
        """A size for this run: ``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Scenario:
    """A named measurement. ``run`` returns every figure it took, peers included.

    ``name`` is ``"<module>.<what>"`` (e.g. ``inprocess.latency``); ``--only`` accepts the
    full name or the module part.
    """

    name: str
    description: str
    run: Callable[[RunContext], list[Measurement]]


# --------------------------------------------------------------------------- timing


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def settle() -> None:
    """Collect garbage before a timed section so one repeat does not pay for the last."""
    gc.collect()


def time_loop(call: Callable[[int], object], n: int) -> float:
    """Seconds taken by ``call(i)`` for ``i`` in ``range(n)``, timed as one block."""
    settle()
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return time.perf_counter() - start


def time_each(call: Callable[[int], object], n: int) -> list[float]:
    """Seconds taken by each ``call(i)``, timed one by one (for latency percentiles)."""
    settle()
    clock = time.perf_counter
    out = [0.0] * n
    for i in range(n):
        start = clock()
        call(i)
        out[i] = clock() - start
    return out


T = TypeVar("T")


def interleaved(measures: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Run each named measurement once per repeat, subjects taking turns.

    On a shared, noisy machine a burst of load hits whichever subject is running; taking
    turns (and rotating who goes first) spreads it over all subjects, so the ratios
    between them stay fair even when the absolute figures move.
    """
    names = list(measures)
    out: dict[str, list[T]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            settle()
            out[name].append(measures[name]())
    return out


def speed_ratio(ours: float, theirs: float, higher_is_better: bool) -> float:
    """How many times faster rigger_mp is than a peer: above 1 faster, below 1 slower."""
    if ours <= 0 or theirs <= 0:
        return math.nan
    return ours / theirs if higher_is_better else theirs / ours


# --------------------------------------------------------------------------- reporting


def fmt(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None or math.isnan(value):
        return "-"
    mag = abs(value)
    if mag >= 1000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratios_of(group: Sequence[Measurement], ours: Measurement | None = None) -> dict[str, float]:
    """The speed ratio of ``ours`` (rigger_mp's row unless given) to every other measured
    subject in ``group`` (one scenario+metric)."""
    if ours is None:
        ours = next((m for m in group if m.subject == SUBJECT and m.samples), None)
    if ours is None or ours.median is None:
        return {}
    out: dict[str, float] = {}
    for m in group:
        if m.subject != ours.subject and m.median is not None:
            out[m.subject] = speed_ratio(ours.median, m.median, ours.higher_is_better)
    return out


def verdicts(group: Sequence[Measurement], m: Measurement) -> list[tuple[Target, bool | None]]:
    """Each target of ``m`` with whether it was met: a ratio target compares ``m`` itself
    with its peer (``m`` may be a variant of rigger_mp, a journal setting say)."""
    ratios = ratios_of(group, m) if m.targets else {}
    return [(t, t.met(m.median, ratios)) for t in m.targets]


def grouped(results: Iterable[Measurement]) -> dict[tuple[str, str], list[Measurement]]:
    """Results by (scenario, metric), in first-seen order, rigger_mp first in each group."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in results:
        groups.setdefault((m.scenario, m.metric), []).append(m)
    for group in groups.values():
        group.sort(key=lambda m: m.subject != SUBJECT)
    return groups


def _spread(m: Measurement) -> str:
    if m.low is None or m.high is None:
        return ""
    if len(m.samples) == 1:
        return "n=1"
    return f"{fmt(m.low)}..{fmt(m.high)}"


def render_table(results: Sequence[Measurement], descriptions: dict[str, str]) -> str:
    """The text table: one row per subject and metric, peers under rigger_mp.

    ``vs peer`` on a peer's row is rigger_mp's speed ratio to that peer (above 1: rigger_mp
    is faster). ``target`` on rigger_mp's row says whether the promised figure was met.
    """
    header = ("metric", "subject", "median", "min..max", "unit", "rigger_mp vs peer", "target")
    lines: list[str] = []
    current = ""
    rows: list[tuple[str, ...]] = []

    def flush() -> None:
        if not rows:
            return
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            lines.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            )
        rows.clear()

    for (scenario, _metric), group in grouped(results).items():
        if scenario != current:
            flush()
            current = scenario
            lines.append("")
            lines.append(f"== {scenario}: {descriptions.get(scenario, '')}".rstrip(": "))
        ratios = ratios_of(group)
        for m in group:
            if m.skipped is not None:
                rows.append((m.metric, m.subject, "skipped", "", "", "", m.skipped))
                continue
            vs = ""
            if m.subject != SUBJECT and m.subject in ratios:
                vs = f"{ratios[m.subject]:.3g}\u00d7"
            target = "; ".join(
                f"{t.describe(m.unit)}: {({True: 'met', False: 'NOT met', None: 'n/a'})[ok]}"
                for t, ok in verdicts(group, m)
            )
            if m.note:
                target = f"{target}  ({m.note})" if target else f"({m.note})"
            rows.append((m.metric, m.subject, fmt(m.median), _spread(m), m.unit, vs, target))
    flush()
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(extra_versions: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Where the figures came from: CPU, OS, Python, versions of rigger_mp and its peers."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import psutil

        info["memory_total_mb"] = round(psutil.virtual_memory().total / 2**20)
        with contextlib.suppress(Exception):
            freq = psutil.cpu_freq()
            if freq is not None:
                info["cpu_mhz"] = round(freq.current)
    except ImportError:
        pass
    versions: dict[str, str | None] = {
        name: _version(name)
        for name in ("rigger_mp", "pluggy", "blinker", "PyYAML", "psutil", "matplotlib")
    }
    versions["riggerlib"] = None
    versions.update(extra_versions or {})
    info["versions"] = versions
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        info["git_commit"] = commit or None
    return info


def to_json(
    results: Sequence[Measurement], machine: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """The JSON document: machine, run settings, and every figure with its spread."""
    records: list[dict[str, Any]] = []
    for group in grouped(results).values():
        ratios = ratios_of(group)
        for m in group:
            quart = m.quartiles()
            records.append(
                {
                    "scenario": m.scenario,
                    "metric": m.metric,
                    "subject": m.subject,
                    "unit": m.unit,
                    "higher_is_better": m.higher_is_better,
                    "median": m.median,
                    "min": m.low,
                    "max": m.high,
                    "iqr": list(quart) if quart else None,
                    "samples": m.samples,
                    "repeats": len(m.samples),
                    "speed_ratio_vs_peer": (
                        ratios.get(m.subject) if m.subject != SUBJECT else None
                    ),
                    "targets": [
                        {"target": t.describe(m.unit), "met": ok} for t, ok in verdicts(group, m)
                    ],
                    "note": m.note or None,
                    "skipped": m.skipped,
                    "series": m.series,
                    "x": m.x,
                }
            )
    return {"machine": machine, "run": run, "results": records}


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write ``doc`` atomically (a ``.tmp`` file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class RatioRow:
    """One bar of the chart: rigger_mp's speed ratio to one peer on one metric, and the
    ratio target on that pair, if any."""

    label: str
    ratio: float
    target: float | None

    @property
    def margin(self) -> float:
        """How far the ratio is above what is wanted (its target, else parity): the chart
        lists the smallest first."""
        return self.ratio / (self.target or 1.0)


def ratio_rows(results: Iterable[Measurement]) -> list[RatioRow]:
    """Every (metric, peer) ratio of a run, worst first (see :attr:`RatioRow.margin`)."""
    rows: list[RatioRow] = []
    for (scenario, metric), group in grouped(results).items():
        for ours in (m for m in group if m.median is not None and m.subject == SUBJECT):
            for peer, ratio in ratios_of(group, ours).items():
                if math.isnan(ratio):
                    continue
                target = next((t.value for t in ours.targets if t.peer == peer), None)
                rows.append(RatioRow(f"{scenario}: {metric} \u2014 vs {peer}", ratio, target))
    rows.sort(key=lambda r: r.margin)
    return rows


def write_chart(results: Sequence[Measurement], path: Path, title: str) -> str:
    """Draw one page: a bar per metric and peer, rigger_mp's speed ratio to that peer on a
    log axis, with a line at 1 (parity) and a mark at each ratio target; worst first.

    Red bars miss their target, blue ones meet it; gray ones have none (a peer that does
    less, such as a plain function call, is there to show the cost). Absolute figures are
    in the table and the JSON: a ratio is what holds from run to run on a noisy machine.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install '.[bench]')"

    rows = ratio_rows(results)
    if not rows:
        return "chart skipped: no ratio to a peer was measured"
    height = min(16.0, 1.2 + 0.24 * len(rows))  # one page, however many rows
    fig, ax = plt.subplots(figsize=(13.0, height))
    ys = range(len(rows))
    colors = [
        "tab:gray" if r.target is None else "tab:red" if r.margin < 1 else "tab:blue"
        for r in rows
    ]
    ax.barh(list(ys), [r.ratio for r in rows], color=colors, height=0.7)
    for y, row in zip(ys, rows, strict=True):
        if row.target is not None:
            ax.plot([row.target], [y], marker="|", color="black", markersize=11, mew=2)
        ax.text(row.ratio, y, f" {row.ratio:.2f}\u00d7", va="center", fontsize=6)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    labels = [r.label if len(r.label) <= 90 else r.label[:87] + "..." for r in rows]
    ax.set_yticks(list(ys), labels, fontsize=6 if len(rows) > 40 else 7)
    ax.invert_yaxis()
    ax.set_xlabel(
        "rigger_mp's speed relative to the peer in the same run (log; above 1: faster); "
        "| = target"
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the long labels are kept whole
    plt.close(fig)
    return f"chart written: {path}"


def python_info() -> str:
    """One line naming the interpreter, for logs."""
    return f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
