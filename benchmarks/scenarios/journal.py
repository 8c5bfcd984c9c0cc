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

``journal.dispatch`` measures the dispatcher itself (issue #13), side by side: a Rigger
with its TCP server and one trivial hook, without a journal, with ``normal`` and with
``full``, through the scenarios of :mod:`benchmarks.scenarios.tcp` (fire_many from 1
and 16 clients, fire-and-wait-for-each-ack from 1 and, as pytest-xdist workers do,
from 16 clients, whose fires share commits), in-process ``fire_many`` batches, a
``fire_hook`` loop in one thread (a commit per call: the per-commit cost) and from 8
threads (whose commits group), with the mean group size each journal reached in each.
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
from typing import Any

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    interleaved,
    settle,
)
from benchmarks.scenarios import inprocess, tcp
from rigger_mp import Rigger
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


NO_JOURNAL = "no journal"
NORMAL = "journal normal"
FULL = "journal full"


def _dispatcher(directory: str, sync: Sync | None) -> Rigger:
    config: dict[str, object] = {
        "server_enabled": True,
        "server_port": 0,
        "plugins": {"p": {"plugin": "trivial"}},
    }
    if sync is not None:
        config.update(journal=os.path.join(directory, f"{sync}.db"), journal_sync=sync)
    rigger = Rigger(config)
    rigger.register_plugin(tcp.TrivialPlugin, "trivial")
    return rigger.start()


def _tcp(rigger: Rigger, clients: int, events: int, mode: str) -> Callable[[], float]:
    """events/s of ``clients`` client processes, until the last event has run."""
    processes = min(clients, 4)
    port = rigger.server_port
    assert port is not None

    def sample() -> float:
        got = tcp.run_clients(port, processes, clients // processes, events, mode)
        start = time.perf_counter()
        rigger.fire_hook("ev", x=-1).result(tcp.TIMEOUT)
        return clients * events / (float(got["seconds"]) + time.perf_counter() - start)

    return sample


def _groups(rigger: Rigger) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(rows appended, groups)`` so far of the main process's committer (in-process
    fires) and of the server process's (TCP fires); zeros without a journal."""
    main = rigger.stats().get("journal")
    if main is None:
        return (0.0, 0.0), (0.0, 0.0)
    server = tcp_server_journal(rigger)
    return (
        (float(main["appended"]), float(main["groups"])),
        (float(server["appended"]), float(server["groups"])),
    )


def _rate(sampler: Callable[[], tuple[float, float]]) -> Callable[[], float]:
    """The events/s of an in-process ``pipelined`` sampler (its share column dropped)."""
    return lambda: sampler()[0]


class _GroupMeter:
    """The mean group size each journal reached over one scenario (both committers)."""

    def __init__(self, riggers: dict[str, Rigger]) -> None:
        self.riggers = riggers
        self.before = {name: _groups(r) for name, r in riggers.items()}

    def mean_sizes(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, rigger in self.riggers.items():
            after = _groups(rigger)
            rows = sum(a[0] - b[0] for a, b in zip(after, self.before[name], strict=True))
            groups = sum(a[1] - b[1] for a, b in zip(after, self.before[name], strict=True))
            out[name] = rows / groups if groups else 0.0
        return out


def _pipelined_many(rigger: Rigger, events: int, batch: int) -> Callable[[], float]:
    """Sampler: events/s of ``fire_many`` batches of ``batch`` events, until the last ran."""
    calls = [
        [("ev", {"x": i}) for i in range(k, min(k + batch, events))]
        for k in range(0, events, batch)
    ]

    def sample() -> float:
        settle()
        start = time.perf_counter()
        tasks = []
        for call in calls:
            tasks = rigger.fire_many(call)
        tasks[-1].result(tcp.TIMEOUT)
        return events / (time.perf_counter() - start)

    sample()  # warm up
    return sample


def _threads_fire_hook(rigger: Rigger, threads: int, events: int) -> Callable[[], float]:
    """Sampler: events/s of ``threads`` threads each calling ``fire_hook`` in a loop."""

    def work(k: int, last: list[Any]) -> None:
        for i in range(events // threads):
            last[k] = rigger.fire_hook("ev", x=i)

    def sample() -> float:
        settle()
        last: list[Any] = [None] * threads
        workers = [threading.Thread(target=work, args=(k, last)) for k in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for task in last:
            task.result(tcp.TIMEOUT)
        return events / (time.perf_counter() - start)

    return sample


Case = tuple[str, Callable[[Rigger], Callable[[], float]], float | None, str]
"""``(metric, sampler for a dispatcher, ratio target or None, note)`` of one scenario."""


def _tcp_row(
    metric: str, clients: int, events: int, mode: str, target: float | None, why: str = ""
) -> Case:
    """A TCP scenario: the :func:`_tcp` sampler for whichever dispatcher it is given."""
    return (
        metric,
        lambda rigger: _tcp(rigger, clients, events, mode),
        target,
        f"{clients} x {events} events{why}",
    )


BATCH = 500
"""Events per ``fire_many`` call in the in-process batch scenario."""


def dispatch(ctx: RunContext) -> list[Measurement]:
    """The dispatcher with and without a journal, side by side (issue #13)."""
    name = "journal.dispatch"
    directory = tempfile.mkdtemp(prefix="rigger_mp-bench-journal-")
    riggers = {
        NO_JOURNAL: _dispatcher(directory, None),
        NORMAL: _dispatcher(directory, "normal"),
        FULL: _dispatcher(directory, "full"),
    }
    cases: list[Case] = [
        _tcp_row("TCP fire_many, 1 client", 1, ctx.pick(40_000, 4_000), "pipelined", 0.7),
        _tcp_row("TCP fire_many, 16 clients", 16, ctx.pick(2_500, 250), "pipelined", 0.7),
        _tcp_row(
            "TCP fire and wait for each ack, 1 client", 1, ctx.pick(3_000, 300), "request", 0.5
        ),
        _tcp_row(
            "TCP fire and wait for each ack, 16 clients",
            16,
            ctx.pick(500, 50),
            "request",
            None,
            ": pytest-xdist workers, each waiting",
        ),
    ]
    events = ctx.pick(30_000, 3_000)
    cases.append(
        (
            f"in-process fire_many, pipelined, batches of {BATCH}",
            lambda r: _pipelined_many(r, events, BATCH),
            0.5,
            f"{events} events, one commit per call",
        )
    )
    few = ctx.pick(3_000, 300)
    cases.append(
        (
            "in-process fire_hook in a loop, pipelined (a commit per call)",
            lambda r: _rate(inprocess.pipelined(r, few)),
            None,
            f"{few} events; one thread, each call waits for its own commit",
        )
    )
    cases.append(
        (
            "in-process fire_hook from 8 threads",
            lambda r: _threads_fire_hook(r, 8, few),
            None,
            f"{few} events; the threads' commits are grouped",
        )
    )
    out: list[Measurement] = []
    try:
        for metric, make, target, note in cases:
            meter = _GroupMeter(riggers)
            got = interleaved({s: make(r) for s, r in riggers.items()}, ctx.repeats)
            sizes = meter.mean_sizes()
            out.extend(_figures(name, metric, got, target, note))
            for subject in (NORMAL, FULL):
                out.append(
                    Measurement(
                        name,
                        f"mean group size (events per commit): {metric}",
                        subject,
                        "events",
                        [sizes[subject]],
                        True,
                        note="over the scenario, both committers",
                    )
                )
    finally:
        for rigger in riggers.values():
            rigger.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return out


def tcp_server_journal(rigger: Rigger) -> dict[str, Any]:
    """The server process's journal stats, read with a TCP ``stats``."""
    from rigger_mp.client import RiggerClient

    assert rigger.server_port is not None
    client = RiggerClient("127.0.0.1", rigger.server_port)
    try:
        journal = client.stats()["server"]["process"]["journal"]
    finally:
        client.close()
    assert isinstance(journal, dict)
    return journal


def _figures(
    name: str, metric: str, got: dict[str, list[float]], ratio: float | None, note: str
) -> list[Measurement]:
    targets = () if ratio is None else (Target(">=", ratio, peer=NO_JOURNAL),)
    return [
        Measurement(name, metric, NO_JOURNAL, "events/s", got[NO_JOURNAL], True, note=note),
        Measurement(
            name,
            metric,
            NORMAL,
            "events/s",
            got[NORMAL],
            True,
            note="journal_sync: normal",
            targets=targets,
        ),
        Measurement(name, metric, FULL, "events/s", got[FULL], True, note="journal_sync: full"),
    ]


SCENARIOS: list[Scenario] = [
    Scenario(
        "journal.group_commit",
        "journal rows/s: group commit with 1 and 16 threads vs a commit per row",
        throughput,
    ),
    Scenario(
        "journal.dispatch",
        "the dispatcher without a journal, with normal and with full: TCP and in-process",
        dispatch,
    ),
]
