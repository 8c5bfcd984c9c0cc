"""The messages between the pool and the processes that run its hooks, one type each.

Feeder to a local worker, on the worker's manager queue: :class:`Batch`, then
:class:`Stop`. A worker (local or Dask) to the main process, on its result pipe or
connection: :class:`Done`, :class:`Fire`, and from a local worker :class:`Retire`.

Each is a :class:`~typing.NamedTuple`, read by field name. The two that carry many
items (:class:`Batch`, :class:`Done`) pickle them as plain tuples and rebuild the named
ones on arrival: pickle builds each named tuple through a Python-level call, each way,
which made a batch of 500 items seven times as costly to send as bare tuples.

A local worker also records in a shared slot (``RawArray("q", 2)``) the batch it
claimed and the index of the item it is running.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

from .interface import WorkItem

NO_BATCH = -1
"""A slot's value before its worker has claimed a batch (or started its first item)."""

FLUSH_SECONDS = 0.005
"""A worker sends the results it holds after this much work, and at the end of a batch."""


class Batch(NamedTuple):
    """Work items for one worker, under the id the pool tracks them by."""

    bid: int
    items: list[WorkItem]

    def __reduce__(self) -> tuple[Any, ...]:
        return _batch, (self.bid, list(map(tuple, self.items)))


class Stop(NamedTuple):
    """Finish what was queued before this, then exit."""


class ItemResult(NamedTuple):
    """How one item of a batch ended; only items with updates or an error are sent."""

    position: int
    """The item's place in the items the worker was given."""
    updates: Mapping[str, Any] | None
    """The hook's global updates, when it returned some."""
    error: str | None
    """The traceback text, when the hook raised."""


class Done(NamedTuple):
    """The next ``finished`` items of batch ``bid`` ended, in order."""

    bid: int
    finished: int
    seconds: float
    """The work they took (the pool sizes batches from it)."""
    results: list[ItemResult]
    cpu_seconds: float
    """CPU time the worker's process has used so far."""

    def __reduce__(self) -> tuple[Any, ...]:
        rows = list(map(tuple, self.results))
        return _done, (self.bid, self.finished, self.seconds, rows, self.cpu_seconds)


class Fire(NamedTuple):
    """A plugin in a worker called ``fire_hook``: the main process fires the event."""

    hook_name: str
    kwargs: dict[str, Any]


class Retire(NamedTuple):
    """The worker exits after this; items from ``next_index`` of ``bid`` on did not run."""

    bid: int
    next_index: int
    reason: str


_work_item = partial(tuple.__new__, WorkItem)
_item_result = partial(tuple.__new__, ItemResult)


def _batch(bid: int, rows: list[tuple[Any, ...]]) -> Batch:
    """A :class:`Batch` from its pickled rows (C-level ``tuple.__new__`` per item)."""
    return Batch(bid, list(map(_work_item, rows)))


def _done(
    bid: int, finished: int, seconds: float, rows: list[tuple[Any, ...]], cpu_seconds: float
) -> Done:
    """A :class:`Done` from its pickled rows."""
    return Done(bid, finished, seconds, list(map(_item_result, rows)), cpu_seconds)


WorkerMessage = Done | Fire | Retire
"""What a local worker sends on its result pipe."""
