"""The Dask pool: DaskPool against LocalPool, bare Dask futures and the stdlib's pool.

Every subject runs on this machine in one run, with 2 workers of 1 thread each; the
Dask subjects share the 2-worker ``LocalCluster`` that the DaskPool Rigger started.

- ``dask.archive``: the 16 archive jobs of ``background.archive`` (4 MB each, xz preset 1)
  through DaskPool (subject ``rigger_mp``), through LocalPool, one ``client.submit`` per
  job, one ``client.map`` of all jobs, and ``ProcessPoolExecutor.map``. Target: DaskPool's
  wall time within 1.2x LocalPool's.
- ``dask.noop``: no-op backgrounded hooks per second through DaskPool and LocalPool,
  against one ``client.submit`` future per hook, one ``client.map`` of them all and
  ``ProcessPoolExecutor.submit``. Target: DaskPool at least 10x bare ``client.submit``.
- ``dask.start``: seconds ``Rigger.start()`` takes with ``pool: dask`` (starting the
  LocalCluster, registering the worker plugin, every worker connected back) and with
  the local pool.

Skipped, with the reason, when the ``dask`` extra is not installed.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    extra_missing,
    interleaved,
    skip_all,
)
from benchmarks.scenarios.background import (
    LEVEL,
    PPE,
    WORKERS,
    archive_rigger,
    make_artifacts,
    noop,
    pack,
    scratch,
    started_executor,
)
from rigger_mp import Rigger

LOCAL = "rigger_mp, LocalPool"
SUBMIT = "Dask client.submit per item"
MAP = "Dask client.map"
DASK_CONFIG: dict[str, Any] = {"pool": "dask", "dask_workers": WORKERS}


def missing() -> str | None:
    """Why Dask cannot be measured, or None."""
    return extra_missing("dask", "distributed")


def repeats(ctx: RunContext) -> int:
    """One repeat under --quick: five subjects on a cluster are slow to smoke-test."""
    return 1 if ctx.quick else ctx.repeats


def timed_start(**extra: Any) -> tuple[Rigger, float]:
    """A started archive Rigger and how long its start() took."""
    start = time.perf_counter()
    rigger = archive_rigger(**extra)
    return rigger, time.perf_counter() - start


def client_of(rigger: Rigger) -> Any:
    """The Dask client of a DaskPool Rigger (the bare peers use its cluster)."""
    background = rigger._background
    assert background is not None
    pool: Any = background._pool
    return pool.client


def wall(run: Callable[[], object]) -> Callable[[], float]:
    def measure() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return measure


def archive(ctx: RunContext) -> list[Measurement]:
    """16 archive jobs of ~4 MB on 2 workers, five ways: seconds of wall time."""
    name = "dask.archive"
    jobs, mb = ctx.pick(16, 2), ctx.pick(4, 1)
    metric = f"{jobs} jobs x {mb} MB, wall time"
    subjects = [SUBJECT, LOCAL, SUBMIT, MAP, PPE]
    reason = missing()
    if reason is not None:
        return skip_all(name, metric, "s", subjects, reason, False)
    with scratch() as root:
        dirs = make_artifacts(root, jobs, mb)
        dask_rigger, _ = timed_start(**DASK_CONFIG)
        local_rigger, _ = timed_start()
        executor = started_executor()
        client = client_of(dask_rigger)

        def through(rigger: Rigger) -> Callable[[], None]:
            def run() -> None:
                for path in dirs:
                    rigger.fire_hook("finish_test", artifact_path=path)
                if not rigger.wait_background(600):
                    raise RuntimeError("archive jobs did not finish")

            return run

        def submit() -> None:
            client.gather([client.submit(pack, path, pure=False) for path in dirs])

        def mapped() -> None:
            client.gather(client.map(pack, dirs, pure=False))

        try:
            samples = interleaved(
                {
                    SUBJECT: wall(through(dask_rigger)),
                    LOCAL: wall(through(local_rigger)),
                    SUBMIT: wall(submit),
                    MAP: wall(mapped),
                    PPE: wall(lambda: list(executor.map(pack, dirs))),
                },
                repeats(ctx),
            )
            failed = [r.stats()["background"]["failed"] for r in (dask_rigger, local_rigger)]
        finally:
            dask_rigger.stop()
            local_rigger.stop()
            executor.shutdown()
    if any(failed):
        raise RuntimeError(f"archive jobs failed: {failed}")
    note = f"xz preset {LEVEL}, {WORKERS} workers of 1 thread"
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "s",
            samples[SUBJECT],
            False,
            note=f"DaskPool on a {WORKERS}-worker LocalCluster; {note}",
            targets=(Target(">=", 1 / 1.2, peer=LOCAL),),
        ),
        Measurement(name, metric, LOCAL, "s", samples[LOCAL], False, note=note),
        Measurement(name, metric, SUBMIT, "s", samples[SUBMIT], False, note="submit(pack)"),
        Measurement(name, metric, MAP, "s", samples[MAP], False, note="map(pack, dirs)"),
        Measurement(name, metric, PPE, "s", samples[PPE], False, note="executor.map(pack)"),
    ]


def noop_hooks(ctx: RunContext) -> list[Measurement]:
    """No-op backgrounded hooks per second: DaskPool against bare Dask futures."""
    name = "dask.noop"
    metric = "no-op hooks/s"
    subjects = [SUBJECT, LOCAL, SUBMIT, MAP, PPE]
    reason = missing()
    if reason is not None:
        return skip_all(name, metric, "hooks/s", subjects, reason, True)
    count = ctx.pick(20_000, 2_000)
    bare_count = ctx.pick(1_000, 100)  # a future each: 100-200/s, so fewer
    dask_rigger, _ = timed_start(**DASK_CONFIG)
    local_rigger, _ = timed_start()
    executor = started_executor()
    client = client_of(dask_rigger)

    def through(rigger: Rigger) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for i in range(count):
                rigger.fire_hook("bg_noop", x=i)
            if not rigger.wait_background(600):
                raise RuntimeError("no-op hooks did not finish")
            return count / (time.perf_counter() - start)

        return run

    def rate(run: Callable[[], object], n: int) -> Callable[[], float]:
        def measure() -> float:
            start = time.perf_counter()
            run()
            return n / (time.perf_counter() - start)

        return measure

    def submit() -> None:
        client.gather([client.submit(noop, pure=False) for _ in range(bare_count)])

    def mapped() -> None:
        client.gather(client.map(lambda _: None, range(bare_count), pure=False))

    def ppe() -> None:
        cf.wait([executor.submit(noop) for _ in range(count)])

    try:
        samples = interleaved(
            {
                SUBJECT: through(dask_rigger),
                LOCAL: through(local_rigger),
                SUBMIT: rate(submit, bare_count),
                MAP: rate(mapped, bare_count),
                PPE: rate(ppe, count),
            },
            repeats(ctx),
        )
        failed = [r.stats()["background"]["failed"] for r in (dask_rigger, local_rigger)]
    finally:
        dask_rigger.stop()
        local_rigger.stop()
        executor.shutdown()
    if any(failed):
        raise RuntimeError(f"no-op hooks failed: {failed}")
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "hooks/s",
            samples[SUBJECT],
            True,
            note=f"DaskPool, {count} events, one no-op hook each; then wait_background()",
            targets=(Target(">=", 10.0, peer=SUBMIT),),
        ),
        Measurement(name, metric, LOCAL, "hooks/s", samples[LOCAL], True, note="same events"),
        Measurement(
            name, metric, SUBMIT, "tasks/s", samples[SUBMIT], True, note=f"{bare_count} futures"
        ),
        Measurement(
            name, metric, MAP, "tasks/s", samples[MAP], True, note=f"{bare_count} items, one map"
        ),
        Measurement(name, metric, PPE, "tasks/s", samples[PPE], True, note="submit(noop)"),
    ]


def start_time(ctx: RunContext) -> list[Measurement]:
    """Seconds Rigger.start() takes with a Dask LocalCluster and with the local pool."""
    name = "dask.start"
    metric = "Rigger.start(), s"
    reason = missing()
    if reason is not None:
        return skip_all(name, metric, "s", [SUBJECT, LOCAL], reason, False)

    def started(extra: dict[str, Any]) -> Callable[[], float]:
        def measure() -> float:
            rigger, seconds = timed_start(**extra)
            rigger.stop()
            return seconds

        return measure

    samples = interleaved({SUBJECT: started(DASK_CONFIG), LOCAL: started({})}, repeats(ctx))
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "s",
            samples[SUBJECT],
            False,
            note=f"pool: dask, a new {WORKERS}-worker LocalCluster, plugin registered",
        ),
        Measurement(name, metric, LOCAL, "s", samples[LOCAL], False, note="LocalPool, 2 workers"),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("dask.archive", "16 archive jobs of ~4 MB: DaskPool, LocalPool, bare Dask", archive),
    Scenario("dask.noop", "no-op backgrounded hooks/s: DaskPool against bare Dask", noop_hooks),
    Scenario("dask.start", "Rigger.start() with a Dask LocalCluster, and without", start_time),
]
