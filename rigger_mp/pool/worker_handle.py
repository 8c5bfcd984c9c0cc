"""The main process's handle on one local worker process: what it holds, what it costs.

:class:`~rigger_mp.pool.local.LocalPool` keeps one :class:`WorkerHandle` per worker: the
process, its manager queue, the read end of its result pipe, its slot, and the batches
sent to it. When the worker ends, :meth:`WorkerHandle.held` reads its slot to tell the
items it never started from the ones lost with it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import psutil

from .. import printable
from .batches import SentBatch
from .interface import WorkerInfo, WorkItem
from .worker_messages import Stop, WorkerMessage

logger = printable.logger("rigger_mp")

STARTUP_SECONDS = 30.0
"""A worker that dies idle later than this after its start is not failing to start (an
idle worker killed hours later, say), so it does not count as a failed start."""
CPU_SAMPLE_SECONDS = 0.1
"""Two looks at a worker's CPU closer than this reuse the last figure: over a shorter
time the figure says more about the clock than about the worker."""


def end_process(process: BaseProcess, signum: signal.Signals) -> None:
    """Terminate (SIGTERM) or kill (SIGKILL) ``process``, unless it has been closed."""
    with contextlib.suppress(ValueError):
        if signum is signal.SIGKILL:
            process.kill()
        else:
            process.terminate()


@dataclass(eq=False)
class CpuMeter:
    """A process's CPU use between two looks: CPU seconds over wall seconds.

    The first sample is taken when the meter is made (as its process starts), so the
    first look already covers a real stretch of time.
    """

    proc: psutil.Process
    cpu_seconds: float = 0.0
    percent: float = 0.0
    wall: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, pid: int) -> CpuMeter | None:
        """A meter of process ``pid`` from now; None if it is gone."""
        try:
            proc = psutil.Process(pid)
            meter = cls(proc)
            meter.cpu_seconds = _used(proc)
        except psutil.Error:
            return None
        return meter

    def look(self) -> tuple[float, float]:
        """``(percent since the previous look, CPU seconds so far)``; psutil.Error if gone."""
        now = time.monotonic()
        if now - self.wall >= CPU_SAMPLE_SECONDS:
            used = _used(self.proc)
            self.percent = 100.0 * max(0.0, used - self.cpu_seconds) / (now - self.wall)
            self.cpu_seconds, self.wall = used, now
        return self.percent, self.cpu_seconds


def _used(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


@dataclass(eq=False)
class WorkerHandle:
    """The main process's handle on one worker."""

    process: BaseProcess
    queue: Any  # a Manager().Queue() proxy
    conn: Connection  # read end of the worker's result pipe
    slot: Any  # RawArray("q", 2): claimed batch id, index of the item running
    batches: dict[int, SentBatch] = field(default_factory=dict)
    unfinished: int = 0  # items sent and not reported
    fed: bool = False
    """Whether a batch was ever sent to it (one never fed holds nothing to finish)."""
    tasks_done: int = 0
    retire: str | None = None
    """Why the worker said it exits (it hands back what it did not run)."""
    ended_by: str | None = None
    """Why the pool ended the worker itself, when it did."""
    eof: bool = False
    meter: CpuMeter | None = None
    started: float = field(default_factory=time.monotonic)
    place: int = 0
    """Its slot in the pool: a worker started in place of one that ended takes its slot."""
    reported_cpu: float = 0.0
    """The CPU time it gave with its last results (it may die where psutil cannot see it)."""
    pid: int | None = field(init=False)
    """Kept apart from the process object, which is closed once the worker has ended."""

    def __post_init__(self) -> None:
        self.pid = self.process.pid
        if self.pid is not None:
            self.meter = CpuMeter.of(self.pid)

    def takes_work(self) -> bool:
        """Whether a batch may be sent to it."""
        return self.retire is None and self.ended_by is None and not self.eof

    def young(self) -> bool:
        """Whether it ended soon enough after its start to count as failing to start."""
        return time.monotonic() - self.started < STARTUP_SECONDS

    def info(self) -> WorkerInfo | None:
        """pid, resident memory, CPU use and tasks done (None if gone)."""
        pid, meter = self.pid, self.meter
        if pid is None or meter is None:
            return None
        try:
            rss = meter.proc.memory_info().rss
            percent, cpu_seconds = meter.look()
        except psutil.Error:
            return None
        return WorkerInfo(pid, rss, percent, self.tasks_done, max(cpu_seconds, self.reported_cpu))

    def last_cpu_seconds(self) -> float:
        """Once it has ended: the CPU time it used in all, as the kernel has it until the
        worker is reaped (a forkserver reaps its children at once); else what it said with
        its last results or what the last look saw, never less than :meth:`info` said."""
        meter = self.meter
        known = self.reported_cpu if meter is None else max(meter.cpu_seconds, self.reported_cpu)
        if meter is None:
            return known
        try:
            return max(known, _used(meter.proc))
        except psutil.Error:
            return known

    def tell_stop(self, abandon: bool) -> None:
        """Ask it to end once it has run what it holds (``abandon``: end it now)."""
        if abandon:
            end_process(self.process, signal.SIGTERM)
            return
        with contextlib.suppress(Exception):
            # When the manager is gone the put fails, and so does the worker's next get:
            # it then exits by itself, handing back what it had not started.
            self.queue.put(Stop())

    def messages(self, drain: bool) -> Iterator[WorkerMessage]:
        """The messages waiting on its pipe; all of them up to end of file if ``drain``.

        Sets :attr:`eof` when the pipe has ended (or holds a message cut short by the
        worker's death, which is logged).
        """
        conn = self.conn
        try:
            while True:
                yield conn.recv()
                if not drain and not conn.poll():
                    return
        except (EOFError, OSError):
            self.eof = True
        except Exception:  # a message the worker died half-way through writing
            logger.exception("unreadable result from worker %s", self.pid)
            self.eof = True

    def running_item(self) -> WorkItem | None:
        """The item it is running now, read from its slot (under the pool's lock)."""
        batch = self.batches.get(self.slot[0])
        index: int = self.slot[1]
        if batch is not None and batch.reported <= index < len(batch.items):
            return batch.items[index]
        return None

    def held(self, why: Callable[[bool], str]) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        """Once it ended: the items it held unreported that it never started, and those
        lost with it, each with ``why(running)`` (read from its slot; under the pool's lock).
        """
        claimed, running = self.slot[0], self.slot[1]
        unstarted: list[WorkItem] = []
        lost: list[tuple[WorkItem, str]] = []
        for bid, batch in sorted(self.batches.items()):
            for index in range(batch.reported, len(batch.items)):
                item = batch.items[index]
                if self.retire is not None or bid != claimed or index > running:
                    unstarted.append(item)
                else:
                    lost.append((item, why(index == running)))
        return unstarted, lost
