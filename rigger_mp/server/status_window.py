"""The ``task_status`` window: the last events fired over TCP, by tid, and their reply line."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .. import protocol as proto
from ..errors import ShuttingDown, describe_error

if TYPE_CHECKING:
    from ..core.task import Task

STATUS_WINDOW: Final = 10_000
"""``task_status`` knows the last this many events fired over TCP (and no older)."""


class StatusWindow:
    """The last :data:`STATUS_WINDOW` tasks fired over TCP; only the intake thread uses it."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._tasks)

    def remember(self, tasks: list[Task]) -> None:
        """Keep ``tasks``, forgetting the oldest beyond the window."""
        known = self._tasks
        order = self._order
        for task in tasks:
            known[task.tid] = task
            order.append(task.tid)
        excess = len(order) - STATUS_WINDOW
        if excess > 0:
            pop, popleft = known.pop, order.popleft
            for _ in range(excess):
                pop(popleft(), None)

    def clear(self) -> None:
        self._tasks.clear()
        self._order.clear()

    def status_line(self, tid: str) -> bytes:
        """The reply line of ``task_status`` for ``tid``."""
        task = self._tasks.get(tid)
        if task is None:
            return proto.error_line(
                proto.UNKNOWN_TASK,
                f"no task {tid!r} among the last {STATUS_WINDOW} events fired over TCP",
                tid,
            )
        reply: dict[str, Any] = {"ok": True, "tid": tid}
        if not task.done():
            reply["status"] = "running" if task.running() else "queued"
        else:
            exc = task.exception()
            if exc is None:
                reply["status"] = "done"
            else:
                reply["status"] = "failed"
                code = proto.SHUTTING_DOWN if isinstance(exc, ShuttingDown) else proto.HOOK_FAILED
                reply["error"] = proto.error_reply(code, describe_error(exc))["error"]
        return proto.reply_line(reply)
