"""Starting and ending the local pool's processes: the manager, the workers, the helpers.

:class:`Spawner` starts a manager process, which serves the workers' queues, and the
workers fed from it. :class:`ManagerProcess` keeps it with a
sentinel of its own: a pipe whose only write end the manager process holds, so that its
death, however it comes, is end of file on the read end, which the pool's collector
waits on beside the workers' sentinels (no polling).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection as mpc
import os
import signal
import threading
from collections.abc import Mapping
from multiprocessing.context import BaseContext
from multiprocessing.managers import SyncManager
from multiprocessing.process import BaseProcess
from typing import Any

from ..errors import PluginError
from .interface import InstanceSpec
from .parent_watch import manager_initializer
from .worker import worker_main
from .worker_handle import WorkerHandle
from .worker_messages import NO_BATCH


def default_start_method() -> str:
    """``forkserver`` where it exists (safe beside threads), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def exit_cause(exitcode: int | None) -> str:
    """A readable reason for a process's end, from its exit code."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {name} ({-exitcode})"
    return f"exited with code {exitcode}"


_helpers_started: set[int] = set()  # pids of the processes that started them here
_helpers_lock = threading.Lock()


def start_helpers_isolated(start_method: str) -> None:
    """Start ``multiprocessing``'s resource tracker and fork server away from the cwd.

    Both are ``python -c`` processes, so ``''`` (the working directory they inherit)
    comes first on their ``sys.path`` while they import ``pickle``, ``socket`` and the
    rest: a ``pickle.py`` in the directory the dispatcher runs in would run in them, and
    every worker forked from the fork server would inherit it. Started with the standard
    library's own directory as their working directory, ``''`` finds only what comes
    next anyway. Done once per process, before the first pool starts; the working
    directory is changed back at once (workers still start in the parent's, which
    ``multiprocessing`` passes them). Helpers already running are left alone.
    """
    if start_method == "fork":
        return
    from multiprocessing import forkserver, resource_tracker

    with _helpers_lock:
        if os.getpid() in _helpers_started:
            return
        _helpers_started.add(os.getpid())
        here = os.getcwd()
        os.chdir(os.path.dirname(os.__file__))
        try:
            resource_tracker.ensure_running()
            if start_method == "forkserver":
                forkserver.ensure_running()
        finally:
            os.chdir(here)


class ManagerProcess:
    """A started manager process: its queues, its pid, and whether it is gone."""

    def __init__(self, manager: SyncManager, gone: mpc.Connection, pid: int) -> None:
        self.manager = manager
        self.gone = gone
        """Ready (end of file) once the manager process has ended: wait on it."""
        self.pid = pid

    def queue(self) -> Any:
        """A new queue served by the manager (a proxy)."""
        return self.manager.Queue()

    def ended(self) -> bool:
        """Whether the manager process has ended (a look at the sentinel, not a wait)."""
        return self.gone.closed or self.gone.poll()

    def shutdown(self) -> None:
        """End the manager process (a dead one is only reaped) and close the sentinel."""
        self.manager.shutdown()
        self.gone.close()


def start_manager(ctx: BaseContext, start_method: str) -> ManagerProcess:
    """Start the manager process that serves the workers' queues; a clear error if it dies."""
    start_helpers_isolated(start_method)
    manager = SyncManager(ctx=ctx)
    gone, alive = ctx.Pipe(duplex=False)
    try:
        manager.start(manager_initializer, (alive,))
    except EOFError as exc:  # what the stdlib says when the new process died at once
        gone.close()
        hint = (
            " With 'spawn' and 'forkserver' each new process imports the main module "
            "again: the code that starts the Rigger must run under "
            "`if __name__ == '__main__':`."
            if start_method != "fork"
            else ""
        )
        raise PluginError(
            f"the worker pool's manager process exited while starting (start method "
            f"{start_method!r}); it printed why above.{hint}"
        ) from exc
    finally:
        alive.close()  # the manager holds the only write end: its death is EOF here
    return ManagerProcess(manager, gone, gone.recv())


class Spawner:
    """Starts the local pool's processes: a manager, and workers fed from its queues."""

    def __init__(
        self,
        specs: Mapping[str, InstanceSpec],
        start_method: str,
        max_tasks: int | None,
        memory_limit: int | None,
    ) -> None:
        self.specs = specs
        self.start_method = start_method
        self.max_tasks = max_tasks
        self.memory_limit = memory_limit
        self.ctx: BaseContext = multiprocessing.get_context(start_method)
        self.manager: ManagerProcess | None = None
        self.started = 0
        """Workers started so far (it numbers their process names)."""

    def new_manager(self) -> ManagerProcess:
        """Start a manager process; the workers spawned from now on use its queues."""
        self.manager = start_manager(self.ctx, self.start_method)
        return self.manager

    def spawn(self, place: int) -> WorkerHandle:
        """Start one worker process with its own queue, result pipe and slot, to take
        place ``place`` in the pool."""
        assert self.manager is not None
        queue = self.manager.queue()
        reader, writer = self.ctx.Pipe(duplex=False)
        slot = self.ctx.RawArray("q", 2)
        slot[0] = slot[1] = NO_BATCH
        self.started += 1
        process: BaseProcess = self.ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            name=f"rigger_mp-worker-{self.started}",
            args=(queue, writer, slot, self.specs, self.max_tasks, self.memory_limit),
            daemon=True,
        )
        try:
            process.start()
        finally:
            writer.close()  # the worker holds the only write end: its death is EOF here
        return WorkerHandle(process, queue, reader, slot, place=place)

    def shutdown(self) -> None:
        """End the manager process, if one was started."""
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None
