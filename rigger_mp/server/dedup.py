"""The dedup window: the fire ids the server process accepted lately, and their tids.

A client that lost a fire's reply to a broken connection cannot know whether the fire was
accepted; it resends it with the same ``id``, and the window answers with the first
fire's tid instead of running the event again. It holds the last ``dedup_window`` ids
accepted (a dict for the look-up, a deque for their order: forgetting the oldest is
O(1)); the oldest is forgotten first. With a journal the ids are committed with their
fires and read back at start (:meth:`DedupWindow.load`), so the window outlives a
restart of the dispatcher.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DedupWindow:
    """The last ``size`` fire ids accepted, each with its tid (``size`` 0: none kept)."""

    __slots__ = ("_order", "_stale", "_tids", "duplicates", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.duplicates = 0
        """Fires answered as duplicates (:meth:`claim`)."""
        self._tids: dict[str, str] = {}
        # The ids in the order added: a deque of strings, which the garbage collector
        # never walks (a deque of tuples it would walk, all 100,000 of them, now and then).
        self._order: deque[str] = deque()
        self._stale: dict[str, int] = {}
        """Places in :attr:`_order` of ids forgotten (and maybe added again since): passed
        over when they come out, so that they do not drop the id's newer entry."""

    def __len__(self) -> int:
        return len(self._tids)

    def seen(self, fire_id: str) -> str | None:
        """The tid of the fire accepted with ``fire_id`` within the window, or None."""
        return self._tids.get(fire_id)

    def claim(self, fire_id: str, tid: str) -> str | None:
        """Keep ``fire_id`` as accepted as ``tid`` and return None; or, if the window has
        it, the tid it was first accepted as (a duplicate, counted). One look-up either way:
        this runs for every fire with an id."""
        if not self.size:
            return None
        first = self._tids.setdefault(fire_id, tid)
        if first is not tid:
            self.duplicates += 1
            return first
        order = self._order
        order.append(fire_id)
        if len(order) > self.size:  # one added, so at most one over
            old = order.popleft()
            if self._stale and old in self._stale:
                self._pass_over(old)
            else:
                del self._tids[old]
        return None

    def forget(self, fire_ids: Iterable[str]) -> None:
        """These fires were not accepted after all (their journal commit failed): a resend
        of them runs."""
        for fire_id in fire_ids:
            if self._tids.pop(fire_id, None) is not None:
                self._stale[fire_id] = self._stale.get(fire_id, 0) + 1

    def _pass_over(self, old: str) -> None:
        left = self._stale[old] - 1
        if left:
            self._stale[old] = left
        else:
            del self._stale[old]

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add ``(id, tid)`` pairs, oldest first (the journal's, at start)."""
        for fire_id, tid in pairs:
            self.claim(fire_id, tid)
