"""Backgrounded hooks: the worker pool against the stdlib's process pool and the serial floor.

- ``background.archive``: 16 artifact directories of about 4 MB of compressible text each,
  packed to ``.tar.xz`` (xz preset 1, to keep the run short) by the built-in ``archive``
  plugin with 2 workers; against a bare ``ProcessPoolExecutor(2)`` packing the same
  directories with the same ``tarfile`` call, and against packing them one after another
  in this process. Pools are started before the clock starts.
- ``background.noop``: no-op backgrounded hooks per second (fire N events, then
  ``wait_background``) against ``ProcessPoolExecutor.submit`` of a no-op (then wait for
  all) and against a bare ``Manager().Queue()`` put+get round trip per item.
- ``background.saturated``: pipelined foreground events per second while the pool is
  busy packing archives, against the same run with the pool idle.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import random
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from benchmarks.harness import SUBJECT, Measurement, RunContext, Scenario, Target, interleaved
from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.plugins.archive import totals

WORKERS = 2
LEVEL: Final = 1
PPE = "ProcessPoolExecutor"
SERIAL = "serial, in process"
MANAGER_QUEUE = "Manager().Queue() put+get"
IDLE = "rigger_mp, pool idle"


# --------------------------------------------------------------------------- data


def make_artifacts(root: Path, jobs: int, megabytes: int) -> list[str]:
    """``jobs`` directories of ``megabytes`` MB of word salad each (compressible)."""
    rng = random.Random(1)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
        for _ in range(2000)
    ]
    chunk = " ".join(rng.choice(words) for _ in range(200_000)).encode()[: 2**20]
    dirs = []
    for job in range(jobs):
        folder = root / f"test_{job:02d}"
        folder.mkdir()
        for part in range(megabytes):
            (folder / f"log_{part}.txt").write_bytes(chunk[part:] + chunk[:part])
        dirs.append(str(folder))
    return dirs


def pack(path: str) -> int:
    """What the bare peers run: the archive plugin's packing, with no plugin around it."""
    target = f"{path}.bare.tar.xz"
    with tarfile.open(target, "w:xz", preset=LEVEL) as tar:
        tar.add(path, arcname=os.path.basename(path))
    return os.path.getsize(target)


def noop() -> None:
    """The task of the no-op peers."""


@contextmanager
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rigger_mp-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def archive_rigger(**extra: Any) -> Rigger:
    """A started Rigger with a backgrounded archive instance and a trivial foreground hook."""
    plugins: dict[str, Any] = {
        # scratch() directories are under the temporary directory: the archiver's root
        "archiver": {
            "plugin": "archive",
            "event": "finish_test",  # fired here directly: no artifacts_ready follows it
            "format": "xz",
            "level": LEVEL,
            "root": tempfile.gettempdir(),
        },
        "fg": {"plugin": "benchmarks.scenarios.background:Foreground"},
    }
    return Rigger({"workers": WORKERS, "plugins": plugins, **extra}).start()


class Foreground(RiggerBasePlugin):
    """A foreground hook that does nothing, and a backgrounded one that does nothing."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("ev", self.ev)
        self.register_plugin_hook("bg_noop", self.bg_noop, bg=True)

    def ev(self, x: int) -> None:
        return None

    def bg_noop(self, x: int) -> None:
        return None


def started_executor() -> cf.ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers are up (as the Rigger's are after start())."""
    ctx = multiprocessing.get_context("forkserver")
    executor = cf.ProcessPoolExecutor(WORKERS, mp_context=ctx)
    list(executor.map(abs, range(WORKERS * 4)))
    return executor


# --------------------------------------------------------------------------- scenarios


def archive(ctx: RunContext) -> list[Measurement]:
    """16 archive jobs of ~4 MB, 2 workers: seconds of wall time (lower is better)."""
    name = "background.archive"
    jobs, mb = ctx.pick(16, 4), ctx.pick(4, 1)
    with scratch() as root:
        dirs = make_artifacts(root, jobs, mb)
        rigger = archive_rigger()
        executor = started_executor()

        def ours() -> float:
            start = time.perf_counter()
            for path in dirs:
                rigger.fire_hook("finish_test", artifact_path=path)
            if not rigger.wait_background(600):
                raise RuntimeError("archive jobs did not finish")
            return time.perf_counter() - start

        def bare() -> float:
            start = time.perf_counter()
            list(executor.map(pack, dirs))
            return time.perf_counter() - start

        def serial() -> float:
            start = time.perf_counter()
            for path in dirs:
                pack(path)
            return time.perf_counter() - start

        try:
            samples = interleaved({SUBJECT: ours, PPE: bare, SERIAL: serial}, ctx.repeats)
            made = totals(rigger.global_data)["archives"]
            failed = rigger.stats()["background"]["failed"]
        finally:
            rigger.stop()
            executor.shutdown()
    if failed or made != jobs * ctx.repeats:
        raise RuntimeError(f"archive jobs failed: {failed}, archives made {made}")
    metric = f"{jobs} jobs x {mb} MB, wall time"
    note = f"xz preset {LEVEL}, {WORKERS} workers"
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "s",
            samples[SUBJECT],
            False,
            note=note,
            targets=(Target(">=", 1 / 1.10, peer=PPE), Target(">=", 1.6, peer=SERIAL)),
        ),
        Measurement(name, metric, PPE, "s", samples[PPE], False, note="executor.map(pack)"),
        Measurement(name, metric, SERIAL, "s", samples[SERIAL], False, note="pack() in a loop"),
    ]


def noop_hooks(ctx: RunContext) -> list[Measurement]:
    """No-op backgrounded hooks per second, against the stdlib's process pool and queue."""
    name = "background.noop"
    count = ctx.pick(50_000, 5_000)
    queue_count = ctx.pick(10_000, 1_000)
    rigger = archive_rigger()
    executor = started_executor()
    manager = multiprocessing.get_context("forkserver").Manager()
    queue: Any = manager.Queue()

    def ours() -> float:
        start = time.perf_counter()
        for i in range(count):
            rigger.fire_hook("bg_noop", x=i)
        if not rigger.wait_background(600):
            raise RuntimeError("no-op hooks did not finish")
        return count / (time.perf_counter() - start)

    def bare() -> float:
        start = time.perf_counter()
        futures = [executor.submit(noop) for _ in range(count)]
        cf.wait(futures)
        return count / (time.perf_counter() - start)

    def manager_queue() -> float:
        start = time.perf_counter()
        for i in range(queue_count):
            queue.put(i)
            queue.get()
        return queue_count / (time.perf_counter() - start)

    try:
        samples = interleaved({SUBJECT: ours, PPE: bare, MANAGER_QUEUE: manager_queue}, ctx.repeats)
        failed = rigger.stats()["background"]["failed"]
    finally:
        rigger.stop()
        executor.shutdown()
        manager.shutdown()
    if failed:
        raise RuntimeError(f"{failed} no-op hooks failed")
    metric = "no-op hooks/s"
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "hooks/s",
            samples[SUBJECT],
            True,
            note=f"{count} events, each one backgrounded no-op hook; then wait_background()",
            targets=(Target(">=", 1.0, peer=PPE),),
        ),
        Measurement(name, metric, PPE, "tasks/s", samples[PPE], True, note="submit(noop)"),
        Measurement(
            name,
            metric,
            MANAGER_QUEUE,
            "items/s",
            samples[MANAGER_QUEUE],
            True,
            note="one put and one get per item, same process",
        ),
    ]


def saturated(ctx: RunContext) -> list[Measurement]:
    """Pipelined foreground events/s with both workers packing archives, vs pool idle."""
    name = "background.saturated"
    events = ctx.pick(100_000, 10_000)
    jobs, mb = ctx.pick(16, 4), ctx.pick(4, 1)
    with scratch() as root:
        dirs = make_artifacts(root, jobs, mb)
        rigger = archive_rigger()
        busy: list[float] = []

        def run_events() -> float:
            start = time.perf_counter()
            last = None
            for i in range(events):
                last = rigger.fire_hook("ev", x=i)
            assert last is not None
            last.result()
            return events / (time.perf_counter() - start)

        def with_pool_busy() -> float:
            for path in dirs:
                rigger.fire_hook("finish_test", artifact_path=path)
            rate = run_events()
            busy.append(rigger.stats()["background"]["queued"])
            rigger.wait_background(600)
            return rate

        def with_pool_idle() -> float:
            return run_events()

        try:
            samples = interleaved({SUBJECT: with_pool_busy, IDLE: with_pool_idle}, ctx.repeats)
        finally:
            rigger.stop()
    metric = "foreground events/s, pipelined"
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            "events/s",
            samples[SUBJECT],
            True,
            note=(
                f"pool saturated: {jobs} archive jobs queued on {WORKERS} workers; "
                f"still queued when the events ended: {min(busy):g} or more"
            ),
            targets=(Target(">=", 0.90, peer=IDLE),),
        ),
        Measurement(name, metric, IDLE, "events/s", samples[IDLE], True, note="same Rigger"),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("background.archive", "16 archive jobs of ~4 MB with 2 workers", archive),
    Scenario("background.noop", "no-op backgrounded hooks per second", noop_hooks),
    Scenario(
        "background.saturated",
        "foreground events/s while the pool is saturated, vs idle",
        saturated,
    ),
]
