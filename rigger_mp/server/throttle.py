"""A throttled log call: what a client can make happen over and over must not flood the log."""

from __future__ import annotations

import time
from typing import Final

from .. import printable

logger = printable.logger("rigger_mp.server")

LOG_EVERY: Final = 10.0
"""Seconds between two log records of one kind that an attacker can cause (accept
failures, faults while handling a message): the next one counts those skipped."""


class Throttled:
    """One logger call that logs at most once per :data:`LOG_EVERY` seconds, counting the
    rest (the next record says how many were skipped)."""

    def __init__(self, level: int, message: str) -> None:
        self.level = level
        self.message = message
        self.next = 0.0
        self.skipped = 0
        self.total = 0

    def __call__(self, *args: object, exc_info: BaseException | None = None) -> None:
        self.total += 1
        now = time.monotonic()
        if now < self.next:
            self.skipped += 1
            return
        self.next = now + LOG_EVERY
        message = self.message
        if self.skipped:
            message += f" ({self.skipped} more like it in the last {LOG_EVERY:.0f} s)"
            self.skipped = 0
        logger.log(self.level, message, *args, exc_info=exc_info)
