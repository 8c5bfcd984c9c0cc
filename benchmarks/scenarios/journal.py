"""The journal: group commit throughput against a commit per row, in one run.

Rows of ~200 bytes (an event's JSON data) are appended to a fresh WAL journal:

- ``rigger_mp``: :class:`~rigger_mp.journal.GroupCommitter` with 1 or 16 appending
  threads, each blocking until its row is committed, as ``fire_hook`` would.
- ``commit per row``: one thread, a plain sqlite3 connection with the same pragmas,
  ``INSERT`` then ``COMMIT`` per row: what acking each event after its own commit costs.
- ``two processes``: the lead's layout, the server process and the main process each
  appending with 8 threads to one database (writers serialised by the writer flock),
  against one process with 16 threads: what the contention costs.

Each is measured with ``journal_sync`` ``normal`` and ``full``; the mean group size
reached by 16 threads is reported beside. Figures are side by side in one run.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable

from benchmarks.harness import SUBJECT, Measurement, RunContext, Scenario, interleaved
from rigger_mp.journal import GroupCommitter, JournalStore, Sync, encode

PER_ROW = "commit per row"
ONE_PROCESS = "1 process, 16 threads"
PAYLOAD = {"test_name": "test_" + "x" * 150, "test_location": "tests/test_journal.py"}


def _fresh(directory: str, sync: Sync) -> JournalStore:
    path = os.path.join(directory, f"j{time.monotonic_ns()}.db")
    return JournalStore.open(path, sync=sync)


def _append_threads(committer: GroupCommitter, threads: int, rows: int) -> None:
    """``threads`` threads appending ``rows`` rows in all, each waiting for its commits."""
    fmt, blob = encode("start_test", PAYLOAD)

    def work(k: int) -> None:
        for i in range(rows // threads):
            committer.append_rows([(f"{k}-{i}", "start_test", fmt, blob)])

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def group_commit(
    directory: str, sync: Sync, threads: int, rows: int, groups: list[float]
) -> Callable[[], float]:
    """Sampler: rows/s of group commit; appends each sample's mean group size to ``groups``."""

    def sample() -> float:
        store = _fresh(directory, sync)
        committer = GroupCommitter(store)
        try:
            start = time.perf_counter()
            _append_threads(committer, threads, rows)
            elapsed = time.perf_counter() - start
            groups.append(committer.stats()["mean_group_size"])
        finally:
            committer.close()
            store.close()
        return rows / elapsed

    return sample


def commit_per_row(directory: str, sync: Sync, rows: int) -> Callable[[], float]:
    """Sampler: rows/s of one thread committing each row on its own (plain sqlite3)."""
    fmt, blob = encode("start_test", PAYLOAD)

    def sample() -> float:
        store = _fresh(directory, sync)  # the same schema and pragmas
        path = store.path
        store.close()
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"PRAGMA synchronous = {sync.upper()}")
        try:
            start = time.perf_counter()
            for i in range(rows):
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT INTO pending (tid, hook, fmt, data, accepted) VALUES (?, ?, ?, ?, ?)",
                    (str(i), "start_test", fmt, blob, time.time()),
                )
                db.execute("COMMIT")
            return rows / (time.perf_counter() - start)
        finally:
            db.close()

    return sample


def _second_writer(
    path: str,
    sync: Sync,
    rows: int,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
) -> None:
    """The other process of :func:`two_processes`: 8 threads on the same journal."""
    store = JournalStore.open(path, sync=sync, owner=False)
    committer = GroupCommitter(store)
    ready.set()
    go.wait()
    _append_threads(committer, 8, rows)
    committer.close()
    store.close()


def two_processes(directory: str, sync: Sync, rows: int) -> Callable[[], float]:
    """Sampler: rows/s of two processes with 8 appending threads each on one journal."""
    mp = multiprocessing.get_context("spawn")

    def sample() -> float:
        store = _fresh(directory, sync)
        committer = GroupCommitter(store)
        ready, go = mp.Event(), mp.Event()
        child = mp.Process(target=_second_writer, args=(store.path, sync, rows // 2, ready, go))
        child.start()
        try:
            ready.wait()
            start = time.perf_counter()
            go.set()
            _append_threads(committer, 8, rows // 2)
            child.join()
            elapsed = time.perf_counter() - start
        finally:
            if child.is_alive():
                child.kill()
                child.join()
            committer.close()
            store.close()
        return rows / elapsed

    return sample


def throughput(ctx: RunContext) -> list[Measurement]:
    """Rows/s for 1 and 16 appending threads, normal and full, vs a commit per row."""
    name = "journal.group_commit"
    out: list[Measurement] = []
    directory = tempfile.mkdtemp(prefix="rigger_mp-bench-journal-")
    try:
        for sync in ("normal", "full"):
            rows = ctx.pick(8000 if sync == "normal" else 800, 320)
            groups_1: list[float] = []
            groups_16: list[float] = []
            samples = interleaved(
                {
                    "1": group_commit(directory, sync, 1, rows, groups_1),
                    "16": group_commit(directory, sync, 16, rows, groups_16),
                    "2p": two_processes(directory, sync, rows),
                    PER_ROW: commit_per_row(directory, sync, rows),
                },
                ctx.repeats,
            )
            per_row = Measurement(
                name,
                "",
                PER_ROW,
                "rows/s",
                samples[PER_ROW],
                True,
                note="1 thread, INSERT+COMMIT per row, plain sqlite3",
            )
            for threads in ("1", "16"):
                metric = f"rows/s, {threads} appending thread(s), synchronous={sync}"
                out.append(
                    Measurement(
                        name,
                        metric,
                        SUBJECT,
                        "rows/s",
                        samples[threads],
                        True,
                        note=f"GroupCommitter, each thread waits for its commit; {rows} rows",
                    )
                )
                out.append(Measurement(**{**per_row.__dict__, "metric": metric}))
            metric = f"rows/s, 16 threads in two processes, synchronous={sync}"
            out.append(
                Measurement(
                    name,
                    metric,
                    SUBJECT,
                    "rows/s",
                    samples["2p"],
                    True,
                    note="2 processes x 8 threads on one WAL file (server + main layout)",
                )
            )
            out.append(
                Measurement(
                    name,
                    metric,
                    ONE_PROCESS,
                    "rows/s",
                    samples["16"],
                    True,
                    note="the same 16 threads in one process",
                )
            )
            for threads, groups in (("1", groups_1), ("16", groups_16)):
                out.append(
                    Measurement(
                        name,
                        f"mean group size, {threads} thread(s), synchronous={sync}",
                        SUBJECT,
                        "rows",
                        groups,
                        True,
                        note="rows per commit",
                    )
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return out


SCENARIOS: list[Scenario] = [
    Scenario(
        "journal.group_commit",
        "journal rows/s: group commit with 1 and 16 threads vs a commit per row",
        throughput,
    ),
]
