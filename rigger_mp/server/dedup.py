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

    __slots__ = ("_n", "_order", "_tids", "duplicates", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.duplicates = 0
        """Fires answered as duplicates (:meth:`first_of`)."""
        self._tids: dict[str, tuple[str, int]] = {}
        """id -> (tid, the number it was added as): a forgotten then re-added id is not
        dropped by its older place in :attr:`_order`."""
        self._order: deque[tuple[str, int]] = deque()
        self._n = 0

    def __len__(self) -> int:
        return len(self._tids)

    def seen(self, fire_id: str) -> str | None:
        """The tid of the fire accepted with ``fire_id`` within the window, or None."""
        entry = self._tids.get(fire_id)
        return None if entry is None else entry[0]

    def first_of(self, fire_id: str) -> str | None:
        """:meth:`seen`, counting a duplicate when it is one."""
        tid = self.seen(fire_id)
        if tid is not None:
            self.duplicates += 1
        return tid

    def add(self, fire_id: str, tid: str) -> None:
        """Keep ``fire_id`` as accepted as ``tid``; forget the oldest beyond the size."""
        if not self.size:
            return
        self._n = n = self._n + 1
        self._tids[fire_id] = (tid, n)
        order = self._order
        order.append((fire_id, n))
        while len(order) > self.size:
            old, number = order.popleft()
            entry = self._tids.get(old)
            if entry is not None and entry[1] == number:
                del self._tids[old]

    def forget(self, fire_ids: Iterable[str]) -> None:
        """These fires were not accepted after all (their journal commit failed): a resend
        of them runs."""
        for fire_id in fire_ids:
            self._tids.pop(fire_id, None)

    def load(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add ``(id, tid)`` pairs, oldest first (the journal's, at start)."""
        for fire_id, tid in pairs:
            self.add(fire_id, tid)
