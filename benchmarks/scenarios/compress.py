"""Archive formats: the archive plugin in zst, xz and gz against tar and the CLI compressors.

- ``compress.formats``: the demo's own artifact directories (made by
  :func:`rigger_mp.demo_client.write_artifacts`: a console log of about 2 MB and two
  incompressible screenshots each) packed by the built-in ``archive`` plugin through the
  pool with 2 workers, in ``zst`` (level 3, the default), ``xz`` (preset 1) and ``gz``
  (level 6); against ``tar -cf - DIR | zstd -3`` and ``tar -cJf`` (xz preset 6, tar's
  default), run two at a time by the shell (``xargs -P2``) on the same directories.
  Throughput in MB/s of directory bytes (higher is better) and total archive bytes
  (lower is better). Pools are started before the clock starts; the page cache holds the
  directories for every subject alike.
- ``compress.demo``: ``rigger-mp demo`` with its default (zst level 3) against the same
  demo with ``format: xz, level: 1`` (the previous default), in the same run: the packing
  speed the demo reports (MB/s per worker) and the demo's wall time.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks.harness import SUBJECT, Measurement, RunContext, Scenario, Target, interleaved
from rigger_mp import Rigger
from rigger_mp.cli.demo import DEFAULT_TESTS
from rigger_mp.cli.demo_client import _messages, write_artifacts
from rigger_mp.plugins.archive import totals

WORKERS = 2
OURS = {SUBJECT: ("zst", 3), "rigger_mp xz -1": ("xz", 1), "rigger_mp gz -6": ("gz", 6)}
TAR_ZSTD = "tar | zstd -3, xargs -P2"
TAR_XZ = "tar -cJf, xargs -P2"
PEERS = {
    TAR_ZSTD: "tar -cf - -C {root} {name} | zstd -3 -q -f -o {out}/{name}.tar.zst",
    TAR_XZ: "tar -cJf {out}/{name}.tar.xz -C {root} {name}",
}
DEMO_XZ = "demo, xz -1"


def make_dirs(root: Path, jobs: int) -> list[str]:
    """``jobs`` test directories as the demo's client writes them."""
    rnd = random.Random(1)
    messages = _messages(rnd)
    names = []
    for job in range(jobs):
        write_artifacts(root / f"test_{job:02d}", rnd, messages, 1_700_000_000.0 + job * 300)
        names.append(f"test_{job:02d}")
    return names


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def formats(ctx: RunContext) -> list[Measurement]:
    """MB/s and archive bytes of each format through the pool, and of the shell pairs."""
    name = "compress.formats"
    jobs = ctx.pick(24, 4)
    scratch = Path(tempfile.mkdtemp(prefix="rigger_mp-bench-"))
    riggers: dict[str, Rigger] = {}
    sizes: dict[str, int] = {}
    try:
        src = scratch / "src"
        names = make_dirs(src, jobs)
        bytes_in = sum(_size(src / n) for n in names)
        for subject, (fmt, level) in OURS.items():
            spec = {"plugin": "archive", "format": fmt, "level": level, "root": str(scratch)}
            spec["event"] = "finish_test"  # fired here directly: no artifacts_ready follows
            spec["dest"] = str(scratch / fmt)
            riggers[subject] = Rigger({"workers": WORKERS, "plugins": {"a": spec}}).start()

        def ours(subject: str) -> float:
            rigger = riggers[subject]
            start = time.perf_counter()
            for n in names:
                rigger.fire_hook("finish_test", artifact_path=str(src / n))
            if not rigger.wait_background(600):
                raise RuntimeError("archive jobs did not finish")
            seconds = time.perf_counter() - start
            sizes[subject] = _size(scratch / OURS[subject][0])
            return bytes_in / 1e6 / seconds

        def peer(subject: str) -> float:
            out = scratch / ("peer-zstd" if subject == TAR_ZSTD else "peer-xz")
            out.mkdir(parents=True, exist_ok=True)
            command = PEERS[subject].format(root=src, out=out, name="{}")
            start = time.perf_counter()
            subprocess.run(
                ["xargs", "-P2", "-I{}", "sh", "-c", command],
                input="\n".join(names),
                text=True,
                check=True,
            )
            seconds = time.perf_counter() - start
            sizes[subject] = _size(out)
            return bytes_in / 1e6 / seconds

        measures: dict[str, Callable[[], float]] = {s: partial(ours, s) for s in OURS}
        measures.update({s: partial(peer, s) for s in PEERS})
        if not shutil.which("zstd"):
            del measures[TAR_ZSTD]
        samples = interleaved(measures, ctx.repeats)
        failed = {s: r.stats()["background"]["failed"] for s, r in riggers.items()}
        made = {s: totals(r.global_data)["archives"] for s, r in riggers.items()}
    finally:
        for rigger in riggers.values():
            rigger.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if any(failed.values()) or any(m != jobs * ctx.repeats for m in made.values()):
        raise RuntimeError(f"archive jobs failed: {failed}, made {made}")
    metric = f"{jobs} demo test directories, {bytes_in / 1e6:.0f} MB, throughput"
    size_metric = f"{jobs} demo test directories, archive bytes"
    notes = {
        SUBJECT: "archive plugin, zst level 3, 2 workers",
        "rigger_mp xz -1": "archive plugin, xz preset 1, 2 workers",
        "rigger_mp gz -6": "archive plugin, gz level 6, 2 workers",
        TAR_ZSTD: "tar -cf - | zstd -3, two at a time",
        TAR_XZ: "tar -cJf (xz -6), two at a time",
    }
    out = []
    for subject, values in samples.items():
        targets = (Target(">=", 0.8, peer=TAR_ZSTD),) if subject == SUBJECT else ()
        out.append(
            Measurement(
                name, metric, subject, "MB/s", values, True, note=notes[subject], targets=targets
            )
        )
    for subject in samples:
        targets = (Target(">=", 1.0, peer="rigger_mp xz -1"),) if subject == SUBJECT else ()
        out.append(
            Measurement(
                name,
                size_metric,
                subject,
                "bytes",
                [float(sizes[subject])],
                False,
                note=notes[subject],
                targets=targets,
            )
        )
    if not shutil.which("zstd"):
        out.append(
            Measurement(name, metric, TAR_ZSTD, "MB/s", [], True, skipped="no zstd on PATH")
        )
    return out


_DEMO = (
    "import sys; from rigger_mp.cli import demo; "
    "sys.exit(demo.run(tests={tests}, directory={dir!r}, workers=2, progress=False, "
    "archive_format={fmt!r}, archive_level={level}))"
)
_SPEED = re.compile(r"([\d,.]+) MB/s packed per worker")


def demo(ctx: RunContext) -> list[Measurement]:
    """``rigger-mp demo`` as a user runs it (its default test count): the new default
    (zst 3) against ``format: xz, level: 1``."""
    name = "compress.demo"
    tests = ctx.pick(DEFAULT_TESTS, 4)
    speeds: dict[str, list[float]] = {SUBJECT: [], DEMO_XZ: []}

    def run(subject: str, fmt: str, level: int) -> float:
        with tempfile.TemporaryDirectory(prefix="rigger_mp-bench-demo-") as where:
            code = _DEMO.format(tests=tests, dir=where, fmt=fmt, level=level)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=900
            )
            seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"demo {fmt} failed: {done.stdout}{done.stderr}")
        found = _SPEED.search(done.stdout)
        if found is None:
            raise RuntimeError(f"no packing speed in the demo's summary: {done.stdout}")
        speeds[subject].append(float(found[1].replace(",", "")))
        return seconds

    walls = interleaved(
        {SUBJECT: lambda: run(SUBJECT, "zst", 3), DEMO_XZ: lambda: run(DEMO_XZ, "xz", 1)},
        ctx.repeats,
    )
    speed_metric = f"demo, {tests} tests, packing speed per worker"
    wall_metric = f"demo, {tests} tests, wall time"
    return [
        Measurement(
            name,
            speed_metric,
            SUBJECT,
            "MB/s",
            speeds[SUBJECT],
            True,
            note="default: zst level 3; MB/s from the demo's summary",
            targets=(Target(">=", 4.0, peer=DEMO_XZ),),
        ),
        Measurement(name, speed_metric, DEMO_XZ, "MB/s", speeds[DEMO_XZ], True, note="xz -1"),
        Measurement(
            name,
            wall_metric,
            SUBJECT,
            "s",
            walls[SUBJECT],
            False,
            note="client process included: it paces the events",
        ),
        Measurement(name, wall_metric, DEMO_XZ, "s", walls[DEMO_XZ], False, note="xz -1"),
    ]


SCENARIOS: list[Scenario] = [
    Scenario(
        "compress.formats",
        "archive plugin zst/xz/gz with 2 workers vs tar|zstd -3 and tar -cJf (xargs -P2)",
        formats,
    ),
    Scenario("compress.demo", "rigger-mp demo: zst 3 (default) vs xz -1", demo),
]
