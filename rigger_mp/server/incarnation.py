"""One server process and the two pipes to it, as the supervisor and the intake see it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Any

from .channel import BlockingReader, QueuedWriter


class Incarnation:
    """One server process and the two pipes to it."""

    def __init__(
        self, process: subprocess.Popen[bytes], reader: BlockingReader, writer: QueuedWriter
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        self.leftover: list[Any] = []
        self.started = time.monotonic()

    def close(self, grace: float) -> None:
        """Close both pipes; called once the process has exited, so writes fail at once.

        The writer thread is joined for at most ``grace`` seconds: a process forked
        meanwhile could hold the pipe open.
        """
        with contextlib.suppress(OSError):
            self.reader.close()
        self.writer.close()
        self.writer.join(grace)
