"""What the pool's child processes run first: leave with the parent, and, in the
manager process, hold the pipe whose end of file tells the parent it is gone.

Kept apart, with the standard library's imports alone, because the manager process
imports the module of its initializer while :meth:`LocalPool.start
<rigger_mp.pool.local.LocalPool.start>` waits for it: it should not also import the
worker's code, psutil and the rest.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection as mpc
import os
import threading

_alive_pipe: list[mpc.Connection] = []  # in the manager process: held open for its life


def manager_initializer(alive: mpc.Connection) -> None:
    """Runs first in the manager process: say who it is, hold the sentinel's write end
    open for the process's life, and leave with the parent."""
    alive.send(os.getpid())
    _alive_pipe.append(alive)
    exit_with_parent()


def exit_with_parent() -> None:
    """In a child process: exit at once when the parent process dies (no polling).

    A daemon thread blocks on the parent's sentinel, which becomes ready when the
    parent's end of a pipe is closed, by its exit or by a kill.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        mpc.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="rigger_mp-parent-watch", daemon=True).start()
