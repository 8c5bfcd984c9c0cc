"""rigger_mp: an event-hook dispatcher.

Data flow in the main process::

    fire_hook(name, **kw) ──▶ Task (a Future, with tid) returned at once
         │
         ▼
    global queue (SimpleQueue) ──▶ event thread, one event at a time, in order:
                                     pre callbacks   ─┐ each stage sees the namespace
                                     plugin hooks    ─┤ as it began; its updates merge
                                     post callbacks  ─┘ (recursive_update) when it ends
                                         │
                                         ▼
                                   Task result = globals overlaid by event locals

    call_soon(func) ──▶ the same queue: how other threads update the globals, which
                        only the event thread writes.

Backgrounded hooks (after the pre callbacks; see rigger_mp.pool for the details)::

    event thread                feeder thread        Manager().Queue()      worker processes
    +-------------------+       +-------------+      one per worker         (own plugin
    | work item:        |       | pending     |      +-------------+        instances)
    | id, instance,     |-----> | items, cut  |----> | batch 7     | -get-> +----------+
    | event, pickled    | submit| into batches| put  | batch 9     |        | worker 1 |
    | arguments         |       +-------------+      +-------------+        +----------+
    +-------------------+              ^             +-------------+        +----------+
              ^                        | room        | batch 8     | -get-> | worker 2 |
              | call_soon(merge        |             +-------------+        +----------+
              | global updates)   +------------------+                        |    |
              +------------------ | collector thread | <-- result pipes ------+    |
                                  | waits on pipes   | <-- process sentinels ------+
                                  | and sentinels    |     (death: fail the running
                                  +------------------+      hook, re-queue the rest)

Callables receive only the parameters their signature names, looked up in the event
locals first, then in the globals, and return ``None`` or ``(local, global)`` updates.
"""

from .config import RiggerConfig, load_config
from .errors import (
    BackgroundError,
    ConfigError,
    HookArgumentError,
    HookReturnError,
    PluginError,
    RiggerError,
    ShuttingDown,
    WouldDeadlock,
)
from .merge import recursive_update
from .plugin import RiggerBasePlugin
from .rigger import PluginInstance, Rigger
from .task import Task

__all__ = [
    "BackgroundError",
    "ConfigError",
    "HookArgumentError",
    "HookReturnError",
    "PluginError",
    "PluginInstance",
    "Rigger",
    "RiggerBasePlugin",
    "RiggerConfig",
    "RiggerError",
    "ShuttingDown",
    "Task",
    "WouldDeadlock",
    "load_config",
    "recursive_update",
]
__version__ = "0.1.0"
