"""The local worker pool: backgrounded hooks run in ``multiprocessing`` worker processes.

:class:`LocalPool` implements :class:`~rigger_mp.pool.interface.WorkerPool` (the whole
contract, and what a distributed engine must provide instead, is described there).

Data flow of :class:`LocalPool` (drawn after CPython's ``concurrent/futures/process.py``)::

    event thread          feeder thread               one Manager().Queue()     worker
    (submit)                                          per worker                processes
    +----------+          +----------------+          +------------------+      +-----------+
    | WorkItem |          | pending deque  |  batch   | (bid 7, [items]) | get  | worker 1  |
    | WorkItem | -------> | of WorkItems   | -------> | (bid 9, [items]) | ---> | own plugin|
    | ...      |  append  | cut to batches |   put    +------------------+      | instances |
    +----------+          +----------------+          +------------------+      +-----------+
                                  ^                   | (bid 8, [items]) | ---> | worker 2  |
                                  | capacity freed    +------------------+      +-----------+
                                  |                                                 |  |
    call_soon(merge) <---  collector thread  <---- result pipe per worker ----------+  |
    on the event thread    waits on the pipes  <--- process sentinel (death, exit) ----+
                           and the sentinels

- A *WorkItem* is ``(work_id, instance ident, event name, pickled keyword arguments)``;
  the arguments are pickled on the event thread, so they are a snapshot.
- The feeder cuts the pending items into *batches* sized so that one batch is about
  :data:`TARGET_BATCH_SECONDS` of work (measured from the results) and sends each to the
  least loaded worker that holds fewer than :data:`PREFETCH` unfinished batches. Batching
  is what makes the manager queue, one round trip per ``put``, fast enough for no-op hooks.
- Each worker records in a shared slot (``RawArray``) the batch it took and the index of
  the item it is running, and sends results on its own pipe in the order it ran them,
  flushed every :data:`FLUSH_SECONDS` of work and at the end of a batch.
- The collector blocks in :func:`multiprocessing.connection.wait` on every worker's pipe
  and process sentinel; nothing polls. When a worker ends, its pipe is read to the end,
  then its unfinished batches are settled from the slot: the item it was running fails
  with the cause (signal or exit code), items that ran but whose result was lost fail,
  items it never started go back to the front of the pending deque; a replacement is
  started. A worker recycled by ``max_tasks_per_worker`` or ``worker_memory_limit_mb``
  says so first and hands back what it did not run.
- Children notice the main process's death without polling: workers and the manager
  block a thread on ``multiprocessing.parent_process().sentinel`` and exit when it fires.
"""

from __future__ import annotations

import contextlib
import enum
import math
import multiprocessing
import multiprocessing.connection as mpc
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from multiprocessing.managers import SyncManager
from multiprocessing.process import BaseProcess
from typing import Any, Final

import psutil

from .. import printable
from ..deadline import Deadline
from ..errors import PluginError
from ..lifecycle import move
from .interface import Failure, InstanceSpec, ResultSink, WorkerInfo, WorkItem, describe_items
from .messages import MSG_DONE, MSG_FIRE, MSG_RETIRE, NO_BATCH, exit_with_parent

logger = printable.logger("rigger_mp")

PREFETCH = 2
"""Unfinished batches a worker may hold: one running, one waiting in its queue."""
MAX_BATCH = 1000
"""Most items in one batch."""
TARGET_BATCH_SECONDS = 0.02
"""Work per batch the feeder aims at: big batches for cheap hooks, one item for heavy ones."""
STARTUP_FAILURES = 3
"""Workers in a row that die before taking any work: the pool is then broken."""
KILL_GRACE = 2.0
"""Seconds a worker terminated by ``stop()`` gets before it is killed."""
STARTUP_SECONDS = 30.0
"""A worker that dies idle later than this after its start is not failing to start (an
idle worker killed hours later, say), so it does not count towards STARTUP_FAILURES."""


class Phase(enum.Enum):
    """Where a :class:`LocalPool` is in its life."""

    NEW = "new"
    """Made, not started."""
    RUNNING = "running"
    """Taking work; a dead worker is replaced."""
    BROKEN = "broken"
    """Workers keep dying before taking work, or none could be started: new work fails
    at once with the reason; the workers still alive finish what they hold."""
    STOPPING = "stopping"
    """``stop()`` lets the workers finish what they hold, then ends them."""
    ABANDONING = "abandoning"
    """``stop()`` ends the workers now; what they held is handed back, not failed."""
    STOPPED = "stopped"
    """Every worker, thread and the manager have ended."""

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` has begun (no work is taken, no worker is replaced)."""
        return self in (Phase.STOPPING, Phase.ABANDONING, Phase.STOPPED)


_EDGES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.NEW: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.ABANDONING}),
    Phase.RUNNING: frozenset({Phase.BROKEN, Phase.STOPPING, Phase.ABANDONING}),
    Phase.BROKEN: frozenset({Phase.STOPPING, Phase.ABANDONING}),
    Phase.STOPPING: frozenset({Phase.ABANDONING, Phase.STOPPED}),
    Phase.ABANDONING: frozenset({Phase.STOPPED}),
}


def default_start_method() -> str:
    """``forkserver`` where it exists (safe beside threads), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def exit_cause(exitcode: int | None) -> str:
    """A readable reason for a process's end, from its exit code."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {name} ({-exitcode})"
    return f"exited with code {exitcode}"


_helpers_started: set[int] = set()  # pids of the processes that started them here
_helpers_lock = threading.Lock()


def start_helpers_isolated(start_method: str) -> None:
    """Start ``multiprocessing``'s resource tracker and fork server away from the cwd.

    Both are ``python -c`` processes, so ``''`` (the working directory they inherit)
    comes first on their ``sys.path`` while they import ``pickle``, ``socket`` and the
    rest: a ``pickle.py`` in the directory the dispatcher runs in would run in them, and
    every worker forked from the fork server would inherit it. Started with the standard
    library's own directory as their working directory, ``''`` finds only what comes
    next anyway. Done once per process, before the first pool starts; the working
    directory is changed back at once (workers still start in the parent's, which
    ``multiprocessing`` passes them). Helpers already running are left alone.
    """
    if start_method == "fork":
        return
    from multiprocessing import forkserver, resource_tracker

    with _helpers_lock:
        if os.getpid() in _helpers_started:
            return
        _helpers_started.add(os.getpid())
        here = os.getcwd()
        os.chdir(os.path.dirname(os.__file__))
        try:
            resource_tracker.ensure_running()
            if start_method == "forkserver":
                forkserver.ensure_running()
        finally:
            os.chdir(here)


def _manager_initializer() -> None:
    """Runs first in the manager process: leave with the parent."""
    exit_with_parent()


def start_manager(ctx: BaseContext, start_method: str) -> SyncManager:
    """Start the manager process that serves the workers' queues; a clear error if it dies."""
    start_helpers_isolated(start_method)
    manager = SyncManager(ctx=ctx)
    try:
        manager.start(_manager_initializer)
    except EOFError as exc:  # what the stdlib says when the new process died at once
        hint = (
            " With 'spawn' and 'forkserver' each new process imports the main module "
            "again: the code that starts the Rigger must run under "
            "`if __name__ == '__main__':`."
            if start_method != "fork"
            else ""
        )
        raise PluginError(
            f"the worker pool's manager process exited while starting (start method "
            f"{start_method!r}); it printed why above.{hint}"
        ) from exc
    return manager


def _signal(worker: _Worker, signum: signal.Signals) -> None:
    """Terminate or kill a worker, unless it has ended and been closed meanwhile."""
    with contextlib.suppress(ValueError):
        if signum is signal.SIGKILL:
            worker.process.kill()
        else:
            worker.process.terminate()


@dataclass(eq=False)
class _Batch:
    items: list[WorkItem]
    reported: int = 0  # results received, in order, for items[:reported]


@dataclass(eq=False)
class _Worker:
    """The main process's handle on one worker."""

    process: BaseProcess
    queue: Any  # a Manager().Queue() proxy
    conn: mpc.Connection  # read end of the worker's result pipe
    slot: Any  # RawArray("q", 2): claimed batch id, index of the item running
    batches: dict[int, _Batch] = field(default_factory=dict)
    unfinished: int = 0  # items sent and not reported
    tasks_done: int = 0
    retire: tuple[int, int, str] | None = None
    eof: bool = False
    proc: psutil.Process | None = None
    started: float = field(default_factory=time.monotonic)

    def young(self) -> bool:
        """Whether it ended soon enough after its start to count as failing to start."""
        return time.monotonic() - self.started < STARTUP_SECONDS

    def info(self) -> WorkerInfo | None:
        """pid, resident memory, CPU use since the last call and tasks done (None if gone)."""
        pid = self.process.pid
        if pid is None:
            return None
        try:
            if self.proc is None:
                self.proc = psutil.Process(pid)
            with self.proc.oneshot():
                rss = self.proc.memory_info().rss
                cpu = self.proc.cpu_percent(None)
        except psutil.Error:
            return None
        return WorkerInfo(pid, rss, cpu, self.tasks_done)

    def held(self, cause: str) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
        """Once it ended: the items it held unreported that it never started, and those
        lost with it, each with why (read from its slot; called under the pool's lock)."""
        claimed, running = self.slot[0], self.slot[1]
        unstarted: list[WorkItem] = []
        lost: list[tuple[WorkItem, str]] = []
        for bid, batch in sorted(self.batches.items()):
            for index in range(batch.reported, len(batch.items)):
                item = batch.items[index]
                if self.retire is not None or bid != claimed or index > running:
                    unstarted.append(item)
                elif index == running:
                    lost.append((item, f"the worker {cause} while running this hook"))
                else:
                    why = f"the hook ran, but the worker {cause} before sending its result"
                    lost.append((item, why))
        return unstarted, lost


class LocalPool:
    """A pool of ``multiprocessing`` worker processes fed through manager queues."""

    def __init__(
        self,
        specs: Mapping[str, InstanceSpec],
        workers: int | None = None,
        start_method: str | None = None,
        max_tasks_per_worker: int | None = None,
        worker_memory_limit_mb: float | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.size = workers or os.cpu_count() or 1
        self.start_method = start_method or default_start_method()
        self.max_tasks = max_tasks_per_worker
        self.memory_limit = (
            int(worker_memory_limit_mb * 2**20) if worker_memory_limit_mb is not None else None
        )
        self._ctx: BaseContext = multiprocessing.get_context(self.start_method)
        self._manager: SyncManager | None = None
        self._sink: ResultSink | None = None
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[WorkItem] = deque()
        self._workers: list[_Worker] = []
        self._feeder_waiting = False
        self._phase = Phase.NEW  # under _cond
        self._why_broken: str | None = None  # what BROKEN tells new work, kept once stopping
        self._left: list[WorkItem] = []
        self._next_batch = 0
        self._item_seconds = TARGET_BATCH_SECONDS  # until measured: assume heavy
        self._startup_failures = 0
        self._started = 0
        self._wake_r, self._wake_w = mpc.Pipe(duplex=False)
        self._feeder: threading.Thread | None = None
        self._collector: threading.Thread | None = None

    # -- the interface ----------------------------------------------------------------

    def start(self, sink: ResultSink) -> None:
        """Start the manager, the workers, the feeder and the collector."""
        self._sink = sink
        manager = start_manager(self._ctx, self.start_method)
        self._manager = manager
        try:
            for _ in range(self.size):
                self._workers.append(self._spawn())
        except BaseException:
            for worker in self._workers:
                worker.process.kill()
                worker.process.join()
            manager.shutdown()
            raise
        with self._cond:
            self._move(Phase.RUNNING)
        # Daemon threads: the interpreter waits for the others before atexit handlers run,
        # and it is an atexit handler that stops a Rigger its user never stopped.
        self._feeder = threading.Thread(
            target=self._feed, name="rigger_mp-pool-feeder", daemon=True
        )
        self._collector = threading.Thread(
            target=self._collect, name="rigger_mp-pool-collector", daemon=True
        )
        self._feeder.start()
        self._collector.start()

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Queue items for the feeder; fails them at once if the pool is broken or stopped."""
        with self._cond:
            if self._phase is Phase.RUNNING:
                self._pending.extend(items)
                if self._feeder_waiting:
                    self._cond.notify()
                return
            reason = self._why_broken or "the worker pool is stopping"
        self._report([], [Failure.of(i, None, reason) for i in items])

    def running(self) -> int:
        """Items being run now, read from the workers' slots."""
        with self._cond:
            return len(self._running_items())

    def workers(self) -> list[WorkerInfo]:
        """pid, resident memory, CPU use since the last call and tasks done, per worker."""
        with self._cond:
            live = list(self._workers)
        return [info for info in map(_Worker.info, live) if info is not None]

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        """End the workers (letting them finish, or not), the threads and the manager.

        Workers that have not ended by ``timeout`` are terminated (what they held is
        handed back, and the hooks they were running are logged by name), and killed if
        they are still there :data:`KILL_GRACE` seconds later: a hook that hangs, or a
        worker kept alive by a thread of its own, never holds the stop beyond that.
        """
        deadline = Deadline(timeout)
        with self._cond:
            if self._phase.stopping:
                return []
            self._move(Phase.ABANDONING if abandon else Phase.STOPPING)
            self._left.extend(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if self._feeder is not None:
            self._feeder.join()
        with self._cond:
            live = list(self._workers)
        for worker in live:
            self._tell_stop(worker, abandon)
        self._wake()
        collector = self._collector
        if collector is not None:
            collector.join(deadline.left())
            if collector.is_alive():
                self._end_workers(deadline, terminated=abandon)
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
        self._wake_r.close()
        self._wake_w.close()
        with self._cond:
            self._move(Phase.STOPPED)
            left, self._left = self._left, []
        return left

    @staticmethod
    def _tell_stop(worker: _Worker, abandon: bool) -> None:
        """Ask a worker to end once it has run what it holds (``abandon``: end it now)."""
        if not abandon:
            try:
                worker.queue.put(None)
                return
            except Exception:  # the manager is gone: end the worker instead
                pass
        _signal(worker, signal.SIGTERM)

    def _end_workers(self, deadline: Deadline, terminated: bool) -> None:
        """The workers did not end by the deadline: terminate them (unless ``terminated``
        already), then kill them."""
        collector = self._collector
        assert collector is not None
        with self._cond:
            if self._phase is Phase.STOPPING:
                self._move(Phase.ABANDONING)
            live = list(self._workers)
            running = self._running_items()
        if not terminated:
            logger.error(
                "rigger_mp: stop(): %d worker(s) still busy after %.3g s; ending them "
                "(hooks running: %s)",
                len(live),
                deadline.timeout or 0.0,
                describe_items(running) or "none, a worker kept alive by a thread of its own",
            )
            for worker in live:
                _signal(worker, signal.SIGTERM)
        collector.join(KILL_GRACE)
        if collector.is_alive():
            with self._cond:
                live = list(self._workers)
            for worker in live:
                _signal(worker, signal.SIGKILL)
            collector.join()

    def _running_items(self) -> list[WorkItem]:
        """The items the workers are running now, read from their slots (under ``_cond``)."""
        items = []
        for worker in self._workers:
            batch = worker.batches.get(worker.slot[0])
            if batch is not None and batch.reported <= worker.slot[1] < len(batch.items):
                items.append(batch.items[worker.slot[1]])
        return items

    def _move(self, to: Phase) -> None:
        """Change phase along :data:`_EDGES` (called under ``_cond``)."""
        self._phase = move(_EDGES, self._phase, to)

    # -- workers ----------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        """Start one worker process with its own queue, result pipe and slot."""
        from .worker import worker_main

        assert self._manager is not None
        queue = self._manager.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        slot = self._ctx.RawArray("q", 2)
        slot[0] = slot[1] = NO_BATCH
        self._started += 1
        process: BaseProcess = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            name=f"rigger_mp-worker-{self._started}",
            args=(queue, writer, slot, self.specs, self.max_tasks, self.memory_limit),
            daemon=True,
        )
        try:
            process.start()
        finally:
            writer.close()  # the worker holds the only write end: its death is EOF here
        return _Worker(process, queue, reader, slot)

    def _pick(self) -> _Worker | None:
        """The least loaded worker that can take another batch, if any."""
        best: _Worker | None = None
        for worker in self._workers:
            if (
                worker.retire is None
                and not worker.eof
                and len(worker.batches) < PREFETCH
                and (best is None or worker.unfinished < best.unfinished)
            ):
                best = worker
        return best

    # -- feeder thread ------------------------------------------------------------------

    def _feed(self) -> None:
        """Cut pending items into batches and put each on a worker's queue."""
        cond = self._cond
        pending = self._pending
        while True:
            with cond:
                while True:
                    if self._phase.stopping:
                        return
                    worker = self._pick() if pending else None
                    if worker is not None:
                        break
                    self._feeder_waiting = True
                    cond.wait()
                    self._feeder_waiting = False
                live = sum(1 for w in self._workers if w.retire is None and not w.eof) or 1
                size = min(
                    MAX_BATCH,
                    math.ceil(len(pending) / live),
                    max(1, int(TARGET_BATCH_SECONDS / self._item_seconds)),
                )
                items = [pending.popleft() for _ in range(size)]
                bid = self._next_batch
                self._next_batch += 1
                worker.batches[bid] = _Batch(items)
                worker.unfinished += size
            try:
                worker.queue.put((bid, items))
            except Exception as exc:
                # The manager is gone; the collector hears of it through the workers,
                # whose gets fail, and settles this batch with theirs.
                logger.error(
                    "rigger_mp: could not queue work for worker %s: %s", worker.process.pid, exc
                )

    # -- collector thread -------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"")

    def _collect(self) -> None:
        """Read results and notice ended workers, blocking on pipes and sentinels."""
        while True:
            with self._cond:
                if self._phase.stopping and not self._workers:
                    return
                by_handle: dict[Any, tuple[_Worker, bool]] = {}
                for worker in self._workers:
                    by_handle[worker.process.sentinel] = (worker, True)
                    if not worker.eof:
                        by_handle[worker.conn] = (worker, False)
            ready = mpc.wait([self._wake_r, *by_handle])
            for handle in ready:
                if handle is self._wake_r:
                    with contextlib.suppress(EOFError, OSError):
                        self._wake_r.recv_bytes()
                    continue
                worker, is_sentinel = by_handle[handle]
                if is_sentinel:
                    self._ended(worker)
                else:
                    self._read(worker, drain=False)

    def _read(self, worker: _Worker, drain: bool) -> None:
        """Handle the messages waiting on a worker's pipe (all of them up to EOF if ``drain``)."""
        conn = worker.conn
        try:
            while True:
                msg = conn.recv()
                self._handle(worker, msg)
                if not drain and not conn.poll():
                    return
        except (EOFError, OSError):
            worker.eof = True
        except Exception:  # a message the worker died half-way through writing
            logger.exception("rigger_mp: unreadable result from worker %s", worker.process.pid)
            worker.eof = True

    def _handle(self, worker: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == MSG_DONE:
            _, bid, count, seconds, sparse = msg
            self._done(worker, bid, count, seconds, sparse)
        elif kind == MSG_FIRE:
            assert self._sink is not None
            try:
                self._sink.fire(msg[1], msg[2])
            except Exception:
                logger.exception("rigger_mp: event %r fired in a worker was lost", msg[1])
        elif kind == MSG_RETIRE:
            worker.retire = (msg[1], msg[2], msg[3])
            logger.info("rigger_mp: recycling worker %s: %s", worker.process.pid, msg[3])

    def _done(
        self,
        worker: _Worker,
        bid: int,
        count: int,
        seconds: float,
        sparse: list[tuple[int, Mapping[str, Any] | None, str | None]],
    ) -> None:
        pid = worker.process.pid
        updates: list[Mapping[str, Any]] = []
        failures: list[Failure] = []
        with self._cond:
            batch = worker.batches[bid]
            for index, glob, error in sparse:
                if error is not None:
                    item = batch.items[index]
                    failures.append(Failure.of(item, pid, error))
                elif glob is not None:
                    updates.append(glob)
            ids = [item[0] for item in batch.items[batch.reported : batch.reported + count]]
            batch.reported += count
            worker.unfinished -= count
            worker.tasks_done += count
            freed = batch.reported >= len(batch.items)
            if freed:
                del worker.batches[bid]
            # the feeder sizes batches from this: an average over recent work
            self._item_seconds = 0.7 * self._item_seconds + 0.3 * max(seconds / count, 1e-7)
            self._startup_failures = 0
            if freed and self._feeder_waiting:
                self._cond.notify()
        self._report(updates, failures, count, ids)

    def _report(
        self,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        count: int | None = None,
        ids: Sequence[int] = (),
    ) -> None:
        assert self._sink is not None
        try:
            n = len(failures) if count is None else count
            self._sink.completed(n, updates, failures, ids)
        except Exception:
            logger.exception("rigger_mp: reporting background results failed")

    def _ended(self, worker: _Worker) -> None:
        """A worker process ended: settle what it held, then replace it (or the pool broke)."""
        if not worker.eof:
            self._read(worker, drain=True)
        worker.process.join()
        exitcode = worker.process.exitcode
        cause = exit_cause(exitcode)
        with self._cond:
            self._workers.remove(worker)
            unstarted, lost = worker.held(cause)
            failures = self._settle(worker, unstarted, lost)
            unexpected = worker.retire is None and not (self._phase.stopping and exitcode == 0)
            if unexpected and worker.slot[0] == NO_BATCH and worker.young():
                self._startup_failures += 1
            replace = self._phase is Phase.RUNNING
            if replace and self._startup_failures >= STARTUP_FAILURES:
                replace = False
                failures += self._break(
                    f"the worker pool is broken: {self._startup_failures} workers in a row "
                    f"ended before taking any work (last one {cause})"
                )
                logger.error("rigger_mp: %s", self._why_broken)
        if unexpected and not self._phase.stopping:
            logger.error(
                "rigger_mp: worker %s %s; %d hook(s) failed, %d handed to other workers",
                worker.process.pid,
                cause,
                len(failures),
                len(unstarted),
            )
        worker.conn.close()
        worker.process.close()
        if replace:
            failures += self._replace()
        if failures:
            self._report([], failures)

    def _settle(
        self, worker: _Worker, unstarted: list[WorkItem], lost: list[tuple[WorkItem, str]]
    ) -> list[Failure]:
        """Send an ended worker's items on; return the failures (called under ``_cond``).

        Running: the unstarted go back to the front of the pending items, the lost fail.
        Stopping: ``stop()`` hands the unstarted back. Abandoning: the worker was ended on
        purpose, so ``stop()`` hands back the lost too (abandoned, not failed).
        """
        if self._phase is Phase.ABANDONING:
            self._left.extend(item for item, _ in lost)
            self._left.extend(unstarted)
            return []
        if self._phase.stopping:
            self._left.extend(unstarted)
        else:
            self._pending.extendleft(reversed(unstarted))
        pid = worker.process.pid
        return [Failure.of(item, pid, why) for item, why in lost]

    def _break(self, reason: str) -> list[Failure]:
        """RUNNING → BROKEN: new work fails with ``reason``, and so does the pending work,
        returned (called under ``_cond``; a pool already stopping keeps its phase)."""
        self._why_broken = reason
        if self._phase is Phase.RUNNING:
            self._move(Phase.BROKEN)
        failures = [Failure.of(item, None, reason) for item in self._pending]
        self._pending.clear()
        return failures

    def _replace(self) -> list[Failure]:
        """Start a worker in place of one that ended; if none starts, the pool is broken
        and the pending work's failures are returned."""
        try:
            fresh = self._spawn()
        except Exception as exc:
            logger.exception("rigger_mp: could not start a replacement worker")
            with self._cond:
                return self._break(f"the worker pool is broken: no replacement worker: {exc}")
        with self._cond:
            self._workers.append(fresh)
            if self._feeder_waiting:
                self._cond.notify()
            # stop() began while it started, and may have told the others already
            phase = self._phase
        if phase.stopping:
            self._tell_stop(fresh, phase is not Phase.STOPPING)
        return []
