"""The replies of one connection, written in the order of its messages.

Messages are numbered as they arrive. A reply can come back before the replies to
messages ahead of it (an ack is written by the server process at once, a ``task_status``
ahead of it waits for the main process): it waits in ``early`` until every reply before
it is due.
"""

from __future__ import annotations


class ReplyOrder:
    """Reply lines by message number; :attr:`due` holds those that may be written now."""

    __slots__ = ("due", "early", "next")

    def __init__(self) -> None:
        self.next = 0
        """The number of the first message whose reply is not due yet."""
        self.due: list[bytes] = []
        self.early: dict[int, bytes] = {}

    def put(self, seq: int, line: bytes) -> bool:
        """The reply to message ``seq``; True if it (and maybe later ones) is now due."""
        if seq != self.next:
            self.early[seq] = line
            return False
        due = self.due
        due.append(line)
        seq += 1
        early = self.early
        while early and seq in early:
            due.append(early.pop(seq))
            seq += 1
        self.next = seq
        return True

    def take(self) -> bytes:
        """The replies due, joined; none is due afterwards."""
        data = b"".join(self.due)
        self.due.clear()
        return data

    def has(self, seq: int) -> bool:
        """Whether message ``seq`` has its reply (due, written or early)."""
        return seq < self.next or seq in self.early

    def clear(self) -> None:
        self.due.clear()
        self.early.clear()
