"""A real third-party test suite under pytest-xdist, without and with the pytest plugin.

- ``suite.boltons``: the boltons test suite (519 tests, from its sdist) run by
  ``pytest -n 2`` three ways, taking turns: without the plugin, with ``--rigger`` to a
  running ``rigger-mp serve`` (its default config: testlog, archive, report, a journal),
  and with ``--rigger-config`` (the same plugins, in the pytest process). Wall time of
  the whole pytest command, median of the repeats (7 in a full run). The served run may
  cost at most 3% more than pytest alone; the embedded one at most 3% more plus its
  fixed start-and-stop cost, measured apart:
- ``suite.fixed``: the same three ways on a suite of one passing test, where the
  difference is the dispatcher's start and stop alone (``--rigger-config``: the pool,
  the TCP server process, the drain); at most 0.3 s.
- ``suite.parts``: where the served run's cost comes from, when the dispatcher shares
  the two cores with the suite: boltons alone, then served by serve's default config,
  by it without the journal (``--no-journal``), by it without ``archive``, by it
  without ``testlog`` and ``archive`` (the report, JUnit and the journal), and by a
  serve with no plugin and no journal (the pytest plugin's own events, the TCP server,
  the event thread). Seven of each, taking turns; no targets: it says what each part
  costs, twice: the suite's wall time, and the CPU seconds the serve (its process and
  all its children) used during each run, which separate the parts where the wall
  times lie within each other's spread.

The sdist is fetched once with ``pip download --no-binary :all: --no-deps`` into
``benchmarks/.peers/`` (git-ignored) and unpacked there; without network the scenario
reports itself skipped. ``--quick`` runs ``suite.fixed`` once per subject and skips
``suite.boltons``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.harness import SUBJECT, Measurement, RunContext, Scenario, Target, interleaved
from rigger_mp.cli.serve import main_job_config

BOLTONS = "26.2.0"
CACHE = Path(__file__).resolve().parent.parent / ".peers" / f"boltons-{BOLTONS}"
ALONE = "pytest -n 2 alone"
EMBEDDED = "rigger_mp --rigger-config"
SERVED = SUBJECT  # --rigger to a running serve
FULL_REPEATS = 7
SERVING = re.compile(r"rigger-mp: serving on (?P<host>[^\s:]+):(?P<port>\d+)")
RUN_TIMEOUT = 600.0


def fetch_boltons(log: Callable[[str], None]) -> Path | str:
    """The unpacked boltons sdist (its ``tests`` inside), fetched on first use; or why not."""
    source = CACHE / f"boltons-{BOLTONS}"
    if (source / "tests").is_dir():
        return source
    log(f"suite: pip download boltons=={BOLTONS} (sdist) into {CACHE} (first use only)")
    CACHE.mkdir(parents=True, exist_ok=True)
    download = [
        *(sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"),
        *(f"boltons=={BOLTONS}", "-d", str(CACHE)),
    ]
    done = subprocess.run(download, capture_output=True, text=True, timeout=300, check=False)
    archives = sorted(CACHE.glob(f"boltons-{BOLTONS}.tar.gz"))
    if done.returncode != 0 or not archives:
        return f"pip download boltons failed: {(done.stderr or done.stdout).strip()[-200:]}"
    with tarfile.open(archives[0]) as tar:
        tar.extractall(CACHE, filter="data")
    return source if (source / "tests").is_dir() else f"no tests/ in {archives[0].name}"


def write_config(folder: Path) -> Path:
    """The plugins of ``serve``'s default config, as a --rigger-config file."""
    import yaml

    plugins = main_job_config(0, None, 3, False)["plugins"]
    path = folder / "rigger.yaml"
    path.write_text(yaml.safe_dump({"plugins": plugins}, sort_keys=False))
    return path


class Serve:
    """A ``rigger-mp serve`` with its default config on a free port, for a whole scenario."""

    def __init__(self, scratch: Path, *args: str, artifacts: str = "served") -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rigger_mp", "serve", "--port", "0"),
                *("--artifacts", artifacts, *args),
            ],
            cwd=scratch,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        match = SERVING.match(self.proc.stdout.readline())  # blocks until it listens
        if match is None:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("rigger-mp serve did not start")
        self.address = f"{match['host']}:{match['port']}"
        self.cpu_seen = self.cpu_seconds()

    def cpu_since_last_look(self) -> float:
        """CPU seconds the serve used since the last call (or since it listened)."""
        now = self.cpu_seconds()
        seconds, self.cpu_seen = now - self.cpu_seen, now
        return seconds

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the serve and its live descendants."""
        import psutil

        total = 0.0
        root = psutil.Process(self.proc.pid)
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):  # a child that has just ended
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        """Terminate it (it drains) and wait."""
        subprocess.run(
            [sys.executable, "-m", "rigger_mp", "terminate", "--port", self.address.split(":")[1]],
            capture_output=True,
            timeout=120,
            check=False,
        )
        try:
            self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def timed_pytest(cwd: Path, tests: str, *args: str) -> float:
    """Seconds of one ``python -m pytest -q -n 2`` run (its tests may fail: boltons has a
    network-dependent one); a run that does not finish its tests raises."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, tests, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - start
    lost = any(arg.startswith("--rigger") for arg in args) and " not fired" in done.stdout
    if done.returncode not in (0, 1) or lost:
        raise RuntimeError(f"pytest {' '.join(args)} failed:\n{done.stdout[-2000:]}")
    return seconds


def three_ways(
    ctx: RunContext, cwd: Path, tests: str, repeats: int, scratch: Path
) -> dict[str, list[float]]:
    """The wall times of the suite alone, served and embedded, taking turns."""
    config = write_config(scratch)
    serve = Serve(scratch)
    try:
        runs = {
            ALONE: lambda: timed_pytest(cwd, tests),
            SERVED: lambda: timed_pytest(cwd, tests, f"--rigger={serve.address}"),
            EMBEDDED: lambda: timed_pytest(
                cwd,
                tests,
                f"--rigger-config={config}",
                f"--rigger-artifacts={scratch / 'embedded'}",
            ),
        }
        ctx.log(f"suite: {tests} in {cwd}, {repeats} runs of each, alternated")
        return interleaved(runs, repeats)
    finally:
        serve.stop()


def measurements(
    name: str, what: str, samples: dict[str, list[float]], targets: bool
) -> list[Measurement]:
    """One row per subject; the served row's target is 1.03x of pytest alone."""
    served = (Target(">=", 1 / 1.03, peer=ALONE),) if targets else ()
    return [
        Measurement(name, what, ALONE, "s", samples[ALONE], False, note="no plugin"),
        Measurement(
            name, what, SERVED, "s", samples[SERVED], False, "--rigger to a serve", served
        ),
        Measurement(name, what, EMBEDDED, "s", samples[EMBEDDED], False, "in-process"),
    ]


def fixed(ctx: RunContext) -> list[Measurement]:
    """A one-test suite: what the dispatcher's start and stop cost on their own."""
    name = "suite.fixed"
    scratch = Path(tempfile.mkdtemp(prefix="rigger_mp-bench-suite-"))
    try:
        (scratch / "pytest.ini").write_text("[pytest]\n")
        (scratch / "test_one.py").write_text("def test_one():\n    pass\n")
        repeats = 1 if ctx.quick else FULL_REPEATS
        samples = three_ways(ctx, scratch, "test_one.py", repeats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cost = [e - a for e, a in zip(samples[EMBEDDED], samples[ALONE], strict=True)]
    return [
        *measurements(name, "one-test suite, wall time", samples, not ctx.quick),
        Measurement(
            name,
            "start-and-stop cost of --rigger-config",
            EMBEDDED,
            "s",
            cost,
            False,
            note="embedded minus alone, per round",
            targets=(Target("<=", 0.3),),
        ),
    ]


def boltons_source(ctx: RunContext) -> Path | str:
    """The boltons sdist to run, or why it is not run (``--quick``, no network)."""
    if ctx.quick:
        return "a full suite takes minutes: run without --quick"
    return fetch_boltons(ctx.log)


def boltons(ctx: RunContext) -> list[Measurement]:
    """boltons' suite three ways; the embedded run against 1.03x alone plus 0.3 s."""
    name = "suite.boltons"
    metric = "boltons tests (519), -n 2, wall time"
    source = boltons_source(ctx)
    if isinstance(source, str):
        return [Measurement(name, metric, SUBJECT, "s", [], False, skipped=source)]
    scratch = Path(tempfile.mkdtemp(prefix="rigger_mp-bench-suite-"))
    try:
        samples = three_ways(ctx, source, "tests", FULL_REPEATS, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    beyond = [e - 1.03 * a for e, a in zip(samples[EMBEDDED], samples[ALONE], strict=True)]
    return [
        *measurements(name, metric, samples, True),
        Measurement(
            name,
            "--rigger-config beyond 1.03x alone",
            EMBEDDED,
            "s",
            beyond,
            False,
            note="embedded minus 1.03 x alone, per round",
            targets=(Target("<=", 0.3),),
        ),
    ]


PARTS_REPEATS = FULL_REPEATS


def part_args(scratch: Path) -> dict[str, tuple[str, ...]]:
    """serve's arguments for each way of serving: its default config, then without one
    part of it at a time, then with nothing but the plugin's own events."""
    import yaml

    plugins = main_job_config(0, None, 3, False)["plugins"]
    ways: dict[str, tuple[dict[str, Any] | None, bool]] = {
        SERVED: (None, True),
        "served, no journal": (None, False),
        "served, no archive": ({k: v for k, v in plugins.items() if k != "archive"}, True),
        "served, no testlog or archive": (
            {k: v for k, v in plugins.items() if k not in ("testlog", "archive")},
            True,
        ),
        "served, no plugin, no journal": ({}, False),
    }
    args: dict[str, tuple[str, ...]] = {}
    for n, (way, (chosen, journal)) in enumerate(ways.items()):
        extra: tuple[str, ...] = () if journal else ("--no-journal",)
        if chosen is not None:
            path = scratch / f"parts-{n}.yaml"
            path.write_text(yaml.safe_dump({"plugins": chosen}, sort_keys=False))
            extra += ("-c", str(path))
        args[way] = extra
    return args


def parts(ctx: RunContext) -> list[Measurement]:
    """boltons alone and served four ways: what each part of the default config costs."""
    name = "suite.parts"
    metric = "boltons tests (519), -n 2, wall time, served by parts of the default config"
    source = boltons_source(ctx)
    if isinstance(source, str):
        return [Measurement(name, metric, SUBJECT, "s", [], False, skipped=source)]
    scratch = Path(tempfile.mkdtemp(prefix="rigger_mp-bench-suite-"))
    serves: dict[str, Serve] = {}
    try:
        for n, (way, args) in enumerate(part_args(scratch).items()):
            serves[way] = Serve(scratch, *args, artifacts=f"served-{n}")
        runs: dict[str, Callable[[], float]] = {ALONE: lambda: timed_pytest(source, "tests")}
        cpu: dict[str, list[float]] = {way: [] for way in serves}
        for way, serve in serves.items():
            runs[way] = partial(served_run, source, serve, cpu[way])
        ctx.log(f"suite: boltons alone and served {len(serves)} ways, {PARTS_REPEATS} of each")
        samples = interleaved(runs, PARTS_REPEATS)
    finally:
        for serve in serves.values():
            serve.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    notes = {ALONE: "no plugin", SERVED: "serve's default config", **{w: w for w in serves}}
    cpu_metric = "CPU seconds of the serve (all its processes) per boltons run"
    return [
        *(
            Measurement(name, metric, way, "s", runs, False, note=notes[way])
            for way, runs in samples.items()
        ),
        *(
            Measurement(name, cpu_metric, way, "s", seconds, False, note=notes[way])
            for way, seconds in cpu.items()
        ),
    ]


def served_run(source: Path, serve: Serve, cpu: list[float]) -> float:
    """One boltons run with ``--rigger`` to ``serve``: its wall time; the serve's CPU
    seconds since the end of its last run go to ``cpu``, so work it did after a run's
    pytest ended (the report, the last archives) counts with the next run."""
    seconds = timed_pytest(source, "tests", f"--rigger={serve.address}")
    cpu.append(serve.cpu_since_last_look())
    return seconds


SCENARIOS = [
    Scenario(
        "suite.fixed",
        "a one-test suite, -n 2: alone, --rigger to a serve, --rigger-config",
        fixed,
    ),
    Scenario(
        "suite.boltons",
        f"boltons {BOLTONS}'s tests from its sdist, -n 2: alone, served, embedded",
        boltons,
    ),
    Scenario(
        "suite.parts",
        "boltons' tests, -n 2: alone, and served by parts of serve's default config",
        parts,
    ),
]
