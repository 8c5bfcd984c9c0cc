"""rigger_mp: an event-hook dispatcher.

The package is laid out by process role; each subpackage is what one process runs::

    rigger_mp/
      core/     the main process: Rigger (the facade), event_thread (the queue, its
                thread, admission), event_runner (the stages of one event), plans, task,
                plugin (the plugin API), config, loading, journaling, failures, port (the
                EventPort interface pool/ and server/ use) and dispatcher_port (the one
                object that implements it, built by start())
      pool/     backgrounded hooks: interface (WorkerPool, ResultSink), background (the
                dispatcher's side), batches (what both pools share), worker_messages,
                local (LocalPool) + processes, worker_handle, worker (the worker process),
                dask + dask_links, dask_worker (DaskPool), io_lane (the I/O lane)
      server/   the TCP intake. In the server process (asyncio): process (its entry),
                acceptor, connection (+ auth, reply_order, http_refusal), router (tids,
                acks, backpressure, stop), stats_snapshot, throttle, http (the HTTP
                front), uploads (+ http_attach: attach, files streamed to disk by
                writer threads); between the two: channel (the pipes) + pipe_messages; in the
                main process: supervisor (spawn, restart, stop), intake (the intake
                loop), fences, status_window, incarnation
      journal/  the SQLite journal (used by the main and the server process)
      cli/      rigger-mp: commands, serve, demo (+ demo_client, its client process),
                status, journal
      plugins/  built-in plugins: archive, testlog, report (+ report_page), junit, and
                artifacts (artifact paths); runs (a test run's story, for report and
                junit), run_writer (their files, off the event thread), run_index
      compat/   riggerlib 3.1.6's API on top of core
      protocol.py, client.py, errors.py, pytest_plugin.py (with pytest_options.py: its
      options; pytest_story.py: what a finish_test tells; pytest_artifacts.py: the
      fixtures' files), and the helpers every role uses: deadline.py (a timeout as a
      deadline), lifecycle.py (phase enums, legal moves), merge.py (recursive_update),
      naming.py (readable names of callables), safe_paths.py (files created without
      following links, paths kept inside a root)

``Rigger.start()`` hands pool/ and server/ a ``DispatcherPort`` (the event thread and the
journal behind the ``EventPort`` interface) and never itself: they import from core/
only that interface, the config type, the plugin API and ``Task``.

``import rigger_mp`` loads only ``errors``: the names below are imported on first use.

Data flow over TCP (server.process in its own process, server.intake in the main)::

    RiggerClient, nc, ...      server process                    main process
    ---------------------      (server.process)                  (server.intake)
    JSON line ──TCP──▶ Acceptor ─▶ Connection ─ parse, validate ─┐
      (\\n or \\0 ends it)      refuses HTTP; answers auth,    │ Router: a fire gets its
                               bad input itself; stats from    │ tid here; one batch per
                               StatsSnapshot (100 ms)          │ read
                                                               ▼
      ok + tid ◀──────── once its batch is in ─ requests pipe ──────▶ intake thread
      (plain fire)        the pipe              (server.channel:      queues each Fires run
                                                Fires, StatusRequest, (port.accept_batch),
                                                StatsRequest, ...)    answers task_status
                                                                      (server.status_window),
                                                                      stats, terminate
    reply line ◀──TCP── Connection ◀─ in order ◀─ reply pipe ◀────────┤
                        (ReplyOrder, by        (Replies, StatsReply)  │ grab_result /
                        seq numbers)           done-callback ◀────────┘ wait_for_task:
                                               of the Task              when it finishes

    What is written into the requests pipe outlives the server process, so an acked
    fire is never lost with it. A fence request (stop, wait_background; server.fences)
    comes back down the pipe behind every fire acked before it. server.supervisor
    watches the process: end-of-file on the requests pipe means the server process
    exited; unless stopping, it logs that and starts another one on the same listening
    socket (bound once, in the main process). End-of-file on the reply pipe tells the
    server process that the main process is gone, and it exits.

Data flow in the main process (core.event_thread, core.event_runner, core.plans)::

    fire_hook(name, **kw) ──▶ Task (core.task: a Future, with tid) returned at once
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

What ``start()`` wires together (core.rigger), each part given what it uses::

    Journaling.open(config) ─────────────────────────┬──────────────────────────┐
         │ (core.journaling; None without a journal) │ settled                  │ received,
         ▼                                           ▼                          │ undelivered
    EventThread.run(runner, submit, journal)    Background.start(port, ...,     │
      (commit before queueing, done marks)        on_settled)  (pool.background)│
                                                     ▲                          ▼
    DispatcherPort(event thread, journal, ...) ──────┴──────▶ ServerSupervisor(port) ─▶ Intake
      (core.dispatcher_port: the EventPort)                   (server.supervisor, .intake)

Backgrounded hooks (after the pre callbacks; pool.background, then pool.local or
pool.dask; see pool.local for the details)::

    event thread                feeder thread        Manager().Queue()      worker processes
    +-------------------+       +-------------+      one per worker         (pool.worker: own
    | work item:        |       | pending     |      +-------------+        plugin instances)
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

# No ``typing`` and no submodule at import time: ``import rigger_mp`` loads this one
# module (mypy treats this TYPE_CHECKING like typing's).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .client import (
        FireManyError,
        RemoteError,
        RiggerClient,
        RiggerConnectionError,
        RiggerTimeout,
    )
    from .core.config import RiggerConfig, load_config
    from .core.plugin import PluginInstance, RiggerBasePlugin
    from .core.rigger import Rigger
    from .core.task import Task
    from .errors import (
        BackgroundError,
        ConfigError,
        HookArgumentError,
        HookReturnError,
        PluginError,
        RiggerError,
        ShuttingDown,
        UnsafePath,
        WouldDeadlock,
    )
    from .merge import recursive_update

# PEP 562: every name below is imported on first use, so that ``import rigger_mp`` (and
# the pytest plugin when it is not enabled, and the server process) stays cheap.
_LAZY = {
    "BackgroundError": ".errors",
    "ConfigError": ".errors",
    "HookArgumentError": ".errors",
    "HookReturnError": ".errors",
    "PluginError": ".errors",
    "RiggerError": ".errors",
    "ShuttingDown": ".errors",
    "UnsafePath": ".errors",
    "WouldDeadlock": ".errors",
    "FireManyError": ".client",
    "RemoteError": ".client",
    "RiggerClient": ".client",
    "RiggerConnectionError": ".client",
    "RiggerTimeout": ".client",
    "RiggerConfig": ".core.config",
    "load_config": ".core.config",
    "recursive_update": ".merge",
    "RiggerBasePlugin": ".core.plugin",
    "PluginInstance": ".core.plugin",
    "Rigger": ".core.rigger",
    "Task": ".core.task",
}


def __getattr__(name: str) -> object:
    """Import the submodule that defines ``name`` (a name of ``__all__``) and keep it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The module's names, the ones not imported yet included."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BackgroundError",
    "ConfigError",
    "FireManyError",
    "HookArgumentError",
    "HookReturnError",
    "PluginError",
    "PluginInstance",
    "RemoteError",
    "Rigger",
    "RiggerBasePlugin",
    "RiggerClient",
    "RiggerConfig",
    "RiggerConnectionError",
    "RiggerError",
    "RiggerTimeout",
    "ShuttingDown",
    "Task",
    "UnsafePath",
    "WouldDeadlock",
    "load_config",
    "recursive_update",
]
__version__ = "0.1.0"
