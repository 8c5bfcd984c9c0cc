"""The dispatcher's facade: registration, config, instances, start/stop, stats.

The queue, its thread and admission are the
:class:`~rigger_mp.core.event_thread.EventThread`'s. The pool side and the TCP intake
never see the :class:`Rigger`: ``start()`` builds them a
:class:`~rigger_mp.core.dispatcher_port.DispatcherPort` from the event thread and the
journal, so that the Rigger's public API stays riggerlib's and the documented one.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import printable
from ..coroutine_thread import CoroutineThread
from ..deadline import Deadline
from ..errors import PluginError
from ..naming import describe
from ..pool.background import Background
from .calling import Callee
from .config import ConfigSource, RiggerConfig, load_config
from .dispatcher_port import DispatcherPort
from .event_runner import EventRunner, ExcInfo
from .event_thread import EventThread, Phase, call_and_wait
from .journaling import Journaling
from .loading import (
    UNDO_TIMEOUT,
    InstanceLookup,
    PluginClass,
    build_instances,
    stop_instances,
)
from .plans import Plan, bound_events, callback_table, make_plan
from .plugin import Dispatcher, PluginInstance, RiggerBasePlugin, watch_bindings
from .stats import collect
from .task import Task

if TYPE_CHECKING:
    from ..server.pipe_messages import Restored
    from ..server.supervisor import ServerSupervisor
    from .port import EventSpec

logger = printable.logger("rigger_mp")


class Rigger(InstanceLookup, Dispatcher):
    """An event-hook dispatcher.

    ``config`` is a YAML path, a mapping, or ``None`` for the defaults; it is read by
    :meth:`start`. Events fired with :meth:`fire_hook` run one at a time, in the order
    they were accepted, on one thread.
    """

    def __init__(self, config: ConfigSource = None) -> None:
        self.config_source = config
        self._loaded_config: dict[str, Any] = {}
        self.settings: RiggerConfig | None = None
        self.plugins: dict[str, PluginClass] = {}
        self.instances: dict[str, PluginInstance] = {}
        self.pre_callbacks: dict[str, dict[str, Callee]] = {}
        self.post_callbacks: dict[str, dict[str, Callee]] = {}
        self._globals: dict[str, Any] = {}  # one dict for the Rigger's life: see global_data
        self._squash: bool | None = None  # assigned squash_exceptions, over the config's
        self._runner: EventRunner | None = None
        self._instances_built = False
        self._lock = threading.Lock()  # guards the callback tables and _callback_seq
        self._callback_seq = 0
        self._events = EventThread(self._plan_for, self._report_failure)
        watch_bindings(self, self._events.forget_plans)  # a plugin bound a hook after start
        self._port: DispatcherPort | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._coroutines = CoroutineThread()  # async def callables; no thread until one runs
        self._background: Background | None = None
        self._journal: Journaling | None = None
        # The TCP server (rigger_mp.server), when server_enabled: its real address.
        self._server: ServerSupervisor | None = None
        self.server_address: str | None = None
        self.server_port: int | None = None
        self.artifacts_root: Path | None = None
        """The artifacts root, once :func:`rigger_mp.plugins.artifacts.install` bound one;
        :meth:`info` tells clients (the ``info`` op)."""

    # -- registration -------------------------------------------------------------

    def register_plugin(self, cls: PluginClass, plugin_name: str | None = None) -> None:
        """Make ``cls`` available to the config as ``plugin: plugin_name``."""
        if not (isinstance(cls, type) and issubclass(cls, RiggerBasePlugin)):
            raise PluginError(f"{cls!r} is not a subclass of RiggerBasePlugin")
        name = plugin_name or cls.__name__
        known = self.plugins.get(name)
        if known is not None and known is not cls:
            raise PluginError(f"plugin name {name!r} is already taken by {known!r}")
        self.plugins[name] = cls

    def register_hook_callback(
        self,
        hook_name: str,
        ctype: str = "pre",
        callback: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Run ``callback`` before (``pre``) or after (``post``) the hooks of ``hook_name``.

        Returns the binding's name, which :meth:`unregister_hook_callback` takes.
        """
        table = callback_table(self.pre_callbacks, self.post_callbacks, ctype)
        if not isinstance(hook_name, str) or not hook_name:
            raise TypeError("hook_name must be a non-empty string")
        if callback is None:
            raise TypeError("register_hook_callback needs a callback")
        with self._lock:
            if name is None:
                self._callback_seq += 1
                name = f"{describe(callback)}#{self._callback_seq}"
            callee = Callee(callback, f"{ctype} callback {name!r} of {hook_name!r}")
            # Copy on write: the event thread reads these tables without a lock.
            table[hook_name] = {**table.get(hook_name, {}), name: callee}
            self._events.forget_plans()
        return name

    def unregister_hook_callback(self, hook_name: str, ctype: str, name: str) -> None:
        """Remove the callback bound under ``name``; a name not bound is a ``KeyError``."""
        table = callback_table(self.pre_callbacks, self.post_callbacks, ctype)
        with self._lock:
            bound = dict(table.get(hook_name, {}))
            if name not in bound:
                raise KeyError(f"no {ctype} callback named {name!r} for {hook_name!r}")
            del bound[name]
            table[hook_name] = bound
            self._events.forget_plans()

    # -- assignable state ---------------------------------------------------------

    @property
    def global_data(self) -> dict[str, Any]:
        """The global namespace (only the event thread writes it while running)."""
        return self._globals

    @global_data.setter
    def global_data(self, value: Mapping[str, Any]) -> None:
        """Replace the namespace's contents, before or after :meth:`start`.

        While running, the event thread does it, after the events queued before: the dict
        every component holds stays the same object, so none keeps reading the old one.
        """
        target = self._globals
        if value is target:
            return
        new = dict(value)

        def replace() -> None:
            target.clear()
            target.update(new)

        call_and_wait(self._events, replace)

    @property
    def config(self) -> dict[str, Any]:
        """The config as :meth:`start` read it (``{}`` before)."""
        return self._loaded_config

    @config.setter
    def config(self, value: Mapping[str, Any]) -> None:
        """Before :meth:`start`: the config to read (as ``Rigger(config)``). After: refused,
        since nothing would read it."""
        if self.settings is not None:
            raise AttributeError(
                "config is read once, by start(); to change an instance use "
                "configure_plugin(), to change the globals assign global_data"
            )
        self.config_source = dict(value)

    @property
    def initialized(self) -> bool:
        """True once :meth:`start` has built the instances (riggerlib's flag, read-only)."""
        return self._instances_built

    @initialized.setter
    def initialized(self, value: bool) -> None:
        raise AttributeError(
            "initialized is set by start(): call start() (or parse_config()), which builds "
            "the instances and runs the events; rigger_mp.compat keeps riggerlib's flag"
        )

    @property
    def squash_exceptions(self) -> bool:
        """Log failing callables and go on (True), or fail the event (False).

        The config key ``squash_exceptions`` sets it at :meth:`start`; an assignment, before
        or after, wins.
        """
        if self._runner is not None:
            return self._runner.squash_exceptions
        if self._squash is not None:
            return self._squash
        return self.settings.squash_exceptions if self.settings is not None else False

    @squash_exceptions.setter
    def squash_exceptions(self, value: bool) -> None:
        self._squash = bool(value)
        if self._runner is not None:
            self._runner.squash_exceptions = self._squash

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Rigger:
        """Load the config, build the plugin instances and start the event thread.

        The TCP server process is launched before the worker pool starts (unless the pool
        forks its workers, which would inherit its pipes), so that its interpreter boots
        meanwhile; it is told its settings, and takes fires, only once the rest runs.
        """
        self._events.begin_start()
        server: ServerSupervisor | None = None
        try:
            settings = load_config(self.config_source)
            self.settings = settings
            self._loaded_config = settings.raw
            self.instances = {}  # those of this start alone, for _undo_start to stop
            self.instances = build_instances(settings, self.plugins, self)
            # Its faults raise here, naming the file.
            journal = self._journal = Journaling.open(settings)
            port = self._port = self._make_port(self._events, journal)
            settled = journal.settled if journal is not None else None
            if settings.server_enabled and settings.start_method != "fork":
                server = self._launch_server(settings)
            self._background = Background.start(
                port, self.instances, settings, self._coroutines, settled
            )
            if settings.threaded:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(2, min(32, len(self.instances))),
                    thread_name_prefix="rigger_mp-hook",
                    initializer=self._events.adopt_thread,
                )
            squash = settings.squash_exceptions if self._squash is None else self._squash
            runner = EventRunner(
                self._globals, squash, self._report_failure, self._executor, self._coroutines
            )
            self._runner = runner
            self._events.max_cached_plans = settings.max_cached_plans
            first = journal.claim() if journal is not None else ((), ())
            restored = self._restored_runs(settings, first[0])  # before the replay runs
            self._events.run(runner, self._background.submit, journal, first)
        except BaseException:
            if server is not None:
                server.abandon()
            self._undo_start()
            raise
        self._instances_built = True
        _live.add(self)
        if settings.server_enabled:
            self._start_server(settings, server, restored)
        _parts[self] = Parts(self._events, port, self._background, journal, self._server)
        self.log_message(
            f"started with {len(self.instances)} enabled instance(s)"
            + (f", TCP on {self.server_address}:{self.server_port}" if self._server else "")
        )
        return self

    def _make_port(self, events: EventThread, journal: Journaling | None) -> DispatcherPort:
        """The port ``start()`` hands the pool side and the TCP intake (compat builds its
        own, which changes how the intake's batches are accepted)."""
        return DispatcherPort(events, journal, self, self._report_failure)

    def _undo_start(self) -> None:
        """``start()`` raised: end what it had started (the plugins built too: their
        threads and files), so that it may be called again."""
        stop_instances(self.instances, Deadline(UNDO_TIMEOUT))
        self.instances = {}
        if self._background is not None:
            self._background.close(drained=False)
            self._background = None
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._port = None
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        self._coroutines.stop()
        self._coroutines = CoroutineThread()  # start() may be called again
        self._events.start_failed()

    def _launch_server(self, settings: RiggerConfig) -> ServerSupervisor:
        """Bind the TCP port and launch the server process (see rigger_mp.server)."""
        from ..server.supervisor import ServerSupervisor

        assert self._port is not None
        server = ServerSupervisor(self._port, settings, self.artifacts_root)
        server.launch()
        return server

    def _restored_runs(
        self, settings: RiggerConfig, replay: Sequence[EventSpec]
    ) -> Restored | None:
        """The open runs for the live view of the HTTP front, if there is one, an
        artifacts root and a journal replay to run: read before the replay is queued (see
        :class:`~rigger_mp.server.pipe_messages.Restored`). Without a replay, nothing
        writes the state files before the server process reads them itself."""
        root = self.artifacts_root
        if not replay or not settings.server_enabled or settings.http_port is None or not root:
            return None
        from ..server.run_board import restored_runs

        return restored_runs(str(root), replay)

    def _start_server(
        self,
        settings: RiggerConfig,
        server: ServerSupervisor | None,
        restored: Restored | None = None,
    ) -> None:
        """Greet the launched server process (launch it first if none); on failure, stop
        and raise."""
        try:
            if server is None:
                server = self._launch_server(settings)
            self.server_address, self.server_port = server.start(restored)
        except BaseException:
            self.stop()
            raise
        self._server = server

    def parse_config(self) -> None:
        """riggerlib's name for :meth:`start`."""
        self.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting events, finish those accepted, then stop every thread.

        With a TCP server, the server stops taking events first and every event it
        acked is queued (see :meth:`rigger_mp.server.supervisor.ServerSupervisor.quiesce`).
        Backgrounded hooks are waited for next (:meth:`wait_background`), then the
        worker pool is ended. What is still queued when ``timeout`` runs out is failed
        with :class:`ShuttingDown`, logged and counted as abandoned; so are backgrounded
        hooks not finished by then.
        """
        if not self._events.begin_stop(timeout):
            return
        deadline = Deadline(timeout)
        self._fence_intake(deadline)
        ended = self._drain(deadline)
        self._stop_plugins(deadline)
        self._release(ended, deadline)
        _live.discard(self)
        self._events.finish()
        events = self._events.counters()
        self.log_message(
            f"stopped: {events['done']} event(s) done, {events['failed']} failed, "
            f"{events['abandoned']} abandoned"
        )

    def _stop_plugins(self, deadline: Deadline) -> None:
        """Let each plugin finish its work off the event thread (a report being written),
        so that its files are complete when stop() returns."""
        stop_instances(self.instances, deadline)

    def _fence_intake(self, deadline: Deadline) -> None:
        """Queue every event the TCP server acked, then take no more from the intake."""
        if self._server is not None:
            self._server.quiesce(deadline.left())
        self._events.close_intake()

    def _drain(self, deadline: Deadline) -> bool:
        """Run the accepted events and their backgrounded hooks; True if the event thread
        ended (else what was queued was abandoned at ``deadline``)."""
        background = self._background
        assert background is not None
        settled = background.settle(deadline.left())
        if not settled.done:
            background.close(drained=False, timeout=0)  # end what still runs
        # With every event run and the pool done or ended, only merge jobs and the stop
        # signal are left for the event thread: its end needs no deadline.
        return self._events.drain(Deadline(None) if settled.events_ran else deadline)

    def _release(self, ended: bool, deadline: Deadline) -> None:
        """End the pool (drained if the event thread ended), the hook threads, the server."""
        background = self._background
        assert background is not None
        if ended:
            background.events_ended()
        background.close(drained=ended, timeout=deadline.left())
        if self._executor is not None:
            self._executor.shutdown(wait=ended)
        if not self._coroutines.stop(deadline.left()):  # after the I/O lane has ended
            logger.error("the coroutine thread did not end in time")
        if self._server is not None:  # after the drain: its replies still reach clients
            self._server.stop(deadline.timeout)
        if self._journal is not None:  # its last done marks, then the file's locks
            self._journal.close()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (say, after a TCP ``terminate``)."""
        stopped = self._events.wait_stopped(timeout)
        if stopped and self._server is not None:
            self._server.wait_terminated(timeout)
        return stopped

    def __enter__(self) -> Rigger:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._events.phase is Phase.RUNNING

    # -- events -------------------------------------------------------------------

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue an event and return its task handle at once.

        The task's result is the event's final namespace: the globals overlaid by
        the event's locals.
        """
        return self._events.fire(hook_name, kwargs)

    def fire_many(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Task]:
        """Queue ``(hook_name, kwargs)`` events in order, as :meth:`fire_hook` would each;
        their tasks. With a journal, one commit for them all (``fire_hook`` in a loop waits
        for a commit per event). All or nothing: none is queued if one is refused."""
        return self._events.fire_many(events)

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far has run and its backgrounded hooks ended.

        Events fired meanwhile by hooks are waited for too, and so are events a TCP client
        heard ``ok`` for (the server sends a fence behind them first; a server that does
        not answer is replaced after :data:`~rigger_mp.server.supervisor.FENCE_TIMEOUT`).
        Returns False if ``timeout`` (seconds) ran out first, True otherwise (also when the
        dispatcher is not running).
        """
        if self._background is None:
            return True
        if self._server is not None and not self._events.on_event_thread():
            # Events the TCP server acked may still be in its pipe: queue them first.
            deadline = Deadline(timeout)
            if not self._server.sync(timeout):
                return False
            timeout = deadline.left()
        return self._background.wait(timeout)

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the event thread, after the events already queued.

        This is how other threads change the global namespace: its only writer is
        the event thread.
        """
        self._events.call_soon(func)

    def _plan_for(self, hook_name: str) -> Plan:
        """Who runs for ``hook_name`` under the bindings of now (the event thread caches it)."""
        threaded = self._executor is not None
        timings = self._events.timings

        def timed(plugin: str, event: str, callee: Callee) -> Callee:
            return timings.timed(plugin, event, callee, threaded)

        return make_plan(
            self.instances, self.pre_callbacks, self.post_callbacks, hook_name, timed
        )

    # -- failures and counters ----------------------------------------------------

    def _report_failure(self, exc_info: ExcInfo) -> None:
        """A failure no waiter sees (a squashed callable, an event no one waits on, an
        internal job): kept in the recent failures, then :meth:`handle_failure`, which must
        not raise."""
        try:
            self._events.failures.add(None, None, exc_info[1])
        except Exception:
            logger.exception("keeping a failure failed")
        try:
            self.handle_failure(exc_info)
        except Exception:
            logger.exception("handle_failure() itself failed")

    def handle_failure(self, exc_info: ExcInfo) -> None:
        """Called with a failure no waiter sees (a squashed callable, an event no one waits
        on, a backgrounded hook); the default logs it with its traceback."""
        logger.error("a callable failed: %s", exc_info[1], exc_info=exc_info)

    def log_message(self, msg: str) -> None:
        """Where the dispatcher's own news (started, stopped) goes: riggerlib's hook.

        The default logs at INFO through ``logging``; a subclass may override it.
        """
        logger.info("%s", msg)

    def stats(self) -> dict[str, Any]:
        """Counters: events accepted, done, failed, abandoned, and queued now; backgrounded
        hooks queued, running, done, failed and abandoned; the live workers; the uptime and
        the mean events done per second; events by name (``hooks``); the last failures
        (``recent_failures``); the plans cached; the event names bound; the TCP server's
        and the journal's counters when they run (see :func:`~.stats.collect`)."""
        bound = bound_events(self.instances, self.pre_callbacks, self.post_callbacks)
        return collect(self._events, self._background, self._server, self._journal, bound)

    def info(self) -> dict[str, Any]:
        """What a client may learn of this dispatcher (the ``info`` op): its host name and
        pid, and its artifacts root (absolute; None when none is bound), so that a client
        on the same host can write a test's files where the dispatcher's plugins look."""
        root = self.artifacts_root
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "artifacts_root": None if root is None else str(root),
        }

    def uptime(self) -> float:
        """Seconds from :meth:`start` to :meth:`stop` (to now while running); 0 before."""
        return self._events.uptime()


class Parts(NamedTuple):
    """What a started :class:`Rigger` is made of: see :func:`parts_of`."""

    events: EventThread
    port: DispatcherPort
    background: Background
    journal: Journaling | None
    server: ServerSupervisor | None


_parts: weakref.WeakKeyDictionary[Rigger, Parts] = weakref.WeakKeyDictionary()


def parts_of(rigger: Rigger) -> Parts:
    """The parts of ``rigger`` as its ``start()`` made them (KeyError if it never
    started): the seam through which tests and diagnostics look at the event thread, the
    port, the background side, the journal and the server supervisor. Not part of the
    Rigger's API, which stays riggerlib's and the documented one."""
    return _parts[rigger]


# Riggers that were started and not stopped: stopped (drained) at interpreter exit, so
# that a forgotten stop() does not lose accepted events.
_live: weakref.WeakSet[Rigger] = weakref.WeakSet()


@atexit.register
def _stop_live() -> None:
    for rigger in list(_live):
        rigger.stop()
