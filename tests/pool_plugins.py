"""Plugin classes for the worker-pool tests: importable by name, as workers need."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import Any, ClassVar

from rigger_mp import RiggerBasePlugin

Updates = tuple[dict[str, Any] | None, dict[str, Any] | None]


class PidPlugin(RiggerBasePlugin):
    """Backgrounded hook ``work``: reports the worker's pid and what it was given."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("work", bg=True)

    def work(self, n: int = 0, artifact_path: str | None = None) -> Updates:
        return {"bg_local": n}, {"pids": [os.getpid()], "seen": [(n, artifact_path)]}


class InstancePlugin(RiggerBasePlugin):
    """Backgrounded by its instance config (``background: true``), not by ``bg=True``."""

    def plugin_initialize(self) -> None:
        self.initialized_in = os.getpid()
        self.register_plugin_hook("work")

    def work(self) -> Updates:
        return None, {"instance_pids": [(os.getpid(), self.initialized_in)]}


class FifoPlugin(RiggerBasePlugin):
    """``block``: writes its pid to the FIFO ``fifo`` then waits forever (to be killed).

    ``exit``: ends the worker with ``os._exit(code)``. ``boom``: raises.
    """

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("block", bg=True)
        self.register_plugin_hook("exit", bg=True)
        self.register_plugin_hook("boom", bg=True)

    def block(self, fifo: str) -> None:
        with open(fifo, "w") as stream:
            stream.write(f"{os.getpid()}\n")
        os.read(os.open(fifo + ".never", os.O_RDONLY), 1)  # blocks: nobody writes it

    def exit(self, code: int) -> None:
        os._exit(code)

    def boom(self) -> None:
        raise ValueError("boom from the worker")


class FirePlugin(RiggerBasePlugin):
    """Backgrounded hook that fires another event from inside the worker."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_job", bg=True)

    def start_job(self, job: str) -> None:
        self.fire_hook("job_fired", job=job, from_pid=os.getpid())


class MemoryPlugin(RiggerBasePlugin):
    """Backgrounded hook that holds ``mb`` megabytes for the worker's life."""

    hoard: ClassVar[list[bytes]] = []

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("grow", bg=True)

    def grow(self, mb: int) -> Updates:
        self.hoard.append(b"x" * (mb * 2**20))
        return None, {"grow_pids": [os.getpid()]}


class LambdaPlugin(RiggerBasePlugin):
    """Binds a lambda as a backgrounded hook: refused at start()."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("work", lambda: None, bg=True)


class HogPlugin(RiggerBasePlugin):
    """Backgrounded hook ``hog``: burns ``cpu`` seconds of the worker's CPU time."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("hog", bg=True)

    def hog(self, cpu: float) -> Updates:
        end = time.process_time() + cpu
        digest = b""
        while time.process_time() < end:
            digest = hashlib.sha256(digest).digest()
        return None, {"hog_pids": [os.getpid()]}


def hold_boot(fifo: str) -> None:
    """Write this process's pid to the FIFO ``fifo``, then block for good (to be ended)."""
    with open(fifo, "w") as stream:
        stream.write(f"{os.getpid()}\n")
    threading.Event().wait()  # nobody sets it


class BootGate:
    """Put into an instance's config, it holds a worker in its boot: the worker unpickles
    its arguments, this among them, before it runs any of its own code."""

    def __init__(self, fifo: str) -> None:
        self.fifo = fifo

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return hold_boot, (self.fifo,)
