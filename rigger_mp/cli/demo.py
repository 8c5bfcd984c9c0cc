"""``rigger-mp demo``: the main job end to end, on embedded defaults.

::

    this process                                          client process (demo_client)
    ------------                                          ----------------------------
    Rigger: testlog plugin (foreground)      ◀── TCP ──   start_session
            archive plugin (backgrounded,                 per test: start_test, write a few MB
              on artifacts_ready, in the pool)              of artifacts, finish_test
            TCP server on a free port                     finish_session
    progress bar on stderr  ◀── "test <n> <result>" lines on the client's stdout

The client is a separate process, as a test runner on another host would be. Each
``finish_test`` makes the dispatcher fire ``artifacts_ready`` (see
:mod:`rigger_mp.plugins.artifacts`), whose backgrounded ``archive`` hook packs the test's
directory into a ``.tar.zst`` (Zstandard level 3) in a worker process and removes the
originals. The summary says how many events ran and how fast, how many archives were
made, the bytes in and out, how fast the workers packed, and where the artifacts are.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from ..core.rigger import Rigger
from ..plugins import artifacts, report
from ..plugins.archive import totals as archive_totals
from .serve import main_job_config, with_journal
from .status import human_bytes, human_duration

DEFAULT_TESTS = 120
"""About 20 seconds on a 2-core machine."""

ARCHIVE_FORMAT = "zst"
ARCHIVE_LEVEL = 3
"""Zstandard level 3, the demo's archives: fast, and still about 3x on the logs."""


def demo_config(
    workers: int | None,
    archive_format: str = ARCHIVE_FORMAT,
    archive_level: int = ARCHIVE_LEVEL,
    pool: str = "local",
) -> dict[str, Any]:
    """The demo's dispatcher: the main job's, on a free port, archives replacing originals;
    with ``pool="dask"`` the archives are packed on a LocalCluster of ``workers``."""
    config = main_job_config(0, workers, archive_level, True, archive_format)
    if pool == "dask":
        config.update(pool="dask", dask_workers=workers)
    return config


class ProgressBar:
    """``[#####-----] 12/60 tests fired, 9 archived`` on stderr.

    Redrawn in place on a terminal; elsewhere (a log, a test) one line per tenth.
    """

    WIDTH = 30

    def __init__(self, total: int, stream: IO[str], enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self._last_tenth = -1

    def draw(self, fired: int, archived: int) -> None:
        """Show ``fired`` tests done by the client, ``archived`` archives made."""
        if not self.enabled:
            return
        filled = self.WIDTH * archived // max(1, self.total)
        text = (
            f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] "
            f"{fired}/{self.total} tests run, {archived} archived"
        )
        if self.tty:
            self.stream.write(f"\r{text}")
            self.stream.flush()
            return
        tenth = 10 * archived // max(1, self.total)
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _archived(rigger: Rigger) -> int:
    background = rigger.stats().get("background", {})
    return int(background.get("done", 0)) + int(background.get("failed", 0))


def run(
    tests: int | None = None,
    directory: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    archive_format: str = ARCHIVE_FORMAT,
    archive_level: int = ARCHIVE_LEVEL,
    pool: str = "local",
    journal: bool = True,
) -> int:
    """Run the demo; print the summary; 0 when every event and archive succeeded.

    With ``journal`` (the default), the journal is ``DIR/rigger-journal.sqlite``.

    ``archive_format``/``archive_level`` override the archiver's (the benchmarks compare).
    """
    total = tests or DEFAULT_TESTS
    root = Path(directory or tempfile.mkdtemp(prefix="rigger_mp-demo-")).absolute()
    artifact_root = root / "artifacts"
    config = with_journal(demo_config(workers, archive_format, archive_level, pool), root, journal)
    rigger = Rigger(report.with_dir(config, artifact_root))
    artifacts.install(rigger, artifact_root)
    bar = ProgressBar(total, sys.stderr, progress)
    started = time.perf_counter()
    rigger.start()
    client: subprocess.Popen[str] | None = None
    try:
        pool_size = len(rigger.stats().get("workers", []))
        print(
            f"rigger-mp demo: dispatcher on {rigger.server_address}:{rigger.server_port}, "
            f"{pool_size} {pool} pool workers; a client process runs {total} tests",
            file=sys.stderr,
            flush=True,
        )
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rigger_mp.cli.demo_client",
                str(rigger.server_address),
                str(rigger.server_port),
                str(total),
                str(artifact_root),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert client.stdout is not None
        fired = 0
        bar.draw(0, 0)
        for line in client.stdout:  # one line per test the client finished
            if line.startswith("test "):
                fired += 1
                bar.draw(fired, _archived(rigger))
        client_status = client.wait()
        # The wait is the signal; its timeout only paces the progress bar.
        while not rigger.wait_background(0.25):
            bar.draw(fired, _archived(rigger))
        bar.draw(fired, _archived(rigger))
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        if client is not None and client.stdout is not None:
            client.stdout.close()
        rigger.stop()
        bar.close()
    elapsed = time.perf_counter() - started
    stats = rigger.stats()
    print(summary(stats, archive_totals(rigger.global_data), elapsed, artifact_root))
    for written in report.rewrite_reports(rigger.instances):
        print(f"report: {written}")
    problems = stats["events"]["failed"] + stats.get("background", {}).get("failed", 0)
    if client_status != 0:
        print(f"rigger-mp demo: the client process exited with {client_status}", file=sys.stderr)
    return 0 if client_status == 0 and problems == 0 else 1


def summary(
    stats: Mapping[str, Any], archives: Mapping[str, Any], seconds: float, root: Path
) -> str:
    """The demo's last lines: events, events/s, archives, bytes in and out, where.

    ``archives`` is :func:`rigger_mp.plugins.archive.totals`. The packing speed is bytes
    in over the seconds the workers spent packing, added up over the workers: the speed
    of one worker (the pool packs up to that times the workers).
    """
    events = stats["events"]
    made = int(archives["archives"])
    bytes_in = int(archives["bytes_in"])
    bytes_out = int(archives["bytes_out"])
    ratio = f" ({100 * bytes_out / bytes_in:.1f}%)" if bytes_in else ""
    packing = float(archives["seconds"])
    speed = f"; {bytes_in / 1e6 / packing:,.1f} MB/s packed per worker" if packing else ""
    lines = [
        f"events: {events['done']:,} done, {events['failed']:,} failed in "
        f"{human_duration(seconds)} ({events['done'] / seconds:,.1f} events/s, "
        "paced by the client's tests)",
        f"archives: {made:,} made; {bytes_in:,} bytes in ({human_bytes(bytes_in)}), "
        f"{bytes_out:,} bytes out ({human_bytes(bytes_out)}){ratio}{speed}",
        f"artifacts: {root} (the archives; originals are removed once packed)",
    ]
    return "\n".join(lines)
