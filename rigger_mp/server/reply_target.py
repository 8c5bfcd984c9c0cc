"""Where the server process writes a message's reply: a TCP connection or one HTTP call.

The server numbers the messages of each target (``seq``) and hands it each reply by that
number, in any order; the target writes them in order. A TCP connection
(:class:`~.connection.Connection`) writes them to its socket; an HTTP call
(:class:`~.http.HttpCall`) has one message, whose reply resolves its future.
"""

from __future__ import annotations

from typing import Protocol


class ReplyTarget(Protocol):
    """What the server uses of whoever a reply goes to."""

    rids: set[int]
    """The requests the main process owes this target a reply to (the server's ledger)."""

    def put(self, seq: int, line: bytes) -> bool:
        """Queue the reply line to message ``seq``; True if :meth:`flush` has something to
        write now. A target that is gone drops it (False)."""

    def flush(self) -> None:
        """Write the replies that are due."""

    def answered(self, now: float) -> None:
        """Replies from the main process were put: write them (``now``: the loop's time)."""

    def error(self, seq: int, code: str, message: str) -> None:
        """Answer message ``seq`` with an error line."""

    @property
    def lost(self) -> bool:
        """The target is gone: nothing more is written to it."""


Ack = tuple[ReplyTarget, int, str, bool]
"""``(target, message number, tid, duplicate)`` of a fire to ack once its batch is in the
pipe; ``duplicate``: its id was accepted before, as ``tid``, and it is not run again."""
