"""The scenarios, one module per area.

Adding an area (e.g. ``background.py`` for the worker pool or ``tcp.py`` for the TCP
intake) takes two steps:

1. Write ``benchmarks/scenarios/<area>.py`` exposing ``SCENARIOS: list[Scenario]``. Each
   :class:`~benchmarks.harness.Scenario` has a name ``"<area>.<what>"``, a one-line
   description and ``run(ctx: RunContext) -> list[Measurement]``. ``run`` measures rigger_mp
   *and* its peers for that scenario (subject ``"rigger_mp"`` plus e.g.
   ``"ProcessPoolExecutor"`` or ``"bare socket server"``), one sample per repeat
   (``ctx.repeats``), sized with ``ctx.pick(full, quick)`` so that ``--quick`` stays a smoke
   run. Give the same ``metric`` string to the figures that should be compared; attach
   :class:`~benchmarks.harness.Target` records for the issue's promises. If a peer cannot run,
   return :func:`~benchmarks.harness.skipped` for it with the reason instead of raising.
2. Add ``"<area>"`` to :data:`MODULES` below.

Modules are imported lazily, so one area that cannot import (its feature not built yet)
is reported and the others still run.
"""

from __future__ import annotations

import importlib

from benchmarks.harness import Scenario

MODULES: list[str] = [
    "inprocess",
    "memory",
    "background",
    "tcp",
    "http",
    "live",
    "compress",
    "journal",
    "io",
    "dask",
    "suite",
    "attach",
]
"""Scenario modules in the order they run; register a new area here."""


def load(module: str) -> list[Scenario]:
    """The scenarios of one module of this package."""
    mod = importlib.import_module(f"{__name__}.{module}")
    scenarios: list[Scenario] = mod.SCENARIOS
    return scenarios
