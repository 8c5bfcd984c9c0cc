"""DaskPool: backgrounded hooks on a Dask distributed cluster, behind :class:`WorkerPool`.

Needs the optional extra ``rigger_mp[dask]`` (``distributed``). Config: ``pool: dask``;
``dask_scheduler: tcp://host:8786`` joins a running cluster, else a ``LocalCluster`` of
``dask_workers`` processes (default: the CPU count) is started and ended with the pool.

Data flow (the local pool's, with Dask in the place of the manager queues)::

    event thread     feeder thread          Dask scheduler        Dask workers
    (submit)         cuts pending items     one task per batch    RiggerWorkerPlugin:
    WorkItems ---->  into batches sized --> run_batch(bid, items) --> own plugin instances,
                     by measured cost                                 one WorkerRunner
                                                                         |   ^
    call_soon(merge) <-- reader thread per worker <-- Done per item -----+   | Claim(bid)
    on the event thread  (its connection back)    <-- Fire, Claim -------------+ -> Claimed(start)

- Dask costs milliseconds per task, so items travel in batches, cut as LocalPool cuts
  them (:class:`~rigger_mp.pool.batches.Cutter`, :data:`TARGET_BATCH_SECONDS` of
  measured work), and at most :data:`~rigger_mp.pool.batches.PREFETCH` batches per
  connected worker are with Dask at once.
- Each worker connects back to this process (:mod:`rigger_mp.pool.dask_links`) when the
  worker plugin's ``setup`` runs. A batch task first *claims* its batch on that
  connection; the reply is the index to start at, or none when the batch was settled
  already. Results come back one item at a time, as each
  hook returns, so the main process always knows which item a worker is running.
- A worker's death is its connection's end of file: the item it was running fails
  with that cause, the items it had finished stay done, the ones it had not started
  go back to the front of the pending items for other workers. Should Dask run the
  dead worker's task again, the claim answers none; should that claim come before
  the end of file (the scheduler noticed first), the new worker takes the batch over
  from the item after the one that was running.
- A batch whose task fails before any worker claims it (``KilledWorker`` after its
  workers died at start, a cancelled task) fails its items with Dask's error.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .. import printable
from ..errors import ConfigError, RiggerError, describe_error
from ..lifecycle import move

try:
    import distributed
except ImportError as exc:  # pragma: no cover - the tests run with the extra installed
    raise ConfigError(
        "pool: dask needs the optional extra 'dask' (the 'distributed' package): "
        f"pip install 'rigger_mp[dask]' ({exc})"
    ) from exc

from .batches import PREFETCH, Cutter, Outcome, SentBatch, report
from .dask_links import Link, Links, listen_host
from .dask_worker import Claim, Claimed, RiggerWorkerPlugin, run_batch
from .interface import Failure, InstanceSpec, ResultSink, WorkerInfo, WorkItem
from .worker_messages import Done, Fire

logger = printable.logger("rigger_mp")

TARGET_BATCH_SECONDS = 0.05
"""Work per batch: a Dask task costs a few milliseconds, so batches are larger than
LocalPool's; a hook heavier than this still travels alone."""


class Phase(enum.Enum):
    """Where a :class:`DaskPool` is in its life."""

    NEW = "new"
    """Made, not started."""
    RUNNING = "running"
    """Taking work."""
    STOPPING = "stopping"
    """``stop()`` takes no more work; the batches with Dask may finish."""
    ABANDONING = "abandoning"
    """What a worker still holds is handed back; a claim is refused."""
    STOPPED = "stopped"
    """The plugin, the client, a cluster of its own and every thread have ended."""


_EDGES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.NEW: frozenset({Phase.RUNNING, Phase.STOPPING, Phase.STOPPED}),
    Phase.RUNNING: frozenset({Phase.STOPPING}),
    Phase.STOPPING: frozenset({Phase.ABANDONING}),
    Phase.ABANDONING: frozenset({Phase.STOPPED}),
}


@dataclass(eq=False)
class _Batch(SentBatch):
    future: Any = None
    holder: Link | None = None  # the worker that claimed it
    base: int = 0  # the index the holder started at


class DaskPool:
    """Backgrounded hooks run in batches on the workers of a Dask cluster."""

    def __init__(
        self,
        specs: Mapping[str, InstanceSpec],
        scheduler: str | None = None,
        workers: int | None = None,
        connect_timeout: float = 30.0,
        listen: str | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.scheduler = scheduler
        self.size = workers or os.cpu_count() or 1
        self.connect_timeout = connect_timeout
        self.listen = listen
        self.name = f"rigger_mp-{uuid.uuid4().hex[:12]}"
        self.cluster: Any = None
        self.client: Any = None
        self.cluster_seconds = 0.0
        """How long starting the LocalCluster (or connecting to the scheduler) took."""
        self._sink: ResultSink | None = None
        self._links: Links | None = None
        self._cond = threading.Condition(threading.Lock())
        self._phase = Phase.NEW  # under _cond
        self._pending: deque[WorkItem] = deque()
        self._batches: dict[int, _Batch] = {}
        self._conns: list[Link] = []
        self._cutter = Cutter(TARGET_BATCH_SECONDS)
        self._feeder_waiting = False
        self._left: list[WorkItem] = []
        self._feeder: threading.Thread | None = None

    # -- the interface ----------------------------------------------------------------

    def start(self, sink: ResultSink) -> None:
        """Reach (or start) the cluster, listen for its workers, register the plugin."""
        self._sink = sink
        began = time.perf_counter()
        own = self.scheduler is None
        try:
            address = self._cluster()
            host, _, port = (self.listen or "").partition(":")
            host = host or ("127.0.0.1" if own else listen_host(address))
            links = self._links = Links(
                host, int(port or 0), self._joined, self._handle, self._lost
            )
            plugin = RiggerWorkerPlugin(links.address, links.authkey, self.specs, own)
            try:
                self.client.register_plugin(plugin, name=self.name)
            except Exception as exc:
                raise RiggerError(
                    f"pool: dask: the Dask workers could not set up rigger_mp (they need "
                    f"rigger_mp and the plugins installed, and to reach this process at "
                    f"{host}:{links.address[1]}, see dask_listen): "
                    f"{describe_error(exc)}"
                ) from exc
            self._wait_for_workers()
        except BaseException:
            with self._cond:
                self._move(Phase.STOPPED)
            self._teardown()
            raise
        with self._cond:
            self._move(Phase.RUNNING)
        self.cluster_seconds = time.perf_counter() - began
        self._feeder = threading.Thread(
            target=self._feed, name="rigger_mp-dask-feeder", daemon=True
        )
        self._feeder.start()

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Queue items for the feeder; fails them at once if the pool is stopping."""
        with self._cond:
            if self._phase is Phase.RUNNING:
                self._pending.extend(items)
                if self._feeder_waiting:
                    self._cond.notify_all()
                return
        failures = [Failure.of(i, None, "the worker pool is stopping") for i in items]
        report(self._sink, Outcome.failed(failures))

    def running(self) -> int:
        """Items a worker runs now: one per claimed, unfinished batch."""
        with self._cond:
            return sum(1 for b in self._batches.values() if b.holder is not None and not b.finished)

    def workers(self) -> list[WorkerInfo]:
        """Each connected Dask worker: pid, address, memory and CPU use (the scheduler's
        latest figures), the CPU time it reported last and the hooks it ran for this pool."""
        with self._cond:
            live = list(self._conns)
        try:
            info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except Exception:
            info = {}
        out = []
        for link in live:
            metrics = info.get(link.address, {}).get("metrics", {})
            out.append(
                WorkerInfo(
                    link.pid,
                    int(metrics.get("memory", 0)),
                    float(metrics.get("cpu", 0.0)),
                    link.tasks_done,
                    link.cpu_seconds,
                    address=link.address,
                    slot_cpu_seconds=link.cpu_seconds,
                    slot_tasks_done=link.tasks_done,
                )
            )
        return out

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        """Let the batches with Dask finish (or not), then end the plugin, the client and
        a cluster this pool started; return the items not run."""
        with self._cond:
            if self._phase is not Phase.RUNNING and self._phase is not Phase.NEW:
                return []
            self._move(Phase.STOPPING)
            self._left.extend(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if self._feeder is not None:
            self._feeder.join()
        with self._cond:
            if not abandon:
                self._cond.wait_for(lambda: not self._batches, timeout)
            self._move(Phase.ABANDONING)
            futures = [b.future for b in self._batches.values() if b.future is not None]
            for batch in self._batches.values():
                self._left.extend(batch.rest())
            self._batches.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
        self._teardown()
        with self._cond:
            self._move(Phase.STOPPED)
            left, self._left = self._left, []
        return left

    def _move(self, to: Phase) -> None:
        """Change phase along :data:`_EDGES` (called under ``_cond``)."""
        self._phase = move(_EDGES, self._phase, to)

    # -- starting and ending ----------------------------------------------------------

    def _cluster(self) -> str:
        """The scheduler's address: the configured one, or a new LocalCluster's."""
        if self.scheduler is None:
            self.cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=self.size,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",  # any free port: never a clash on 8787
                silence_logs=logging.ERROR,
            )
            address = str(self.cluster.scheduler_address)
        else:
            address = self.scheduler
        try:
            self.client = distributed.Client(  # type: ignore[no-untyped-call]
                address, timeout=self.connect_timeout, set_as_default=False
            )
        except Exception as exc:
            raise RiggerError(
                f"pool: dask: cannot reach the Dask scheduler at {address} within "
                f"{self.connect_timeout:g} s (dask_connect_timeout): {describe_error(exc)}"
            ) from exc
        return address

    def _wait_for_workers(self) -> None:
        """Block until every worker the scheduler knows of has connected back."""
        expected = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._conns) >= expected, self.connect_timeout):
                raise RiggerError(
                    f"pool: dask: {expected - len(self._conns)} of {expected} Dask workers "
                    f"did not connect back within {self.connect_timeout:g} s"
                )

    def _teardown(self) -> None:
        """End the plugin, the client, our cluster, the connections and the threads."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(self.name)
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        if self._links is not None:
            self._links.close()

    # -- the workers' connections ------------------------------------------------------

    def _joined(self, link: Link) -> None:
        with self._cond:
            self._conns.append(link)
            self._cond.notify_all()

    def _handle(self, link: Link, msg: Done | Fire | Claim) -> None:
        if isinstance(msg, Done):
            self._done(link, msg)
        elif isinstance(msg, Claim):
            link.conn.send(Claimed(self._claim(link, msg.bid)))
        elif isinstance(msg, Fire):
            assert self._sink is not None
            try:
                self._sink.fire(msg.hook_name, msg.kwargs)
            except Exception:
                logger.exception(
                    "event %r fired in a Dask worker was lost", msg.hook_name
                )

    def _claim(self, link: Link, bid: int) -> int | None:
        """The index ``link`` starts batch ``bid`` at, or None: settled already."""
        failures: list[Failure] = []
        with self._cond:
            batch = self._batches.get(bid)
            if batch is None or self._phase is Phase.ABANDONING:
                return None
            old = batch.holder
            if old is not None and old is not link:
                # Dask gave the batch to another worker: the scheduler lost the holder.
                old.batches.discard(bid)
                failures.append(
                    Failure.of(
                        batch.items[batch.reported],
                        old.pid,
                        f"{old} was lost by the Dask scheduler while running "
                        "this hook (or before sending its result)",
                    )
                )
                batch.reported += 1
            start: int | None = None
            if batch.finished:
                self._settle(bid)
            else:
                batch.holder = link
                batch.base = start = batch.reported
                link.batches.add(bid)
        if failures:
            report(self._sink, Outcome.failed(failures))
        return start

    def _done(self, link: Link, done: Done) -> None:
        with self._cond:
            batch = self._batches.get(done.bid)
            if batch is None or batch.holder is not link:
                return  # settled already (abandoned, or taken over after a loss)
            outcome = batch.take(done, link.pid, batch.base, f"on {link}:\n")
            link.tasks_done += done.finished
            link.cpu_seconds = done.cpu_seconds
            self._cutter.measured(done)
            if batch.finished:
                link.batches.discard(done.bid)
                self._settle(done.bid)
        report(self._sink, outcome)

    def _settle(self, bid: int) -> None:
        """Batch ``bid`` is done with (under the lock): free its place."""
        del self._batches[bid]
        self._cond.notify_all()

    def _lost(self, link: Link) -> None:
        """A worker's connection ended: settle the batches it held, as LocalPool does."""
        failures: list[Failure] = []
        reissue: list[WorkItem] = []
        futures = []
        with self._cond:
            self._conns.remove(link)
            for bid in sorted(link.batches):
                batch = self._batches.get(bid)
                if batch is None:  # abandoned by stop() already
                    continue
                rest = batch.rest()
                if self._phase is Phase.ABANDONING:
                    self._left.extend(rest)
                else:
                    failures.append(
                        Failure.of(
                            rest[0],
                            link.pid,
                            f"{link} went away (killed, crashed or closed) while "
                            "running this hook, or before sending its result",
                        )
                    )
                    reissue.extend(rest[1:])
                futures.append(batch.future)
                self._settle(bid)
            link.batches.clear()
            if self._phase is Phase.RUNNING:
                self._pending.extendleft(reversed(reissue))
            else:
                self._left.extend(reissue)
            self._cond.notify_all()
        if failures or reissue:
            logger.error(
                "%s went away; %d hook(s) failed, %d handed to other workers",
                link,
                len(failures),
                len(reissue),
            )
        for future in futures:  # Dask would run it again: the claim would be refused
            if future is not None:
                with contextlib.suppress(Exception):
                    future.cancel()
        if failures:
            report(self._sink, Outcome.failed(failures))

    # -- the feeder ---------------------------------------------------------------------

    def _feed(self) -> None:
        """Cut pending items into batches and hand each to Dask as one task."""
        cond = self._cond
        pending = self._pending
        while True:
            with cond:
                while True:
                    if self._phase is not Phase.RUNNING:
                        return
                    live = max(1, len(self._conns))
                    if pending and len(self._batches) < PREFETCH * live:
                        break
                    self._feeder_waiting = True
                    cond.wait()
                    self._feeder_waiting = False
                bid, items = self._cutter.cut(pending, live)
                batch = self._batches[bid] = _Batch(items)
            try:
                future = self.client.submit(
                    run_batch, self.name, bid, items, key=f"{self.name}-{bid}", pure=False
                )
            except Exception as exc:
                with cond:
                    self._batches.pop(bid, None)
                    cond.notify_all()
                text = f"could not hand the batch to Dask: {describe_error(exc)}"
                report(self._sink, Outcome.failed([Failure.of(i, None, text) for i in items]))
                continue
            with cond:
                batch.future = future
            future.add_done_callback(lambda f, bid=bid: self._future_done(bid, f))

    def _future_done(self, bid: int, future: Any) -> None:
        """A batch's task ended: only one no worker claimed needs settling here."""
        if future.status == "finished":
            return
        with self._cond:
            batch = self._batches.get(bid)
            if batch is None or batch.holder is not None:
                return  # settled, or its worker's connection settles it
            rest = batch.rest()
            self._settle(bid)
        try:
            cause = describe_error(future.exception()) if future.status == "error" else ""
        except Exception as exc:
            cause = describe_error(exc)
        text = (
            "the Dask task of this hook's batch ended before a worker ran it: "
            f"{cause or future.status}"
        )
        report(self._sink, Outcome.failed([Failure.of(i, None, text) for i in rest]))
