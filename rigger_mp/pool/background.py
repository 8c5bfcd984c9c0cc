"""The dispatcher's side of backgrounded hooks: submission, results, counters, waiting.

:class:`Background` is the only code that talks to the worker pool
(:class:`~rigger_mp.pool.WorkerPool`). On the event thread it turns each backgrounded
hook of an event into a work item (its arguments chosen by the hook's signature, as for
any hook, and pickled at once: a snapshot). Results come back on the pool's thread and
are queued here; one job on the event thread (``call_soon``) merges their global updates,
so that the event thread stays the only writer of the global namespace.
"""

from __future__ import annotations

import enum
import pickle
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .. import printable
from ..core.config import RiggerConfig
from ..core.plugin import import_class
from ..deadline import Deadline
from ..errors import BackgroundError, PluginError, ShuttingDown, WouldDeadlock
from ..lifecycle import move
from ..merge import recursive_update
from ..naming import describe
from .interface import Failure, InstanceSpec, WorkerInfo, WorkerPool, WorkItem, describe_items
from .io_lane import IoLane
from .local import LocalPool

IO_LANE: Final = "io"
"""A hook's ``bg`` (or an instance's ``background``) for the I/O lane."""

if TYPE_CHECKING:
    from ..core.plugin import PluginHook, PluginInstance
    from ..core.port import EventPort
    from ..coroutine_thread import CoroutineThread

logger = printable.logger("rigger_mp")

_Result = tuple[int, list[Mapping[str, Any]], list[Failure], Sequence[int]]


class Phase(enum.Enum):
    """Whether the pool still runs and which thread settles results."""

    OPEN = "open"
    """The pool takes work; results are settled by a job on the event thread."""
    POOL_ENDED = "pool ended"
    """:meth:`Background.close` ended the pool; the event thread still settles."""
    EVENTS_ENDED = "events ended"
    """The event thread has ended: results are settled on the thread that brings them."""
    ENDED = "ended"
    """Both: the pool is ended and results are settled where they arrive."""

    @property
    def pool_open(self) -> bool:
        """Whether the pool still takes work."""
        return self in (Phase.OPEN, Phase.EVENTS_ENDED)

    @property
    def direct(self) -> bool:
        """Whether results are settled on the thread that brings them."""
        return self in (Phase.EVENTS_ENDED, Phase.ENDED)


_EDGES: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.OPEN: frozenset({Phase.POOL_ENDED, Phase.EVENTS_ENDED}),
    Phase.POOL_ENDED: frozenset({Phase.ENDED}),
    Phase.EVENTS_ENDED: frozenset({Phase.ENDED}),
}


class Settled(NamedTuple):
    """What :meth:`Background.settle` found when it returned."""

    done: bool
    """Every event accepted so far had run and its backgrounded hooks had ended."""
    events_ran: bool
    """Every event accepted so far had run (its hooks may still be in the pool)."""


def placement(instance: PluginInstance, hook: PluginHook) -> bool | str:
    """Where ``hook`` runs: its own ``bg`` when set, else its instance's ``background``
    (False: the event's stages; True: the worker pool; ``"io"``: the I/O lane)."""
    return hook.bg or instance.config.background


def is_backgrounded(instance: PluginInstance) -> bool:
    """Whether any hook of ``instance`` runs in the worker pool."""
    return any(placement(instance, h) is True for h in instance.obj.callbacks.values())


def io_hooks(instance: PluginInstance) -> list[PluginHook]:
    """The hooks of ``instance`` that run in the I/O lane; a PluginError if one of them
    is not ``async def`` (an instance with ``background: io``)."""
    hooks = [h for h in instance.obj.callbacks.values() if placement(instance, h) == IO_LANE]
    for hook in hooks:
        if not hook.callee.is_async:
            raise PluginError(
                f"instance {instance.ident!r} has background: io, which runs async def hooks, "
                f"but its {hook.callee.label} is not one: make it async, or drop "
                "background: io and bind the async hooks alone with bg='io' (an instance's "
                "background applies to every hook of it, whatever bg says)"
            )
    return hooks


def instance_spec(instance: PluginInstance) -> InstanceSpec:
    """How a worker builds ``instance``; a :class:`PluginError` if a worker cannot.

    A worker imports the plugin class by ``module:qualname`` and binds hooks by running
    ``plugin_initialize()``, so the class must be importable and the backgrounded hooks
    must be methods or module-level functions, not lambdas or nested functions.
    """
    ident = instance.ident
    cls = type(instance.obj)
    path = f"{cls.__module__}:{cls.__qualname__}"
    why = (
        f"instance {ident!r} has backgrounded hooks, which run in worker processes that "
        f"import its plugin class by name, but class {path}"
    )
    if "<locals>" in cls.__qualname__:
        raise PluginError(
            f"{why} is defined inside a function; define it at the top level "
            "of a module (or of the main script)"
        )
    if (
        cls.__module__ == "__main__"
        and getattr(sys.modules.get("__main__"), "__file__", None) is None
    ):
        raise PluginError(
            f"{why} is defined in an interactive session, which a worker "
            "cannot import; define it in a module"
        )
    try:
        found = import_class(path)
    except PluginError as exc:
        raise PluginError(f"{why} cannot be imported: {exc}") from exc
    if found is not cls:
        raise PluginError(f"{why} is not the object that name imports ({found!r})")
    for event, hook in instance.obj.callbacks.items():
        if placement(instance, hook) is not True:
            continue
        func = hook.callee.func
        if getattr(func, "__self__", None) is instance.obj:
            continue
        name = describe(func)
        if "<lambda>" in name or "<locals>" in name:
            raise PluginError(
                f"instance {ident!r}: the backgrounded hook for event {event!r} is {name}, a "
                "lambda or a function defined inside another; a worker process binds its "
                "hooks by running plugin_initialize() and cannot import such a callable: "
                "bind a method or a module-level function"
            )
    data = instance.config.data
    try:
        pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise PluginError(
            f"instance {ident!r}: its config cannot be sent to worker processes: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return path, data


def make_pool(settings: RiggerConfig, specs: Mapping[str, InstanceSpec]) -> WorkerPool:
    """The pool the config asks for: ``pool: local`` (multiprocessing) or ``pool: dask``."""
    if settings.pool == "dask":
        from .dask import DaskPool  # a ConfigError naming the extra when it is missing

        return DaskPool(
            specs,
            scheduler=settings.dask_scheduler,
            workers=settings.dask_workers,
            connect_timeout=settings.dask_connect_timeout,
            listen=settings.dask_listen,
        )
    return LocalPool(
        specs,
        workers=settings.workers,
        start_method=settings.start_method,
        max_tasks_per_worker=settings.max_tasks_per_worker,
        worker_memory_limit_mb=settings.worker_memory_limit_mb,
    )


class Background:
    """Backgrounded hooks of one dispatcher, reached through its port: submit, settle, wait."""

    def __init__(
        self,
        port: EventPort,
        pool: WorkerPool | None,
        lane: IoLane | None = None,
        on_settled: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self._port = port
        self._pool = pool
        self._lane = lane
        self._lock = threading.Lock()  # guards the inbox, _flush_queued and the phase
        self._inbox: list[_Result] = []
        self._flush_queued = False
        self._phase = Phase.OPEN
        self._markers: list[threading.Event] = []
        self._apply_lock = threading.Lock()  # one writer of the globals, even when direct
        self._cond = threading.Condition()
        self._next_id = 0
        self._submitted = 0  # written by the event thread only
        self._finished = 0  # done + failed + abandoned, under _cond
        self._done = 0
        self._failed = 0
        self._abandoned = 0
        # Told the work ids of settled items (the journal's done marks), when given.
        self._on_settled = on_settled

    @classmethod
    def start(
        cls,
        port: EventPort,
        instances: Mapping[str, PluginInstance],
        settings: RiggerConfig,
        coroutines: CoroutineThread,
        on_settled: Callable[[Sequence[int]], None] | None = None,
    ) -> Background:
        """Check the backgrounded instances and start a pool if there are any, and the
        I/O lane if a hook runs there (it starts no thread until its first hook).

        ``on_settled`` is told the work ids of the items that finished or failed (the
        journal's done marks)."""
        specs = {
            ident: instance_spec(instance)
            for ident, instance in instances.items()
            if is_backgrounded(instance)
        }
        lane = None
        if any([io_hooks(instance) for instance in instances.values()]):
            lane = IoLane(instances, coroutines, settings.io_concurrency, settings.io_timeout)
        pool = make_pool(settings, specs) if specs else None
        background = cls(port, pool, lane, on_settled)
        if pool is not None:
            pool.start(background)
        if lane is not None:
            lane.start(background)
        return background

    # -- the event thread ---------------------------------------------------------------

    def submit(
        self,
        hooks: tuple[tuple[PluginInstance, PluginHook], ...],
        local: dict[str, Any],
        hook_name: str,
    ) -> list[int]:
        """Hand the event's backgrounded hooks to the pool with a snapshot of their arguments;
        the work ids of the items submitted."""
        glob = self._port.global_data
        items: list[WorkItem] = []
        lane_items: list[WorkItem] = []
        for instance, hook in hooks:
            try:
                payload = pickle.dumps(hook.callee.arguments(local, glob), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self._submit_failed(instance.ident, hook_name, exc)
                continue
            self._next_id += 1
            item = WorkItem(self._next_id, instance.ident, hook_name, payload)
            (lane_items if placement(instance, hook) == IO_LANE else items).append(item)
        self._submitted += len(items) + len(lane_items)
        if items:
            self._hand_to(
                self._pool, items, "the worker pool", "no instance or hook was backgrounded"
            )
        if lane_items:
            self._hand_to(self._lane, lane_items, "the I/O lane", "no I/O-lane hook was bound")
        return [item.work_id for item in (*items, *lane_items)]

    def _hand_to(
        self, pool: WorkerPool | None, items: list[WorkItem], what: str, why_none: str
    ) -> None:
        """Submit ``items`` to ``pool`` (``what`` names it), or report them not run."""
        if pool is None or not self._phase.pool_open:
            reason = f"{what} is stopped" if pool is not None else f"{why_none} at start()"
            self.completed(len(items), [], [Failure.of(i, None, reason) for i in items])
        else:
            pool.submit(items)

    def _submit_failed(self, ident: str, event: str, exc: Exception) -> None:
        self._submitted += 1
        text = f"{type(exc).__name__}: {exc}"
        self.completed(1, [], [Failure(0, ident, event, None, f"not submitted: {text}")])

    # -- the pool's thread (ResultSink) ---------------------------------------------------

    def completed(
        self,
        count: int,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        ids: Sequence[int] = (),
    ) -> None:
        """Queue finished items for the event thread, which merges their global updates."""
        with self._lock:
            self._inbox.append((count, updates, failures, ids))
            if self._phase.direct:
                queue_flush = False
            elif self._flush_queued:
                return
            else:
                self._flush_queued = queue_flush = True
        if queue_flush:
            self._port.call_soon(self._flush)
        else:
            self._flush()

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        """Fire an event a hook fired in a worker (from the pool's thread)."""
        if self._phase.direct:
            logger.error(
                "event %r fired by a backgrounded hook after the event "
                "thread stopped was dropped",
                hook_name,
            )
            return
        # Like a hook's, this thread's events are accepted while the dispatcher drains.
        self._port.adopt_thread()
        try:
            self._port.fire_hook(hook_name, **kwargs)
        except ShuttingDown as exc:
            logger.error(
                "event %r fired by a backgrounded hook was dropped: %s", hook_name, exc
            )

    # -- settling results -----------------------------------------------------------------

    def _flush(self) -> None:
        """Merge queued results into the globals and count them (on the event thread)."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self._flush_queued = False
        if not inbox:
            return
        glob = self._port.global_data
        settled = done = failed = 0
        on_settled = self._on_settled
        with self._apply_lock:
            for count, updates, failures, ids in inbox:
                if on_settled is not None:
                    on_settled(ids or [f.work_id for f in failures])
                for update in updates:
                    recursive_update(glob, update)
                settled += count
                done += count - len(failures)
                failed += len(failures)
                for failure in failures:
                    self._report(failure)
        with self._cond:
            self._done += done
            self._failed += failed
            self._finished += settled
            self._cond.notify_all()

    def _report(self, failure: Failure) -> None:
        where = f"worker {failure.pid}" if failure.pid is not None else "the main process"
        exc = BackgroundError(
            f"backgrounded hook {failure.event!r} of instance {failure.ident!r} failed "
            f"({where}):\n{failure.text.rstrip()}"
        )
        self._port.report_failure((BackgroundError, exc, None))

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far has run and its background work settled.

        False when ``timeout`` ran out first (see :meth:`settle`).
        """
        return self.settle(timeout).done

    def settle(self, timeout: float | None = None) -> Settled:
        """Wait as :meth:`wait` does; say whether all was done, or at least the events ran.

        Events fired meanwhile (by hooks, say) are waited for too: it returns when a pass
        sees no new event.
        """
        port = self._port
        if port.on_event_thread():
            raise WouldDeadlock("wait_background() called from a hook would wait on itself")
        deadline = Deadline(timeout)
        while True:
            accepted = port.accepted_count()
            target = self._mark(deadline)
            if target is None:
                return Settled(False, False)
            with self._cond:
                while self._finished < target:
                    left = deadline.left()
                    if left == 0.0 or not self._cond.wait(left):
                        ran = port.accepted_count() == accepted
                        return Settled(self._finished >= target and ran, ran)
            if port.accepted_count() == accepted:
                return Settled(True, True)

    def _mark(self, deadline: Deadline) -> int | None:
        """Items submitted once every event accepted before now has run; None on timeout."""
        marker = threading.Event()
        box: list[int] = []

        def mark() -> None:
            box.append(self._submitted)
            marker.set()

        with self._lock:
            if self._phase.direct or not self._port.events_running():
                return self._submitted
            self._markers.append(marker)
        try:
            self._port.call_soon(mark)
            if not marker.wait(deadline.left()):
                return None
        finally:
            with self._lock:
                self._markers.remove(marker)
        return box[0] if box else self._submitted

    # -- stopping -----------------------------------------------------------------------------

    def events_ended(self) -> None:
        """The event thread has ended: results are settled on the thread that brings them."""
        with self._lock:
            to = Phase.EVENTS_ENDED if self._phase is Phase.OPEN else Phase.ENDED
            self._phase = move(_EDGES, self._phase, to)
            for marker in self._markers:
                marker.set()
        self._flush()

    def close(self, drained: bool, timeout: float | None = None) -> None:
        """End the pool: let it finish if ``drained``, else end it now and count what it held.

        Items the pool hands back unrun are counted as abandoned and logged by name.
        Results that came in meanwhile are settled by the flush job already queued on
        the event thread, or here once that thread has ended.
        """
        with self._lock:
            if not self._phase.pool_open:
                return
            to = Phase.POOL_ENDED if self._phase is Phase.OPEN else Phase.ENDED
            self._phase = move(_EDGES, self._phase, to)
        deadline = Deadline(timeout)
        left: list[WorkItem] = []
        for pool in (self._lane, self._pool):
            if pool is not None:
                left += pool.stop(abandon=not drained, timeout=deadline.left())
        if left:
            with self._cond:
                self._abandoned += len(left)
                self._finished += len(left)
                self._cond.notify_all()
            logger.error(
                "stop() abandoned %d backgrounded hook(s) not finished in time: %s",
                len(left),
                describe_items(left),
            )
        if self._phase.direct:
            self._flush()

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``background`` counters and the ``workers`` list for ``Rigger.stats()``."""
        pool = self._pool if self._phase.pool_open else None
        running = pool.running() if pool is not None else 0
        if self._lane is not None and self._phase.pool_open:
            running += self._lane.running()
        with self._cond:
            unsettled = self._submitted - self._finished
            counters = _Counters(
                max(0, unsettled - running), running, self._done, self._failed, self._abandoned
            )
        return _stats_of(counters, pool.workers() if pool is not None else [])

    @property
    def pool(self) -> WorkerPool | None:
        """The worker pool, if one was started (none without backgrounded instances)."""
        return self._pool

    @staticmethod
    def idle_stats() -> dict[str, Any]:
        """What :meth:`stats` says of a dispatcher with no background yet: all zero."""
        return _stats_of(_Counters(0, 0, 0, 0, 0), [])


class _Counters(NamedTuple):
    """Backgrounded hooks by where they are: the ``background`` entry of ``stats()``."""

    queued: int
    running: int
    done: int
    failed: int
    abandoned: int


def _stats_of(counters: _Counters, workers: list[WorkerInfo]) -> dict[str, Any]:
    """The ``background`` and ``workers`` entries of ``Rigger.stats()``."""
    return {
        "background": counters._asdict(),
        "workers": [
            {
                "pid": w.pid,
                "address": w.address,
                "rss_bytes": w.rss_bytes,
                "cpu_percent": w.cpu_percent,
                "cpu_seconds": w.cpu_seconds,
                "tasks_done": w.tasks_done,
                "slot": w.slot,
                "slot_cpu_seconds": w.slot_cpu_seconds,
                "slot_tasks_done": w.slot_tasks_done,
            }
            for w in workers
        ],
    }
