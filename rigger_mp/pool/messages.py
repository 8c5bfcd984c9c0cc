"""What a worker process and :class:`~rigger_mp.pool.local.LocalPool` say to each other.

Each worker sends these on its own result pipe, and records in a shared slot
(``RawArray("q", 2)``) the batch it claimed and the index of the item it is running.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection as mpc
import os
import threading

# Messages from a worker to the collector, on the worker's result pipe.
MSG_DONE = 0  # (MSG_DONE, batch_id, count, seconds, [(index, global_updates, error_text)])
MSG_FIRE = 1  # (MSG_FIRE, hook_name, kwargs): a plugin called fire_hook in the worker
MSG_RETIRE = 2  # (MSG_RETIRE, batch_id, next_index, reason): recycled, exits after this

# Slot values: slot[0] is the claimed batch id, slot[1] the index of the item running.
NO_BATCH = -1

FLUSH_SECONDS = 0.005
"""A worker sends the results it holds after this much work, and at the end of a batch."""


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
