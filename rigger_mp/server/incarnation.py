"""One server process and the two pipes to it, as the supervisor and the intake see it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from multiprocessing.connection import wait
from typing import Any

from ..errors import RiggerError
from .channel import BlockingReader, QueuedWriter
from .pipe_messages import Ready, ServerSettings


class ServerStartError(RiggerError):
    """The TCP server could not be started (address in use, bad address...)."""


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

    def greet(self, settings: ServerSettings, timeout: float, grace: float) -> None:
        """Send the process its settings and wait (up to ``timeout``) until it says it is
        listening; else kill it, close the pipes and raise :class:`ServerStartError`."""
        process = self.process
        try:
            self.writer.send(settings)
            if not wait([self.reader.fd], timeout):
                raise ServerStartError(
                    f"the TCP server process did not start within {timeout:.0f} s"
                )
            objs = self.reader.recv()
            if type(objs[0]) is not Ready:
                raise ServerStartError(f"the TCP server process sent {objs[0]!r} first")
        except BaseException as exc:
            process.kill()
            process.wait()
            self.close(grace)
            if not isinstance(exc, (EOFError, OSError)):
                raise
            raise ServerStartError(
                f"the TCP server process exited while starting (exit code {process.returncode})"
            ) from exc
        self.leftover = objs[1:]

    def close(self, grace: float) -> None:
        """Close both pipes; called once the process has exited, so writes fail at once.

        The writer thread is joined for at most ``grace`` seconds: a process forked
        meanwhile could hold the pipe open.
        """
        with contextlib.suppress(OSError):
            self.reader.close()
        self.writer.close()
        self.writer.join(grace)
