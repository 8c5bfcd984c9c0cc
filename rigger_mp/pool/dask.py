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
    call_soon(merge) <-- reader thread per worker <-- MSG_DONE per item -+   | claim(bid)
    on the event thread  (its connection back)    <-- MSG_FIRE, MSG_CLAIM -----+ -> start index

- Dask costs milliseconds per task, so items travel in batches, cut as LocalPool cuts
  them (:data:`TARGET_BATCH_SECONDS` of measured work, at most :data:`MAX_BATCH`), and
  at most :data:`PREFETCH` batches per connected worker are with Dask at once.
- Each worker connects back to this process (``multiprocessing.connection`` over TCP,
  with a random key) when the worker plugin's ``setup`` runs. A batch task first
  *claims* its batch on that connection; the reply is the index to start at, or ``-1``
  when the batch was settled already. Results come back one item at a time, as each
  hook returns, so the main process always knows which item a worker is running.
- A worker's death is its connection's end of file: the item it was running fails
  with that cause, the items it had finished stay done, the ones it had not started
  go back to the front of the pending items for other workers. Should Dask run the
  dead worker's task again, the claim answers ``-1``; should that claim come before
  the end of file (the scheduler noticed first), the new worker takes the batch over
  from the item after the one that was running.
- A batch whose task fails before any worker claims it (``KilledWorker`` after its
  workers died at start, a cancelled task) fails its items with Dask's error.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection as mpc
import os
import secrets
import socket
import threading
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import printable
from ..errors import ConfigError, RiggerError, describe_error

try:
    import distributed
except ImportError as exc:  # pragma: no cover - the tests run with the extra installed
    raise ConfigError(
        "pool: dask needs the optional extra 'dask' (the 'distributed' package): "
        f"pip install 'rigger_mp[dask]' ({exc})"
    ) from exc

from .dask_worker import MSG_CLAIM, MSG_HELLO, SKIP, RiggerWorkerPlugin, run_batch
from .interface import Failure, InstanceSpec, ResultSink, WorkerInfo, WorkItem
from .local import MAX_BATCH, PREFETCH
from .messages import MSG_DONE, MSG_FIRE

logger = printable.logger("rigger_mp")

TARGET_BATCH_SECONDS = 0.05
"""Work per batch: a Dask task costs a few milliseconds, so batches are larger than
LocalPool's; a hook heavier than this still travels alone."""

Sparse = list[tuple[int, Mapping[str, Any] | None, str | None]]


@dataclass(eq=False)
class _Conn:
    """One Dask worker's connection back to this process."""

    conn: mpc.Connection
    address: str
    pid: int
    batches: set[int] = field(default_factory=set)
    tasks_done: int = 0
    thread: threading.Thread | None = None


@dataclass(eq=False)
class _Batch:
    items: list[WorkItem]
    future: Any = None
    holder: _Conn | None = None  # the worker that claimed it
    reported: int = 0  # items[:reported] are settled
    base: int = 0  # the index the holder started at


def _where(conn: _Conn) -> str:
    return f"Dask worker {conn.address} (pid {conn.pid})"


def listen_host(scheduler: str) -> str:
    """This host's address on the route to ``scheduler`` (where workers can reach it)."""
    parts = urlsplit(scheduler)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8786
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))  # UDP: picks the route, sends nothing
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


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
        self._authkey = secrets.token_bytes(32)
        self._listener: mpc.Listener | None = None
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[WorkItem] = deque()
        self._batches: dict[int, _Batch] = {}
        self._conns: list[_Conn] = []
        self._readers: list[threading.Thread] = []
        self._next_batch = 0
        self._item_seconds = TARGET_BATCH_SECONDS  # until measured: assume heavy
        self._feeder_waiting = False
        self._stopping = False
        self._closing = False
        self._abandon = False
        self._left: list[WorkItem] = []
        self._feeder: threading.Thread | None = None
        self._acceptor: threading.Thread | None = None

    # -- the interface ----------------------------------------------------------------

    def start(self, sink: ResultSink) -> None:
        """Reach (or start) the cluster, listen for its workers, register the plugin."""
        import time

        self._sink = sink
        began = time.perf_counter()
        own = self.scheduler is None
        try:
            address = self._cluster()
            host, _, port = (self.listen or "").partition(":")
            host = host or ("127.0.0.1" if own else listen_host(address))
            self._listener = mpc.Listener((host, int(port or 0)), authkey=self._authkey)
            self._acceptor = threading.Thread(
                target=self._accept, name="rigger_mp-dask-acceptor", daemon=True
            )
            self._acceptor.start()
            plugin = RiggerWorkerPlugin(self._listener.address, self._authkey, self.specs, own)
            try:
                self.client.register_plugin(plugin, name=self.name)
            except Exception as exc:
                raise RiggerError(
                    f"pool: dask: the Dask workers could not set up rigger_mp (they need "
                    f"rigger_mp and the plugins installed, and to reach this process at "
                    f"{host}:{self._listener.address[1]}, see dask_listen): "
                    f"{describe_error(exc)}"
                ) from exc
            self._wait_for_workers()
        except BaseException:
            self._teardown()
            raise
        self.cluster_seconds = time.perf_counter() - began
        self._feeder = threading.Thread(
            target=self._feed, name="rigger_mp-dask-feeder", daemon=True
        )
        self._feeder.start()

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Queue items for the feeder; fails them at once if the pool is stopping."""
        with self._cond:
            if not self._stopping:
                self._pending.extend(items)
                if self._feeder_waiting:
                    self._cond.notify_all()
                return
        self._report([], [Failure.of(i, None, "the worker pool is stopping") for i in items])

    def running(self) -> int:
        """Items a worker runs now: one per claimed, unfinished batch."""
        with self._cond:
            return sum(
                1
                for b in self._batches.values()
                if b.holder is not None and b.reported < len(b.items)
            )

    def workers(self) -> list[WorkerInfo]:
        """Each connected Dask worker: pid, address, memory and CPU (the scheduler's
        latest figures) and the hooks it ran for this pool."""
        with self._cond:
            live = list(self._conns)
        try:
            info = self.client.scheduler_info(n_workers=-1).get("workers", {})
        except Exception:
            info = {}
        out = []
        for conn in live:
            metrics = info.get(conn.address, {}).get("metrics", {})
            out.append(
                WorkerInfo(
                    conn.pid,
                    int(metrics.get("memory", 0)),
                    float(metrics.get("cpu", 0.0)),
                    conn.tasks_done,
                    address=conn.address,
                )
            )
        return out

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        """Let the batches with Dask finish (or not), then end the plugin, the client and
        a cluster this pool started; return the items not run."""
        with self._cond:
            if self._stopping:
                return []
            self._stopping = True
            self._left.extend(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if self._feeder is not None:
            self._feeder.join()
        with self._cond:
            if not abandon:
                self._cond.wait_for(lambda: not self._batches, timeout)
            self._abandon = True  # what a worker still holds now is abandoned
            futures = [b.future for b in self._batches.values() if b.future is not None]
            for batch in self._batches.values():
                self._left.extend(batch.items[batch.reported :])
            self._batches.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures)
        self._teardown()
        with self._cond:
            left, self._left = self._left, []
        return left

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
        self._closing = True
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.unregister_worker_plugin(self.name)
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        with self._cond:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn.conn)
        if self._listener is not None:
            with contextlib.suppress(Exception):  # wake the acceptor
                mpc.Client(self._listener.address, authkey=self._authkey).close()
        if self._acceptor is not None:
            self._acceptor.join()
        for thread in self._readers:
            thread.join()
        if self._listener is not None:
            self._listener.close()

    # -- the acceptor and the readers ---------------------------------------------------

    def _accept(self) -> None:
        """Take each worker's connection and start its reader (one thread per worker)."""
        assert self._listener is not None
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                if self._closing:
                    return
                logger.warning("rigger_mp: refused a connection to the Dask pool: %s", exc)
                continue
            if self._closing:
                conn.close()
                return
            try:
                kind, address, pid = conn.recv()
                assert kind == MSG_HELLO
            except Exception:
                logger.warning("rigger_mp: a Dask worker's connection did not say hello")
                conn.close()
                continue
            peer = _Conn(conn, address, pid)
            peer.thread = threading.Thread(
                target=self._read, args=(peer,), name="rigger_mp-dask-reader", daemon=True
            )
            with self._cond:
                self._conns.append(peer)
                self._readers.append(peer.thread)
                self._cond.notify_all()
            peer.thread.start()

    def _read(self, peer: _Conn) -> None:
        """Handle one worker's messages until its connection ends."""
        try:
            while True:
                self._handle(peer, peer.conn.recv())
        except (EOFError, OSError):
            pass
        except Exception:
            logger.exception("rigger_mp: unreadable message from %s", _where(peer))
        self._lost(peer)
        peer.conn.close()

    def _handle(self, peer: _Conn, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == MSG_DONE:
            _, bid, count, seconds, sparse = msg
            self._done(peer, bid, count, seconds, sparse)
        elif kind == MSG_CLAIM:
            peer.conn.send(self._claim(peer, msg[1]))
        elif kind == MSG_FIRE:
            assert self._sink is not None
            try:
                self._sink.fire(msg[1], msg[2])
            except Exception:
                logger.exception("rigger_mp: event %r fired in a Dask worker was lost", msg[1])

    def _claim(self, peer: _Conn, bid: int) -> int:
        """The index ``peer`` starts batch ``bid`` at, or SKIP."""
        failures: list[Failure] = []
        with self._cond:
            batch = self._batches.get(bid)
            if batch is None or self._abandon:
                return SKIP
            old = batch.holder
            if old is not None and old is not peer:
                # Dask gave the batch to another worker: the scheduler lost the holder.
                old.batches.discard(bid)
                failures.append(
                    Failure.of(
                        batch.items[batch.reported],
                        old.pid,
                        f"{_where(old)} was lost by the Dask scheduler while running "
                        "this hook (or before sending its result)",
                    )
                )
                batch.reported += 1
            if batch.reported >= len(batch.items):
                self._settle(bid)
                start = SKIP
            else:
                batch.holder = peer
                batch.base = start = batch.reported
                peer.batches.add(bid)
        if failures:
            self._report([], failures)
        return start

    def _done(self, peer: _Conn, bid: int, count: int, seconds: float, sparse: Sparse) -> None:
        updates: list[Mapping[str, Any]] = []
        failures: list[Failure] = []
        with self._cond:
            batch = self._batches.get(bid)
            if batch is None or batch.holder is not peer:
                return  # settled already (abandoned, or taken over after a loss)
            for index, glob, error in sparse:
                if error is not None:
                    item = batch.items[batch.base + index]
                    failures.append(Failure.of(item, peer.pid, f"on {_where(peer)}:\n{error}"))
                elif glob is not None:
                    updates.append(glob)
            ids = [item[0] for item in batch.items[batch.reported : batch.reported + count]]
            batch.reported += count
            peer.tasks_done += count
            self._item_seconds = 0.7 * self._item_seconds + 0.3 * max(seconds / count, 1e-7)
            if batch.reported >= len(batch.items):
                peer.batches.discard(bid)
                self._settle(bid)
        self._report(updates, failures, count, ids)

    def _settle(self, bid: int) -> None:
        """Batch ``bid`` is done with (under the lock): free its place."""
        del self._batches[bid]
        self._cond.notify_all()

    def _lost(self, peer: _Conn) -> None:
        """A worker's connection ended: settle the batches it held, as LocalPool does."""
        failures: list[Failure] = []
        reissue: list[WorkItem] = []
        futures = []
        with self._cond:
            self._conns.remove(peer)
            for bid in sorted(peer.batches):
                batch = self._batches.get(bid)
                if batch is None:  # abandoned by stop() already
                    continue
                rest = batch.items[batch.reported :]
                if self._abandon:
                    self._left.extend(rest)
                else:
                    failures.append(
                        Failure.of(
                            rest[0],
                            peer.pid,
                            f"{_where(peer)} went away (killed, crashed or closed) while "
                            "running this hook, or before sending its result",
                        )
                    )
                    reissue.extend(rest[1:])
                futures.append(batch.future)
                self._settle(bid)
            peer.batches.clear()
            if self._stopping:
                self._left.extend(reissue)
            else:
                self._pending.extendleft(reversed(reissue))
            self._cond.notify_all()
        if failures or reissue:
            logger.error(
                "rigger_mp: %s went away; %d hook(s) failed, %d handed to other workers",
                _where(peer),
                len(failures),
                len(reissue),
            )
        for future in futures:  # Dask would run it again: the claim would be refused
            if future is not None:
                with contextlib.suppress(Exception):
                    future.cancel()
        if failures:
            self._report([], failures)

    # -- the feeder ---------------------------------------------------------------------

    def _feed(self) -> None:
        """Cut pending items into batches and hand each to Dask as one task."""
        cond = self._cond
        pending = self._pending
        while True:
            with cond:
                while True:
                    if self._stopping:
                        return
                    live = max(1, len(self._conns))
                    if pending and len(self._batches) < PREFETCH * live:
                        break
                    self._feeder_waiting = True
                    cond.wait()
                    self._feeder_waiting = False
                size = min(
                    MAX_BATCH,
                    math.ceil(len(pending) / live),
                    max(1, int(TARGET_BATCH_SECONDS / self._item_seconds)),
                )
                items = [pending.popleft() for _ in range(size)]
                bid = self._next_batch
                self._next_batch += 1
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
                self._report([], [Failure.of(i, None, text) for i in items])
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
            rest = batch.items[batch.reported :]
            self._settle(bid)
        try:
            cause = describe_error(future.exception()) if future.status == "error" else ""
        except Exception as exc:
            cause = describe_error(exc)
        text = (
            "the Dask task of this hook's batch ended before a worker ran it: "
            f"{cause or future.status}"
        )
        self._report([], [Failure.of(i, None, text) for i in rest])

    # -- reporting ----------------------------------------------------------------------

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


def _shutdown(conn: mpc.Connection) -> None:
    """Wake a thread blocked reading ``conn``: shut its socket down (end of file)."""
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        with sock:
            sock.shutdown(socket.SHUT_RDWR)
