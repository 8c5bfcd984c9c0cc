"""Plugin classes for the pool contract tests (importable by name, as workers need)."""

from __future__ import annotations

import os
import time
from typing import Any

from rigger_mp import RiggerBasePlugin

Updates = tuple[dict[str, Any] | None, dict[str, Any] | None]


def _append(path: str, line: str) -> None:
    """One line, in one write: lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class CountPlugin(RiggerBasePlugin):
    """``work`` writes ``ident pid`` to the file ``log``; ``warm`` and ``noop`` do nothing;
    ``spin`` burns ``ms`` of CPU. ``plugin_initialize`` writes ``ident pid`` to ``inits``."""

    def plugin_initialize(self) -> None:
        if self.data.get("inits"):
            _append(self.data["inits"], f"{self.ident} {os.getpid()}")
        self.register_plugin_hook("work", self.work, bg=True)
        self.register_plugin_hook("warm", self.noop, bg=True)
        self.register_plugin_hook("noop", self.noop, bg=True)
        self.register_plugin_hook("spin", self.spin, bg=True)

    def work(self) -> Updates:
        _append(self.data["log"], f"{self.ident} {os.getpid()}")
        return None, {"ran": [self.ident]}

    def noop(self) -> None:
        return None

    def spin(self, ms: int) -> Updates:
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        return None, {"spun": [os.getpid()]}


class BlockPlugin(RiggerBasePlugin):
    """``work`` writes the worker's pid to the FIFO ``fifo``, then blocks until a byte
    arrives on ``fifo.never`` (or the worker is killed)."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("work", self.work, bg=True)
        self.register_plugin_hook("warm", self.noop, bg=True)

    def work(self) -> None:
        fifo = self.data["fifo"]
        with open(fifo, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        fd = os.open(fifo + ".never", os.O_RDONLY)
        try:
            os.read(fd, 1)
        finally:
            os.close(fd)

    def noop(self) -> None:
        return None
