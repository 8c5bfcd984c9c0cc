"""What both pools do with batches: cut them to a measured cost and read their results.

A pool hands work to its workers in batches, since one trip to a worker (a manager
queue's ``put``, a Dask task) costs far more than a no-op hook. :class:`Cutter` sizes
each batch to about a target amount of work, from an average of what items cost so far;
:class:`SentBatch` keeps a batch a worker holds and turns the worker's
:class:`~rigger_mp.pool.worker_messages.Done` messages into the global updates and
failures that :func:`report` hands to the dispatcher's
:class:`~rigger_mp.pool.interface.ResultSink`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import printable
from .interface import Failure, ResultSink, WorkItem
from .worker_messages import Done

logger = printable.logger("rigger_mp")

PREFETCH = 2
"""Unfinished batches a worker may hold: one running, one waiting to run."""
MAX_BATCH = 1000
"""Most items in one batch."""
MIN_ITEM_SECONDS = 1e-7
"""The least an item is taken to cost, so that no measure sizes a batch past reason."""
SMOOTHING = 0.3
"""How much the latest measure moves the per-item cost: recent work counts most."""


class Cutter:
    """Cuts pending items into batches of about ``target_seconds`` of measured work."""

    def __init__(self, target_seconds: float) -> None:
        self.target_seconds = target_seconds
        self.item_seconds = target_seconds
        """The average cost of an item; until measured, assume heavy (one per batch)."""
        self.count = 0
        """Batches cut so far; the next batch's id."""

    def cut(self, pending: deque[WorkItem], workers: int) -> tuple[int, list[WorkItem]]:
        """Take the next batch off ``pending``: its id and items.

        At most :data:`MAX_BATCH` items, at most an even share among ``workers``, and
        about ``target_seconds`` of work: big batches for cheap hooks, one item for heavy.
        """
        size = min(
            MAX_BATCH,
            math.ceil(len(pending) / max(1, workers)),
            max(1, int(self.target_seconds / self.item_seconds)),
        )
        bid = self.count
        self.count += 1
        return bid, [pending.popleft() for _ in range(size)]

    def measured(self, done: Done) -> None:
        """Fold a worker's report of ``done.finished`` items in ``done.seconds`` into the
        average."""
        per_item = max(done.seconds / done.finished, MIN_ITEM_SECONDS)
        self.item_seconds += SMOOTHING * (per_item - self.item_seconds)


class Outcome(NamedTuple):
    """Settled items, as the :class:`ResultSink` takes them."""

    settled: int
    updates: list[Mapping[str, Any]]
    failures: list[Failure]
    ids: Sequence[int] = ()
    """The work ids of the items settled; empty for failures alone (they carry theirs)."""

    @classmethod
    def failed(cls, failures: list[Failure]) -> Outcome:
        """Failures alone."""
        return cls(len(failures), [], failures)


@dataclass(eq=False)
class SentBatch:
    """A batch handed to a worker; ``items[:reported]`` are settled."""

    items: list[WorkItem]
    reported: int = 0

    @property
    def finished(self) -> bool:
        """Whether every item is settled."""
        return self.reported >= len(self.items)

    def rest(self) -> list[WorkItem]:
        """The items not settled yet, in order."""
        return self.items[self.reported :]

    def take(self, done: Done, pid: int | None, base: int = 0, where: str = "") -> Outcome:
        """Settle the next ``done.finished`` items from the worker's report.

        ``base``: the index of the first item the worker was given (its result indexes
        count from there); ``where`` goes before each error's text.
        """
        updates: list[Mapping[str, Any]] = []
        failures: list[Failure] = []
        for index, glob, error in done.results:
            if error is not None:
                failures.append(Failure.of(self.items[base + index], pid, where + error))
            elif glob is not None:
                updates.append(glob)
        end = self.reported + done.finished
        ids = [item.work_id for item in self.items[self.reported : end]]
        self.reported = end
        return Outcome(done.finished, updates, failures, ids)


def report(sink: ResultSink | None, outcome: Outcome) -> None:
    """Hand ``outcome`` to ``sink``; a sink that raises is logged, never the pool's end."""
    assert sink is not None, "the pool reports only once started"
    try:
        sink.completed(*outcome)
    except Exception:
        logger.exception("reporting background results failed")
