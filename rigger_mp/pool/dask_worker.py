"""What runs inside a Dask worker: the worker plugin and the batch task of :class:`DaskPool`.

:class:`RiggerWorkerPlugin` is registered by :meth:`DaskPool.start
<rigger_mp.pool.dask.DaskPool.start>`. Dask runs its ``setup`` once on every worker, and
again on each worker that joins later (a replacement for a dead one, say). ``setup``
connects back to the dispatcher's main process (an authenticated
``multiprocessing.connection``), says who it is (:class:`Hello`), and builds a
:class:`~rigger_mp.pool.worker.WorkerRunner` with every backgrounded instance, so
``plugin_initialize()`` runs once per worker.

:func:`run_batch` is the Dask task, one per batch. It first *claims* the batch from
the main process, which answers with the index to start from (or none: the batch
was settled already, as when Dask runs a task again after its worker died), then runs
the items with the shared :class:`WorkerRunner`, sending each result as soon as the
hook returns (:class:`~rigger_mp.pool.worker_messages.Done`, and
:class:`~rigger_mp.pool.worker_messages.Fire` for an event a hook fires). So at a
worker's death the main process knows which item was running.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection as mpc
import os
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from distributed import WorkerPlugin, get_worker

from .interface import InstanceSpec, WorkItem
from .worker import WORKER_NICE, WorkerRunner
from .worker_messages import NO_BATCH


class Hello(NamedTuple):
    """The first message on a Dask worker's connection: who it is."""

    address: str
    """The Dask worker's address (``tcp://host:port``)."""
    pid: int


class Claim(NamedTuple):
    """A batch task asks where to start batch ``bid``; answered with :class:`Claimed`."""

    bid: int


class Claimed(NamedTuple):
    """The answer to :class:`Claim`."""

    start: int | None
    """The index of the first item to run; None when the batch was settled already."""


class RiggerWorkerPlugin(WorkerPlugin):
    """Per Dask worker: the connection to the dispatcher and the plugin instances."""

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        specs: Mapping[str, InstanceSpec],
        nice: bool,
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.specs = dict(specs)
        self.nice = nice
        self.runner: WorkerRunner | None = None
        self.lock: threading.Lock | None = None  # made on the worker: a lock cannot travel

    def setup(self, worker: Any) -> None:
        """Connect to the dispatcher and build every backgrounded instance once."""
        self.lock = threading.Lock()
        conn = mpc.Client(self.address, authkey=self.authkey)
        conn.send(Hello(str(worker.address), os.getpid()))
        runner = WorkerRunner(conn, [NO_BATCH, NO_BATCH], self.specs, None, None)
        runner.flush_seconds = 0.0
        for ident in self.specs:
            with contextlib.suppress(Exception):  # kept in the runner, raised per item
                runner.instance(ident)
        self.runner = runner

    def teardown(self, worker: Any) -> None:
        """Close the connection: the dispatcher sees this worker leave."""
        if self.runner is not None:
            self.runner.conn.close()
            self.runner = None

    def run(self, bid: int, items: list[WorkItem]) -> int:
        """Claim batch ``bid`` and run the items from where the dispatcher says."""
        runner, lock = self.runner, self.lock
        if runner is None or lock is None:
            raise RuntimeError("the rigger_mp worker plugin is not connected")
        with lock:  # one batch at a time, even on a worker with several threads
            if runner.conn.closed:
                raise RuntimeError("the rigger_mp worker plugin is not connected")
            if self.nice:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
            runner.conn.send(Claim(bid))
            reply: Claimed = runner.conn.recv()
            start = reply.start
            if start is None:
                return 0
            runner.bid = bid
            runner.run_batch(items[start:])
            return len(items) - start


def run_batch(plugin_name: str, bid: int, items: list[WorkItem]) -> int:
    """The Dask task of one batch: run it with this worker's rigger_mp plugin."""
    plugin = get_worker().plugins[plugin_name]
    assert isinstance(plugin, RiggerWorkerPlugin)
    return plugin.run(bid, items)
