"""A point in time a wait must not pass: one object instead of ``monotonic() + timeout``."""

from __future__ import annotations

import time


class Deadline:
    """``timeout`` seconds from now; ``None`` never expires.

    Every wait that spends one timeout over several steps takes :meth:`left` at each
    step, so the steps together never wait longer than the timeout.
    """

    __slots__ = ("at", "timeout")

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        """The timeout it was made from, for messages."""
        self.at = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds until the deadline, never negative; ``None`` when there is none."""
        if self.at is None:
            return None
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed (never without one)."""
        return self.at is not None and time.monotonic() >= self.at
