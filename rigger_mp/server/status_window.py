"""The ``task_status`` window: the last events fired over TCP, by tid, and their status.

A task is kept as it is while it is queued or running. The intake queues a
:meth:`StatusWindow.settle` job behind each batch it fires; run on the event thread after
the batch's events, it swaps every task that has run for its small status record (done,
or failed with the clipped error), so the window holds no event's namespace (a task
kept whole held its event's: a 1 MB message of ``[[],[],...]`` kept 24 MB). The window
is bounded in count (``status_window``) and in bytes (``status_window_bytes``, estimated
per record); the oldest are forgotten first.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .. import protocol as proto
from ..errors import ShuttingDown, describe_error

if TYPE_CHECKING:
    from ..core.task import Task

STATUS_WINDOW: Final = 10_000
"""Default of ``status_window``: ``task_status`` knows the last this many events fired
over TCP (and no older)."""
STATUS_WINDOW_BYTES: Final = 16 * 1024 * 1024
"""Default of ``status_window_bytes``: the estimated size of the window's records."""
ENTRY_BYTES: Final = 120
"""Estimated bytes of one entry besides its tid (dict slot, order slot, tid object)."""
FAILED_BYTES: Final = 250
"""Estimated bytes of a failure record besides its message (the error mapping)."""

_DONE: Final = "done"
Record = str | dict[str, str]
"""What the window keeps of a task that has run: ``"done"``, or its error mapping."""


def _record(task: Task) -> Record:
    """The status record of a task that has run."""
    exc = ShuttingDown("cancelled") if task.cancelled() else task.exception()
    if exc is None:
        return _DONE
    code = proto.SHUTTING_DOWN if isinstance(exc, ShuttingDown) else proto.HOOK_FAILED
    error: dict[str, str] = proto.error_reply(code, describe_error(exc))["error"]
    return error


def _cost(tid: str, entry: Task | Record) -> int:
    """The estimated bytes of one entry of the window."""
    if isinstance(entry, dict):
        return ENTRY_BYTES + len(tid) + FAILED_BYTES + len(entry["message"])
    return ENTRY_BYTES + len(tid)


class StatusWindow:
    """The last ``size`` events fired over TCP, within ``max_bytes``.

    The intake thread remembers and answers; the event thread settles (under the lock).
    """

    def __init__(self, size: int | None = None, max_bytes: int | None = None) -> None:
        self.size = STATUS_WINDOW if size is None else size
        self.max_bytes = STATUS_WINDOW_BYTES if max_bytes is None else max_bytes
        self._lock = threading.Lock()
        self._known: dict[str, Task | Record] = {}
        self._order: deque[str] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._known)

    @property
    def nbytes(self) -> int:
        """The estimated bytes of the records kept now."""
        return self._bytes

    def remember(self, tasks: Sequence[Task]) -> None:
        """Keep ``tasks``, forgetting the oldest beyond the window."""
        with self._lock:
            known, append = self._known, self._order.append
            added = 0
            for task in tasks:
                tid = task.tid
                old = known.get(tid)
                if old is not None:  # tids are unique; should one come again, count it once
                    added -= _cost(tid, old)
                known[tid] = task
                append(tid)
                added += ENTRY_BYTES + len(tid)
            self._bytes += added
            self._evict()

    def settle(self, tasks: Sequence[Task]) -> None:
        """Swap each of ``tasks`` that has run for its status record (on the event thread,
        after their events)."""
        with self._lock:
            known = self._known
            grown = 0
            for task in tasks:
                tid = task.tid
                if known.get(tid) is task and task.done():
                    record = known[tid] = _record(task)
                    if isinstance(record, dict):
                        grown += FAILED_BYTES + len(record["message"])
            self._bytes += grown
            self._evict()

    def _evict(self) -> None:
        """Forget the oldest entries beyond the count or the bytes (called under the lock)."""
        known, order = self._known, self._order
        size, max_bytes = self.size, self.max_bytes
        while order and (len(order) > size or self._bytes > max_bytes):
            tid = order.popleft()
            entry = known.pop(tid, None)
            if entry is not None:
                self._bytes -= _cost(tid, entry)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._order.clear()
            self._bytes = 0

    def status_line(self, tid: str) -> bytes:
        """The reply line of ``task_status`` for ``tid``."""
        with self._lock:
            entry = self._known.get(tid)
        if entry is None:
            return proto.error_line(
                proto.UNKNOWN_TASK,
                f"no task {tid!r} among the last events fired over TCP (the window keeps "
                f"at most {self.size}, within {self.max_bytes} bytes)",
                tid,
            )
        if isinstance(entry, (str, dict)):
            record: Record = entry
        elif not entry.done():
            status = "running" if entry.running() else "queued"
            return proto.reply_line({"ok": True, "tid": tid, "status": status})
        else:
            record = _record(entry)
        reply: dict[str, Any] = {"ok": True, "tid": tid}
        if isinstance(record, str):
            reply["status"] = record
        else:
            reply["status"] = "failed"
            reply["error"] = record
        return proto.reply_line(reply)
