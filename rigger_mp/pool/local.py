"""The local worker pool: backgrounded hooks run in ``multiprocessing`` worker processes.

:class:`LocalPool` implements :class:`~rigger_mp.pool.interface.WorkerPool` (the whole
contract, and what a distributed engine must provide instead, is described there).

Data flow of :class:`LocalPool` (drawn after CPython's ``concurrent/futures/process.py``)::

    event thread          feeder thread               one Manager().Queue()     worker
    (submit)                                          per worker                processes
    +----------+          +----------------+          +------------------+      +-----------+
    | WorkItem |          | pending deque  |  Batch   | Batch(7, items)  | get  | worker 1  |
    | WorkItem | -------> | of WorkItems   | -------> | Batch(9, items)  | ---> | own plugin|
    | ...      |  append  | cut to batches |   put    +------------------+      | instances |
    +----------+          +----------------+          +------------------+      +-----------+
                                  ^                   | Batch(8, items)  | ---> | worker 2  |
                                  | capacity freed    +------------------+      +-----------+
                                  |                                                 |  |
    call_soon(merge) <---  collector thread  <---- result pipe per worker ----------+  |
    on the event thread    waits on the pipes  <--- process sentinel (death, exit) ----+
                           and the sentinels   <--- the manager process's sentinel

- A :class:`~rigger_mp.pool.interface.WorkItem` carries its hook's arguments pickled on
  the event thread, so they are a snapshot.
- The feeder cuts the pending items into batches (:class:`~rigger_mp.pool.batches.Cutter`:
  about :data:`TARGET_BATCH_SECONDS` of measured work each) and sends each to the least
  loaded worker that holds fewer than :data:`~rigger_mp.pool.batches.PREFETCH`
  unfinished batches. Batching is what makes the manager queue, one round trip per
  ``put``, fast enough for no-op hooks.
- Each worker records in a shared slot (``RawArray``) the batch it took and the index of
  the item it is running, and sends results on its own pipe in the order it ran them
  (:mod:`rigger_mp.pool.worker_messages`), flushed every few milliseconds of work and at
  the end of a batch.
- The collector blocks in :func:`multiprocessing.connection.wait` on every worker's pipe
  and process sentinel and on the manager's sentinel; nothing polls. When a worker ends,
  its pipe is read to the end, then its unfinished batches are settled from the slot:
  the item it was running fails with the cause (signal or exit code), items that ran but
  whose result was lost fail, items it never started go back to the front of the pending
  deque; a replacement is started. A worker recycled by ``max_tasks_per_worker`` or
  ``worker_memory_limit_mb`` says so first and hands back what it did not run.
- When the manager process dies, every queue dies with it, and no worker can be fed or
  replaced: the pool is rebuilt. Its workers are ended (what one was running fails as a
  killed worker's does, what they had not started goes back to the pending items), a new
  manager and workers are started, and the pending items run on them.
- Children notice the main process's death without polling: workers and the manager
  block a thread on ``multiprocessing.parent_process().sentinel`` and exit when it fires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import multiprocessing.connection as mpc
import os
import signal
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .. import printable
from ..deadline import Deadline
from ..lifecycle import move
from .batches import PREFETCH, Cutter, Outcome, SentBatch, report
from .interface import Failure, InstanceSpec, ResultSink, WorkerInfo, WorkItem, describe_items
from .processes import Spawner, default_start_method, exit_cause
from .worker_handle import WorkerHandle, end_process
from .worker_messages import NO_BATCH, Batch, Done, Fire, Retire, WorkerMessage

logger = printable.logger("rigger_mp")

TARGET_BATCH_SECONDS = 0.02
"""Work per batch the feeder aims at: big batches for cheap hooks, one item for heavy ones."""
STARTUP_FAILURES = 3
"""Workers in a row that die before taking any work: the pool is then broken."""
KILL_GRACE = 2.0
"""Seconds a worker terminated by ``stop()`` gets before it is killed."""


class Phase(enum.Enum):
    """Where a :class:`LocalPool` is in its life."""

    NEW = "new"
    """Made, not started."""
    RUNNING = "running"
    """Taking work; a dead worker is replaced."""
    REBUILDING = "rebuilding"
    """The manager process died: its workers are being ended and a new manager and new
    workers started; new work waits in the pending items."""
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

    @property
    def accepts(self) -> bool:
        """Whether new work is queued (else it fails at once)."""
        return self in (Phase.RUNNING, Phase.REBUILDING)


_EDGES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.NEW: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.ABANDONING}),
    Phase.RUNNING: frozenset({Phase.REBUILDING, Phase.BROKEN, Phase.STOPPING, Phase.ABANDONING}),
    Phase.REBUILDING: frozenset({Phase.RUNNING, Phase.BROKEN, Phase.STOPPING, Phase.ABANDONING}),
    Phase.BROKEN: frozenset({Phase.STOPPING, Phase.ABANDONING}),
    Phase.STOPPING: frozenset({Phase.ABANDONING, Phase.STOPPED}),
    Phase.ABANDONING: frozenset({Phase.STOPPED}),
}


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
        self._spawner = Spawner(self.specs, self.start_method, self.max_tasks, self.memory_limit)
        self._manager_seen_dead = False  # its sentinel fired: no longer waited on
        self._sink: ResultSink | None = None
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[WorkItem] = deque()
        self._workers: list[WorkerHandle] = []
        # Per place in the pool: CPU seconds and tasks of the workers that held it and ended.
        self._ended_totals: list[tuple[float, int]] = [(0.0, 0)] * self.size
        self._feeder_waiting = False
        self._phase = Phase.NEW  # under _cond
        self._why_broken: str | None = None  # what BROKEN tells new work, kept once stopping
        self._left: list[WorkItem] = []
        self._cutter = Cutter(TARGET_BATCH_SECONDS)
        self._startup_failures = 0
        self._started = 0
        self._wake_r, self._wake_w = mpc.Pipe(duplex=False)
        self._feeder: threading.Thread | None = None
        self._collector: threading.Thread | None = None

    # -- the interface ----------------------------------------------------------------

    def start(self, sink: ResultSink) -> None:
        """Start the manager, the workers, the feeder and the collector."""
        self._sink = sink
        self._spawner.new_manager()
        try:
            for place in range(self.size):
                self._workers.append(self._spawner.spawn(place))
        except BaseException:
            for worker in self._workers:
                worker.process.kill()
                worker.process.join()
            self._spawner.shutdown()
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
            if self._phase.accepts:
                self._pending.extend(items)
                if self._feeder_waiting:
                    self._cond.notify()
                return
            reason = self._why_broken or "the worker pool is stopping"
        report(self._sink, Outcome.failed([Failure.of(i, None, reason) for i in items]))

    def running(self) -> int:
        """Items being run now, read from the workers' slots."""
        with self._cond:
            return len(self._running_items())

    def workers(self) -> list[WorkerInfo]:
        """pid, resident memory, CPU use since the last look and tasks done, per worker,
        with the totals of its place in the pool (the workers it replaced included)."""
        with self._cond:
            live = list(self._workers)
            ended = list(self._ended_totals)
        out = []
        for worker in live:
            info = worker.info()
            if info is not None:
                cpu, tasks = ended[worker.place]
                out.append(
                    dataclasses.replace(
                        info,
                        slot=worker.place,
                        slot_cpu_seconds=cpu + info.cpu_seconds,
                        slot_tasks_done=tasks + info.tasks_done,
                    )
                )
        return out

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
            live = [(worker, self._ends_now(worker, abandon)) for worker in self._workers]
        for worker, now in live:
            worker.tell_stop(now)
        self._wake()
        collector = self._collector
        if collector is not None:
            collector.join(deadline.left())
            if collector.is_alive():
                self._end_workers(deadline, terminated=abandon)
        self._spawner.shutdown()
        self._wake_r.close()
        self._wake_w.close()
        with self._cond:
            self._move(Phase.STOPPED)
            left, self._left = self._left, []
        return left

    @staticmethod
    def _ends_now(worker: WorkerHandle, abandon: bool) -> bool:
        """Whether ``stop()`` ends ``worker`` at once rather than letting it finish what it
        holds (under ``_cond``, the feeder done).

        One that was never sent work is ended at once, booted or not: it holds nothing,
        and a stop that waited for its boot to finish (seconds on a loaded machine) would
        wait for nothing.
        """
        if not worker.fed:
            worker.ended_by = "stop() began before it was given any work"
            return True
        return abandon

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
                "stop(): %d worker(s) still busy after %.3g s; ending them "
                "(hooks running: %s)",
                len(live),
                deadline.timeout or 0.0,
                describe_items(running) or "none, a worker kept alive by a thread of its own",
            )
            for worker in live:
                end_process(worker.process, signal.SIGTERM)
        collector.join(KILL_GRACE)
        if collector.is_alive():
            with self._cond:
                live = list(self._workers)
            for worker in live:
                end_process(worker.process, signal.SIGKILL)
            collector.join()

    def _running_items(self) -> list[WorkItem]:
        """The items the workers are running now (under ``_cond``)."""
        return [item for w in self._workers if (item := w.running_item()) is not None]

    def _move(self, to: Phase) -> None:
        """Change phase along :data:`_EDGES` (called under ``_cond``)."""
        self._phase = move(_EDGES, self._phase, to)

    # -- workers ----------------------------------------------------------------------

    def _pick(self) -> WorkerHandle | None:
        """The least loaded worker that can take another batch, if any (under ``_cond``)."""
        if self._phase is not Phase.RUNNING:
            return None
        best: WorkerHandle | None = None
        for worker in self._workers:
            if (
                worker.takes_work()
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
                live = sum(1 for w in self._workers if w.takes_work())
                bid, items = self._cutter.cut(pending, live)
                worker.batches[bid] = SentBatch(items)
                worker.fed = True
                worker.unfinished += len(items)
            try:
                worker.queue.put(Batch(bid, items))
            except Exception as exc:
                # The manager is gone; the collector hears of it through its sentinel
                # and settles this batch with the worker's.
                logger.error("could not queue work for worker %s: %s", worker.pid, exc)

    # -- collector thread -------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"")

    def _collect(self) -> None:
        """Read results and notice ended workers and manager, blocking on pipes and sentinels."""
        while True:
            with self._cond:
                if self._phase.stopping and not self._workers:
                    return
                by_handle: dict[Any, tuple[WorkerHandle, bool]] = {}
                for worker in self._workers:
                    by_handle[worker.process.sentinel] = (worker, True)
                    if not worker.eof:
                        by_handle[worker.conn] = (worker, False)
                manager = self._spawner.manager
            watched = [] if manager is None or self._manager_seen_dead else [manager.gone]
            ready = mpc.wait([self._wake_r, *watched, *by_handle])
            if watched and watched[0] in ready:
                self._manager_seen_dead = True
                self._rebuild()
                continue  # the workers of the ready handles were settled by the rebuild
            for handle in ready:
                if handle is self._wake_r:
                    with contextlib.suppress(EOFError, OSError):
                        self._wake_r.recv_bytes()
                    continue
                worker, is_sentinel = by_handle[handle]
                if worker not in self._workers:
                    continue  # ended already, in a rebuild started by an earlier handle
                if is_sentinel:
                    self._ended(worker)
                else:
                    for msg in worker.messages(drain=False):
                        self._handle(worker, msg)

    def _handle(self, worker: WorkerHandle, msg: WorkerMessage) -> None:
        if isinstance(msg, Done):
            self._done(worker, msg)
        elif isinstance(msg, Fire):
            assert self._sink is not None
            try:
                self._sink.fire(msg.hook_name, msg.kwargs)
            except Exception:
                logger.exception("event %r fired in a worker was lost", msg.hook_name)
        elif isinstance(msg, Retire):
            worker.retire = msg.reason
            logger.info("recycling worker %s: %s", worker.pid, msg.reason)

    def _done(self, worker: WorkerHandle, done: Done) -> None:
        with self._cond:
            batch = worker.batches[done.bid]
            outcome = batch.take(done, worker.pid)
            worker.unfinished -= done.finished
            worker.tasks_done += done.finished
            worker.reported_cpu = done.cpu_seconds
            if batch.finished:
                del worker.batches[done.bid]
            self._cutter.measured(done)
            self._startup_failures = 0
            if batch.finished and self._feeder_waiting:
                self._cond.notify()
        report(self._sink, outcome)

    def _ended(self, worker: WorkerHandle) -> None:
        """A worker process ended: settle what it held, then replace it (or the pool broke,
        or its manager died and the pool is rebuilt)."""
        if not worker.eof:
            for msg in worker.messages(drain=True):
                self._handle(worker, msg)
        cpu_seconds = worker.last_cpu_seconds()  # read before join() reaps it
        worker.process.join()
        exitcode = worker.process.exitcode
        cause = exit_cause(exitcode)

        def why(running: bool) -> str:
            if worker.ended_by is not None:
                return f"the worker was ended ({worker.ended_by}) while running this hook"
            if running:
                return f"the worker {cause} while running this hook"
            return f"the hook ran, but the worker {cause} before sending its result"

        with self._cond:
            self._workers.remove(worker)
            cpu, tasks = self._ended_totals[worker.place]
            self._ended_totals[worker.place] = (cpu + cpu_seconds, tasks + worker.tasks_done)
            unstarted, lost = worker.held(why)
            failures = self._settle(worker, unstarted, lost)
            unexpected = (
                worker.retire is None
                and worker.ended_by is None
                and not (self._phase.stopping and exitcode == 0)
            )
            if unexpected and worker.slot[0] == NO_BATCH and worker.young():
                self._startup_failures += 1
            replace = self._phase is Phase.RUNNING
            if replace and self._startup_failures >= STARTUP_FAILURES:
                replace = False
                failures += self._break(
                    f"the worker pool is broken: {self._startup_failures} workers in a row "
                    f"ended before taking any work (last one {cause})"
                )
                logger.error("%s", self._why_broken)
        if unexpected and not self._phase.stopping:
            logger.error(
                "worker %s %s; %d hook(s) failed, %d handed to other workers",
                worker.pid,
                cause,
                len(failures),
                len(unstarted),
            )
        worker.conn.close()
        worker.process.close()
        if failures:
            report(self._sink, Outcome.failed(failures))
        if replace:
            self._replace(worker.place)

    def _settle(
        self, worker: WorkerHandle, unstarted: list[WorkItem], lost: list[tuple[WorkItem, str]]
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
        return [Failure.of(item, worker.pid, why) for item, why in lost]

    def _break(self, reason: str) -> list[Failure]:
        """RUNNING or REBUILDING → BROKEN: new work fails with ``reason``, and so does the
        pending work, returned (called under ``_cond``; a pool already stopping keeps its
        phase)."""
        self._why_broken = reason
        if self._phase.accepts:
            self._move(Phase.BROKEN)
        failures = [Failure.of(item, None, reason) for item in self._pending]
        self._pending.clear()
        return failures

    def _replace(self, place: int) -> None:
        """Start a worker in place of one that ended (at ``place``); rebuild the pool if its
        manager is gone; if no worker starts, the pool is broken and the pending work fails."""
        manager = self._spawner.manager
        assert manager is not None
        if manager.ended():
            self._rebuild()
            return
        try:
            fresh = self._spawner.spawn(place)
        except Exception as exc:
            # A manager that is dying refuses the new queue before its sentinel fires.
            if mpc.wait([manager.gone], KILL_GRACE):
                self._rebuild()
                return
            logger.exception("could not start a replacement worker")
            with self._cond:
                failures = self._break(f"the worker pool is broken: no replacement worker: {exc}")
            report(self._sink, Outcome.failed(failures))
            return
        self._add(fresh)

    def _add(self, fresh: WorkerHandle) -> None:
        """Take a started worker into the pool; end it if ``stop()`` began meanwhile (and
        may have told the others already)."""
        with self._cond:
            self._workers.append(fresh)
            if self._feeder_waiting:
                self._cond.notify()
            stopping = self._phase.stopping and self._ends_now(fresh, True)
        if stopping:
            fresh.tell_stop(True)

    def _rebuild(self) -> None:
        """The manager process died: end its workers, start a new manager and workers.

        Every queue lived in the manager, so its workers can be neither fed nor told to
        stop: they are killed, and settled as any ended worker is (the hooks they were
        running fail, what they had not started runs on the new workers).
        """
        self._manager_seen_dead = True
        with self._cond:
            phase = self._phase
            if phase is not Phase.RUNNING:
                return  # stopping (what is left is handed back) or broken already
            self._move(Phase.REBUILDING)
            dead, old = self._spawner.manager, list(self._workers)
        assert dead is not None
        logger.error(
            "the worker pool's manager process %s died; ending its %d worker(s) "
            "and starting a new manager and workers",
            dead.pid,
            len(old),
        )
        for worker in old:
            worker.ended_by = f"the pool's manager process {dead.pid} had died"
            end_process(worker.process, signal.SIGKILL)
        for worker in old:
            self._ended(worker)
        dead.shutdown()
        try:
            self._spawner.new_manager()
            self._manager_seen_dead = False
            for place in range(self.size):
                with self._cond:
                    if self._phase.stopping:
                        return
                self._add(self._spawner.spawn(place))
        except Exception as exc:
            logger.exception("could not rebuild the worker pool")
            with self._cond:
                failures = self._break(f"the worker pool is broken: rebuilding it failed: {exc}")
            report(self._sink, Outcome.failed(failures))
            return
        with self._cond:
            if self._phase is Phase.REBUILDING:
                self._move(Phase.RUNNING)
                self._cond.notify_all()
