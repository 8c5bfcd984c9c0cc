"""The benchmarks' chart: one page of ratios to the peers, worst first, with targets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from benchmarks.harness import Measurement, Target, ratio_rows, write_chart


def figures() -> list[Measurement]:
    """Three metrics: a missed ratio target, a met one, and a peer with no target."""
    return [
        Measurement(
            "a.x",
            "events/s",
            "rigger_mp",
            "events/s",
            [50.0],
            True,
            targets=(Target(">=", 0.8, peer="bare"),),
        ),
        Measurement("a.x", "events/s", "bare", "events/s", [100.0], True),
        Measurement(
            "b.y",
            "latency",
            "rigger_mp",
            "s",
            [1.0],
            False,
            targets=(Target(">=", 1.5, peer="executor"),),
        ),
        Measurement("b.y", "latency", "executor", "s", [2.0], False),
        Measurement("b.y", "latency", "function call", "s", [0.25], False),
        Measurement("c.z", "skipped peer", "rigger_mp", "s", [1.0], False),
        Measurement("c.z", "skipped peer", "riggerlib", "s", [], False, skipped="no network"),
    ]


def test_ratio_rows_are_worst_first_with_their_targets() -> None:
    rows = ratio_rows(figures())
    assert [(r.label, r.ratio, r.target) for r in rows] == [
        ("b.y: latency \u2014 vs function call", 0.25, None),
        ("a.x: events/s \u2014 vs bare", 0.5, 0.8),  # missed: 0.5 / 0.8
        ("b.y: latency \u2014 vs executor", 2.0, 1.5),  # met: 2.0 / 1.5
    ]


def test_the_chart_is_one_page_whatever_the_number_of_rows(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    many = [
        m
        for i in range(120)
        for m in (
            Measurement(f"s{i}", "m", "rigger_mp", "s", [1.0 + i], False),
            Measurement(f"s{i}", "m", "peer", "s", [2.0], False),
        )
    ]
    for name, results in (("few.png", figures()), ("many.png", many)):
        path = tmp_path / name
        assert write_chart(results, path, "t") == f"chart written: {path}"
        width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG header
        assert height <= 16 * 110 + 200 and width >= 1000, (width, height)
