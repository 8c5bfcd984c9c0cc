"""Command line of the benchmarks: ``python -m benchmarks`` or ``python benchmarks/run.py``.

Runs the selected scenarios, prints the table, writes ``benchmarks/results/latest.json`` and
``benchmarks/results/latest.png``. Exits 1 if a scenario raised (the harness or the code
under test is broken), 2 on a bad ``--only``; a peer that cannot run is reported as
skipped and does not change the exit status. Timings never do: CI runs ``--quick`` only to
prove the harness works.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness, scenarios
from benchmarks.harness import Measurement, RunContext, Scenario


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of rigger_mp side by side with its peers, in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (about two minutes on two cores): small sizes, fewer repeats; "
        "timings are not meaningful",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this scenario (full name, or area such as 'inprocess'); "
        "repeatable or comma-separated",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="repeats per figure (default 5, or 3 with --quick)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--output",
        type=Path,
        default=harness.RESULTS_DIR / "latest.json",
        metavar="PATH",
        help="where to write the JSON results; the chart goes next to it as .png",
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _select(available: list[Scenario], only: list[str]) -> list[Scenario] | str:
    """The scenarios ``--only`` names (all when empty), or an error message."""
    wanted = [n.strip() for item in only for n in item.split(",") if n.strip()]
    if not wanted:
        return available
    chosen: list[Scenario] = []
    for name in wanted:
        hits = [s for s in available if s.name == name or s.name.split(".")[0] == name]
        if not hits:
            names = ", ".join(s.name for s in available)
            return f"unknown scenario {name!r}; choose from: {names}"
        chosen.extend(s for s in hits if s not in chosen)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
    started_at = harness.utc_now()
    repeats = args.repeats or (3 if args.quick else 5)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    failures: list[str] = []
    available: list[Scenario] = []
    for module in scenarios.MODULES:
        try:
            available.extend(scenarios.load(module))
        except Exception:
            failures.append(f"area {module!r} could not be loaded")
            log(f"area {module!r} could not be loaded:\n{traceback.format_exc()}")
    if args.list:
        for s in available:
            print(f"{s.name:28} {s.description}")
        return 1 if failures else 0
    selected = _select(available, args.only)
    if isinstance(selected, str):
        print(selected, file=sys.stderr)
        return 2

    mode = "quick (smoke run: figures are not meaningful)" if args.quick else "full"
    log(f"{mode} run, {repeats} repeats, {harness.python_info()}")
    ctx = RunContext(quick=args.quick, repeats=repeats, log=log)
    results: list[Measurement] = []
    for scenario in selected:
        log(f"running {scenario.name}: {scenario.description}")
        t0 = time.perf_counter()
        try:
            results.extend(scenario.run(ctx))
        except Exception:
            failures.append(f"{scenario.name} raised")
            log(f"{scenario.name} FAILED:\n{traceback.format_exc()}")
            continue
        log(f"{scenario.name} done in {time.perf_counter() - t0:.1f} s")

    from benchmarks.peers import riggerlib_peer

    machine = harness.machine_info({"riggerlib": riggerlib_peer.installed_version()})
    descriptions = {s.name: s.description for s in selected}
    print(harness.render_table(results, descriptions))
    print()
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    print(
        f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"Python {machine['python']}; {versions}"
    )
    print(
        "'rigger_mp vs peer': rigger_mp's speed relative to that peer in this run "
        "(above 1: rigger_mp is faster)."
    )
    elapsed = time.perf_counter() - started
    run_info = {
        "started": started_at,
        "quick": args.quick,
        "repeats": repeats,
        "only": [s.name for s in selected] if args.only else None,
        "seconds": round(elapsed, 1),
        "failures": failures,
    }
    harness.write_json(harness.to_json(results, machine, run_info), args.output)
    print(f"results written: {args.output}")
    chart = args.output.with_suffix(".png")
    title = (
        f"rigger_mp benchmarks ({'quick' if args.quick else 'full'} run) - "
        f"{machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    print(harness.write_chart(results, chart, title))
    print(
        f"total {time.perf_counter() - started:.1f} s"
        + (f"; FAILED: {'; '.join(failures)}" if failures else "")
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
