"""The interface between the dispatcher and whatever runs backgrounded hooks.

The dispatcher's side (:mod:`rigger_mp.pool.background`) talks to a pool only through
:class:`WorkerPool`: ``start(sink)``, ``submit(items)``, ``running()``, ``workers()``,
``stop()``. Results come back through the :class:`ResultSink` given to ``start``.
:class:`~rigger_mp.pool.local.LocalPool` is the ``multiprocessing`` implementation; a
distributed engine can stand in for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol


class WorkItem(NamedTuple):
    """One backgrounded hook to run: made on the event thread, run by a worker."""

    work_id: int
    ident: str
    """The plugin instance whose hook runs."""
    event: str
    payload: bytes
    """The hook's keyword arguments, pickled on the event thread: a snapshot."""


InstanceSpec = tuple[str, Mapping[str, Any]]
"""How a worker builds an instance: ``("package.module:Class", instance config)``."""


class Failure(NamedTuple):
    """A backgrounded hook that did not finish: what it was, where, and why."""

    work_id: int
    ident: str
    event: str
    pid: int | None
    text: str

    @classmethod
    def of(cls, item: WorkItem, pid: int | None, text: str) -> Failure:
        """The failure of work item ``item`` (in worker ``pid``, or None: not run)."""
        return cls(item.work_id, item.ident, item.event, pid, text)


class ResultSink(Protocol):
    """What a pool reports to, from its own thread."""

    def completed(
        self,
        count: int,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        ids: Sequence[int] = (),
    ) -> None:
        """``count`` items finished (``failures`` among them); ``updates`` are their globals.

        ``ids``: the work ids of the ``count`` items, failed ones included; a report of
        failures alone may leave it empty (the failures carry their ids).
        """

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        """A hook in a worker fired an event."""


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker, as :meth:`WorkerPool.workers` reports it (for ``Rigger.stats()``)."""

    pid: int
    rss_bytes: int
    cpu_percent: float
    """CPU use over the time since the previous look (the worker's start, at first)."""
    tasks_done: int
    cpu_seconds: float = 0.0
    """CPU time the worker process has used since it started."""
    address: str | None = None
    """Where the worker is, when not a local process (a Dask worker's ``tcp://...``)."""
    slot: int | None = None
    """Its slot in a local pool (0 to the pool's size less one): a worker started in
    place of one that ended takes its slot. None for a Dask worker."""
    slot_cpu_seconds: float = 0.0
    """CPU time of every worker that held its slot, its own so far included (so it never
    goes back when a worker is replaced); its own ``cpu_seconds`` for a Dask worker."""
    slot_tasks_done: int = 0
    """Hooks run by every worker that held its slot, likewise."""


class WorkerPool(Protocol):
    """The interface between the dispatcher and whatever runs backgrounded hooks."""

    def start(self, sink: ResultSink) -> None:
        """Start the workers; results go to ``sink``."""

    def submit(self, items: Sequence[WorkItem]) -> None:
        """Queue work items; never blocks on the workers. Thread-safe."""

    def running(self) -> int:
        """How many items a worker is running now."""

    def workers(self) -> list[WorkerInfo]:
        """The live workers and what they cost."""

    def stop(self, abandon: bool, timeout: float | None = None) -> list[WorkItem]:
        """End every worker and helper process; return the items not run.

        ``abandon=False`` lets workers finish what they hold; ``abandon=True`` ends them
        at once. Items still pending, or held by a worker that was ended, are returned.
        """


def describe_items(items: Iterable[WorkItem]) -> str:
    """A short list of ``instance.event`` names for a log line."""
    names = [f"{i.ident}.{i.event}" for i in items]
    text = ", ".join(names[:10])
    return text + (f" and {len(names) - 10} more" if len(names) > 10 else "")
