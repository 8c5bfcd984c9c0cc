"""The worker process: builds its own plugin instances and runs backgrounded hooks.

A worker takes each :class:`~rigger_mp.pool.worker_messages.Batch` from its manager
queue, runs each item's hook on its own instance of the plugin, and sends the results
back on its pipe (the messages of :mod:`rigger_mp.pool.worker_messages`). It records in
its slot the batch it took and the item it is running, so that the main process knows
what was lost if it dies.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from .. import printable
from ..core.plugin import Dispatcher, RiggerBasePlugin, import_class
from ..deadline import Deadline
from ..errors import PluginError, RiggerError
from .interface import InstanceSpec, WorkItem
from .parent_watch import exit_with_parent
from .worker_messages import (
    FLUSH_SECONDS,
    NO_BATCH,
    Batch,
    Done,
    Fire,
    ItemResult,
    Retire,
    Stop,
)

THREAD_GRACE = 5.0
"""Seconds a finished worker waits for the non-daemon threads its hooks left before it
exits anyway."""
WORKER_NICE = 10
"""Workers run at this lower CPU priority: with every core busy packing archives, the
main process's event thread still gets the CPU it needs (idle cores are used in full)."""


class WorkerRunner(Dispatcher):
    """The state of one worker process; the dispatcher its plugin instances see."""

    def __init__(
        self,
        conn: Connection,
        slot: Any,
        specs: Mapping[str, InstanceSpec],
        max_tasks: int | None,
        memory_limit: int | None,
    ) -> None:
        self.conn = conn
        self.slot = slot
        self.specs = specs
        self.max_tasks = max_tasks
        self.memory_limit = memory_limit
        self.instances: dict[str, RiggerBasePlugin | str] = {}
        self.tasks = 0
        self.results: list[ItemResult] = []
        self.unsent = 0
        self.bid = NO_BATCH
        self.work_start = 0.0
        self.flush_seconds = FLUSH_SECONDS
        """Results are sent after this much work; 0 sends each at once (the Dask pool's
        main process then knows, at a worker's death, which item it was running)."""
        self._process: Any = None
        if memory_limit is not None:
            import psutil

            self._process = psutil.Process()

    # -- what a plugin in a worker may call --------------------------------------------

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Future[dict[str, Any]]:
        """Ship the event to the main process, which fires it; the result stays there.

        The returned future is already done and raises if asked for the result: the
        event runs later in the main process, and its namespace is not sent back.
        """
        self.flush()  # results of earlier hooks go first, in order
        self.conn.send(Fire(hook_name, kwargs))
        future: Future[dict[str, Any]] = Future()
        future.set_exception(
            RiggerError(
                f"event {hook_name!r} was fired from a worker process: it runs in the main "
                "process and its result is not available here"
            )
        )
        return future

    # -- the loop ---------------------------------------------------------------------

    def instance(self, ident: str) -> RiggerBasePlugin:
        """This worker's instance ``ident``, built (and initialized) on first use."""
        obj = self.instances.get(ident)
        if obj is None:
            try:
                path, data = self.specs[ident]
                cls = import_class(path)
                obj = cls(ident, data, self)
            except Exception:
                obj = (
                    f"building instance {ident!r} in worker {os.getpid()} failed:\n"
                    + traceback.format_exc()
                )
            self.instances[ident] = obj
        if isinstance(obj, str):
            raise PluginError(obj)
        return obj

    def run(self, queue: Any) -> None:
        """Take batches until told to stop, a reason to retire, or the queue is gone."""
        slot = self.slot
        while True:
            try:
                msg: Batch | Stop = queue.get()
            except (EOFError, OSError) as exc:
                # The manager process that holds the queue has died: no more work can
                # come, and this worker holds none, so it hands back nothing and exits.
                reason = f"its queue's manager process is gone ({type(exc).__name__})"
                self.conn.send(Retire(self.bid, slot[1], reason))
                return
            if isinstance(msg, Stop):
                return
            slot[1] = NO_BATCH
            slot[0] = self.bid = msg.bid
            if not self.run_batch(msg.items):
                return

    def run_batch(self, items: list[WorkItem]) -> bool:
        """Run one batch; False when the worker retired part-way (the rest handed back)."""
        slot = self.slot
        clock = time.perf_counter
        self.work_start = last = clock()
        for index, (_, ident, event, payload) in enumerate(items):
            slot[1] = index
            try:
                hook = self.instance(ident).callbacks.get(event)
                if hook is None:
                    raise PluginError(
                        f"instance {ident!r} in the worker has no hook for event {event!r} "
                        "(hooks must be bound in plugin_initialize() to run in workers)"
                    )
                callee = hook.callee
                glob = callee.check(callee.func(**pickle.loads(payload)))[1]
                if glob:
                    self.results.append(ItemResult(index, glob, None))
            except BaseException:
                self.results.append(ItemResult(index, None, traceback.format_exc()))
            self.unsent += 1
            self.tasks += 1
            now = clock()
            reason = self.retire_reason()
            if reason is not None:
                self.flush()
                slot[1] = index + 1
                self.conn.send(Retire(self.bid, index + 1, reason))
                return False
            if now - last >= self.flush_seconds:
                self.flush()
                last = now
        self.flush()
        slot[1] = len(items)
        return True

    def retire_reason(self) -> str | None:
        """Why this worker should be recycled now, if it should."""
        if self.max_tasks is not None and self.tasks >= self.max_tasks:
            return f"ran {self.tasks} task(s) (max_tasks_per_worker: {self.max_tasks})"
        if self._process is not None and self.memory_limit is not None:
            rss = self._process.memory_info().rss
            if rss > self.memory_limit:
                return (
                    f"resident memory {rss / 2**20:.1f} MB is above worker_memory_limit_mb "
                    f"({self.memory_limit / 2**20:g} MB)"
                )
        return None

    def flush(self) -> None:
        """Send the results held, in the order the hooks ran."""
        if not self.unsent:
            return
        now = time.perf_counter()
        msg = Done(self.bid, self.unsent, now - self.work_start, self.results, time.process_time())
        try:
            self.conn.send(msg)
        except (pickle.PicklingError, TypeError, AttributeError, ValueError):
            self.conn.send(msg._replace(results=_picklable(self.results)))
        self.results = []
        self.unsent = 0
        self.work_start = now


def _picklable(results: list[ItemResult]) -> list[ItemResult]:
    """The results with each unpicklable global update replaced by an error."""
    out: list[ItemResult] = []
    for index, glob, error in results:
        try:
            pickle.dumps(glob, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            error = (
                "the hook's global updates cannot be sent to the main process: "
                f"{type(exc).__name__}: {exc}"
            )
            glob = None
        out.append(ItemResult(index, glob, error))
    return out


def worker_main(
    queue: Any,
    conn: Connection,
    slot: Any,
    specs: Mapping[str, InstanceSpec],
    max_tasks: int | None,
    memory_limit: int | None,
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)  # the event flow in the main process keeps its share of CPU
    exit_with_parent()
    runner = WorkerRunner(conn, slot, specs, max_tasks, memory_limit)
    try:
        runner.run(queue)
    finally:
        conn.close()
    leave(THREAD_GRACE)


def leave(grace: float) -> NoReturn:
    """End the worker once its work is done, whatever threads its hooks left running.

    ``multiprocessing`` would join every non-daemon thread first, and one that never
    ends would keep the worker (and the ``stop()`` waiting for it) forever. They get
    ``grace`` seconds, then the process exits all the same.
    """
    deadline = Deadline(grace)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(deadline.left())
    left = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    if len(left) > 1:
        printable.logger("rigger_mp").warning(
            "worker %d exits leaving thread(s) a hook started: %s",
            os.getpid(),
            ", ".join(n for n in left if n != threading.current_thread().name),
        )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
