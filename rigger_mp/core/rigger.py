"""The dispatcher: configuration, plugin instances, the global queue and its thread."""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..errors import PluginError, RiggerError, ShuttingDown, WouldDeadlock
from ..pool.background import Background
from .calling import Callee, describe
from .config import ConfigSource, RiggerConfig, load_config
from .deadline import Deadline
from .loading import PluginClass, PluginInstance, resolve_plugin
from .plugin import Dispatcher, PluginHook, RiggerBasePlugin
from .port import EventSpec
from .stage import EventRunner, ExcInfo, annotate
from .task import Task

if TYPE_CHECKING:
    from ..server.supervisor import ServerSupervisor

logger = logging.getLogger("rigger_mp")

class _Call:
    """An internal job for the event thread, queued in order with the events."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[[], None]) -> None:
        self.func = func


Backgrounded = tuple[PluginInstance, PluginHook]


class _Plan(NamedTuple):
    """The callables one event name runs, stage by stage."""

    pre: tuple[Callee, ...]
    foreground: tuple[Callee, ...]
    background: tuple[Backgrounded, ...]
    post: tuple[Callee, ...]

_STOP: Final = object()
_NEW, _STARTING, _RUNNING, _STOPPING, _STOPPED = "new", "starting", "running", "stopping", "stopped"


class Rigger(Dispatcher):
    """An event-hook dispatcher.

    ``config`` is a YAML path, a mapping, or ``None`` for the defaults; it is read by
    :meth:`start`. Events fired with :meth:`fire_hook` run one at a time, in the order
    they were accepted, on one thread.
    """

    def __init__(self, config: ConfigSource = None) -> None:
        self.config_source = config
        self.config: dict[str, Any] = {}
        self.settings: RiggerConfig | None = None
        self.plugins: dict[str, PluginClass] = {}
        self.instances: dict[str, PluginInstance] = {}
        self.pre_callbacks: dict[str, dict[str, Callee]] = {}
        self.post_callbacks: dict[str, dict[str, Callee]] = {}
        self.global_data: dict[str, Any] = {}
        self.initialized = False
        self._state = _NEW
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._runners: set[int] = set()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._events: EventRunner | None = None
        self._abandon = False
        self._intake_closed = False
        self._accepted = 0
        self._done = 0
        self._failed = 0
        self._abandoned = 0
        self._callback_seq = 0
        self._plans: dict[str, _Plan] = {}
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._background: Background | None = None
        self._stopped = threading.Event()
        # The TCP server (rigger_mp.intake), when server_enabled: its real address.
        self._server: ServerSupervisor | None = None
        self.server_address: str | None = None
        self.server_port: int | None = None

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
        table = self._callback_table(ctype)
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
            self._plans = {}
        return name

    def unregister_hook_callback(self, hook_name: str, ctype: str, name: str) -> None:
        """Remove the callback bound under ``name``; a name not bound is a ``KeyError``."""
        table = self._callback_table(ctype)
        with self._lock:
            bound = dict(table.get(hook_name, {}))
            if name not in bound:
                raise KeyError(f"no {ctype} callback named {name!r} for {hook_name!r}")
            del bound[name]
            table[hook_name] = bound
            self._plans = {}

    def _callback_table(self, ctype: str) -> dict[str, dict[str, Callee]]:
        if ctype == "pre":
            return self.pre_callbacks
        if ctype == "post":
            return self.post_callbacks
        raise ValueError(f"ctype must be 'pre' or 'post', not {ctype!r}")

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Rigger:
        """Load the config, build the plugin instances and start the event thread."""
        with self._lock:
            if self._state != _NEW:
                raise RiggerError(f"start(): this Rigger is already {self._state}")
            self._state = _STARTING  # nobody fires until we are running
        try:
            settings = load_config(self.config_source)
            self.settings = settings
            self.config = settings.raw
            self.instances = self._build_instances(settings)
            self._background = Background.start(self, self.instances, settings)
            if settings.threaded:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(2, min(32, len(self.instances))),
                    thread_name_prefix="rigger_mp-hook",
                    initializer=self._enter_runner,
                )
            self._events = EventRunner(
                self.global_data, settings.squash_exceptions, self.report_failure, self._executor
            )
            self._thread = threading.Thread(
                target=self._run_events, name="rigger_mp-events", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._state = _NEW
            if self._background is not None:
                self._background.close(drained=False)
                self._background = None
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None
            raise
        with self._lock:
            self._state = _RUNNING
        self.initialized = True
        self._started_at = time.monotonic()
        _live.add(self)
        if settings.server_enabled:
            self._start_server(settings)
        self.log_message(
            f"rigger_mp: started with {len(self.instances)} enabled instance(s)"
            + (f", TCP on {self.server_address}:{self.server_port}" if self._server else "")
        )
        return self

    def _start_server(self, settings: RiggerConfig) -> None:
        """Start the TCP server process (see rigger_mp.intake); on failure, stop and raise."""
        from ..server.supervisor import ServerSupervisor

        server = ServerSupervisor(self, settings)
        try:
            self.server_address, self.server_port = server.start()
        except BaseException:
            self.stop()
            raise
        self._server = server

    def parse_config(self) -> None:
        """riggerlib's name for :meth:`start`."""
        self.start()

    def _build_instances(self, settings: RiggerConfig) -> dict[str, PluginInstance]:
        instances: dict[str, PluginInstance] = {}
        for ident, spec in settings.plugins.items():
            cls = resolve_plugin(spec.plugin, ident, self.plugins)
            if not spec.enabled:
                continue
            try:
                obj = cls(ident, spec.data, self)
            except Exception as exc:
                raise PluginError(
                    f"instance {ident!r}: building plugin {spec.plugin!r} "
                    f"({describe(cls)}) failed: {type(exc).__name__}: {exc}"
                ) from exc
            instances[ident] = PluginInstance(ident, obj, spec.data, spec)
        return instances

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting events, finish those accepted, then stop every thread.

        With a TCP server, the server stops taking events first and every event it
        acked is queued (see :meth:`rigger_mp.intake.ServerSupervisor.quiesce`).
        Backgrounded hooks are waited for next (:meth:`wait_background`), then the
        worker pool is ended. What is still queued when ``timeout`` runs out is failed
        with :class:`ShuttingDown`, logged and counted as abandoned; so are backgrounded
        hooks not finished by then.
        """
        with self._lock:
            if threading.get_ident() in self._runners and self._state in (_RUNNING, _STOPPING):
                raise WouldDeadlock("stop() called from a hook would wait on its own event")
            if self._state == _STOPPING:  # another caller is stopping: wait for it to end
                in_progress = True
            elif self._state != _RUNNING:
                return
            else:
                in_progress = False
                self._state = _STOPPING
        if in_progress:
            self._stopped.wait(timeout)
            return
        thread = self._thread
        assert thread is not None
        deadline = Deadline(timeout)
        if self._server is not None:  # queue what the server acked before draining
            self._server.quiesce(deadline.left())
        with self._lock:
            self._intake_closed = True
        background = self._background
        idle = False
        if background is not None:
            drained = background.wait(deadline.left())
            if not drained:
                background.close(drained=False, timeout=0)  # end what still runs
            # With every event run and the pool done or ended, only merge jobs and the
            # stop signal are left for the event thread: its join needs no deadline.
            idle = background.events_settled
        self._queue.put(_STOP)
        thread.join(None if idle else deadline.left())
        if thread.is_alive():
            self._abandon = True
            self._fail_queued()
            self._queue.put(_STOP)  # the event thread ends once its hook returns
            logger.error(
                "stop(): timed out after %ss with an event still running; "
                "%d queued event(s) abandoned",
                timeout,
                self._abandoned,
            )
        if background is not None:
            if not thread.is_alive():
                background.events_ended()
            background.close(drained=not thread.is_alive(), timeout=deadline.left())
        if self._executor is not None:
            self._executor.shutdown(wait=not thread.is_alive())
        if self._server is not None:  # after the drain: its replies still reach clients
            self._server.stop(timeout)
        with self._lock:
            self._state = _STOPPED
        self._stopped_at = time.monotonic()
        _live.discard(self)
        self._stopped.set()
        events = self.stats()["events"]
        self.log_message(
            f"rigger_mp: stopped: {events['done']} event(s) done, {events['failed']} failed, "
            f"{events['abandoned']} abandoned"
        )

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (say, after a TCP ``terminate``)."""
        stopped = self._stopped.wait(timeout)
        if stopped and self._server is not None:
            self._server.wait_terminated(timeout)
        return stopped

    def _fail_queued(self) -> None:
        """Fail the queued events; internal jobs go back on the queue and still run."""
        jobs: list[_Call] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if type(item) is Task:
                self._abandon_task(item)
            elif isinstance(item, _Call):
                jobs.append(item)
        for job in jobs:
            self._queue.put(job)

    def _abandon_task(self, task: Task) -> None:
        self._abandoned += 1
        if task.set_running_or_notify_cancel():
            task.set_exception(
                ShuttingDown(f"event {task.hook_name!r} (tid {task.tid}) abandoned at stop()")
            )

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
        return self._state == _RUNNING

    # -- events -------------------------------------------------------------------

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue an event and return its task handle at once.

        The task's result is the event's final namespace: the globals overlaid by
        the event's locals.
        """
        if not isinstance(hook_name, str):
            raise TypeError(f"hook_name must be a string, not {type(hook_name).__name__}")
        with self._lock:
            if self._state != _RUNNING and not (
                self._state == _STOPPING and threading.get_ident() in self._runners
            ):
                raise ShuttingDown(f"fire_hook({hook_name!r}): the dispatcher is {self._state}")
            self._accepted += 1
            task = Task(str(self._accepted), hook_name, kwargs, self._runners)
            self._queue.put(task)
        return task

    def accept_batch(self, events: Sequence[EventSpec]) -> list[Task]:
        """Queue ``(tid, hook_name, kwargs)`` events, accepted (tids given) elsewhere, in order.

        The TCP intake's entry point: one lock acquisition per batch instead of one per
        event. ``kwargs`` dicts become the events' locals as they are (not copied). Also
        taken during a stop, until the intake has passed the server's fence (see
        :meth:`stop`). All or nothing: else :class:`ShuttingDown` and none is queued.
        """
        with self._lock:
            if self._state != _RUNNING and not (
                self._state == _STOPPING and not self._intake_closed
            ):
                raise ShuttingDown(f"{len(events)} event(s): the dispatcher is {self._state}")
            runners, put = self._runners, self._queue.put
            tasks = []
            for tid, hook_name, kwargs in events:
                task = Task(tid, hook_name, kwargs, runners)
                put(task)
                tasks.append(task)
            self._accepted += len(tasks)
        return tasks

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far has run and its backgrounded hooks ended.

        Events fired meanwhile by hooks are waited for too, and so are events a TCP client
        heard ``ok`` for (the server sends a fence behind them first; a server that does
        not answer is replaced after :data:`~rigger_mp.intake.FENCE_TIMEOUT`). Returns
        False if ``timeout`` (seconds) ran out first, True otherwise (also when the
        dispatcher is not running).
        """
        if self._background is None:
            return True
        if self._server is not None and threading.get_ident() not in self._runners:
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
        self._queue.put(_Call(func))

    def _enter_runner(self) -> None:
        self._runners.add(threading.get_ident())

    # -- the port (rigger_mp.core.port.EventPort) ----------------------------------

    def backlog(self) -> int:
        """Events and jobs queued for the event thread and not yet taken."""
        return self._queue.qsize()

    def accepted_count(self) -> int:
        """Events accepted since start, from every source."""
        return self._accepted

    def on_event_thread(self) -> bool:
        """Whether the calling thread runs events (a wait on an event would deadlock)."""
        return threading.get_ident() in self._runners

    def adopt_thread(self) -> None:
        """Treat the calling thread as one that runs events (see EventPort)."""
        self._enter_runner()

    def events_running(self) -> bool:
        """Whether the event thread is alive to run queued jobs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run_events(self) -> None:
        self._enter_runner()
        get, put = self._queue.get, self._queue.put
        events = self._events
        assert events is not None
        while True:
            item = get()
            if type(item) is Task:
                if self._abandon:
                    self._abandon_task(item)
                elif item.set_running_or_notify_cancel():
                    self._run_event(events, item)
            elif item is _STOP:
                if self._queue.empty():
                    return
                put(_STOP)  # events fired by hooks while draining run first
            else:
                self._run_call(item)

    def _run_event(self, events: EventRunner, task: Task) -> None:
        hook_name, local = task.hook_name, task.local
        task.local = None
        assert local is not None
        try:
            plan = self._plans.get(hook_name) or self._plan(hook_name)
            if plan.pre:
                events.stage(plan.pre, local, hook_name)
            if plan.background:
                self._submit_background(plan.background, local, hook_name)
            if plan.foreground:
                events.stage(plan.foreground, local, hook_name)
            if plan.post:
                events.stage(plan.post, local, hook_name)
            if self.global_data:
                result = dict(self.global_data)
                result.update(local)
            else:
                result = local
        except BaseException as exc:
            self._failed += 1
            task.set_exception(exc)
        else:
            self._done += 1
            task.set_result(result)

    def _run_call(self, call: _Call) -> None:
        try:
            call.func()
        except Exception as exc:
            annotate(exc, f"rigger_mp: raised by internal job {describe(call.func)}")
            self.report_failure((type(exc), exc, exc.__traceback__))

    def _plan(self, hook_name: str) -> _Plan:
        """Who runs for ``hook_name``, worked out once and kept until a binding changes."""
        foreground: list[Callee] = []
        background: list[Backgrounded] = []
        for instance in self.instances.values():
            hook = instance.obj.callbacks.get(hook_name)
            if hook is None:
                continue
            if hook.bg or instance.config.background:
                background.append((instance, hook))
            else:
                foreground.append(hook.callee)
        plans = self._plans  # a binding changed meanwhile: this plan goes with the old cache
        plan = _Plan(
            tuple(self.pre_callbacks.get(hook_name, {}).values()),
            tuple(foreground),
            tuple(background),
            tuple(self.post_callbacks.get(hook_name, {}).values()),
        )
        plans[hook_name] = plan
        return plan

    def plugin_hooks_changed(self) -> None:
        """Forget the cached plans: a plugin bound a hook after start."""
        self._plans = {}

    def _submit_background(
        self,
        hooks: tuple[Backgrounded, ...],
        local: dict[str, Any],
        hook_name: str,
    ) -> None:
        assert self._background is not None
        self._background.submit(hooks, local, hook_name)

    # -- failures and counters ----------------------------------------------------

    def report_failure(self, exc_info: ExcInfo) -> None:
        """A failure no waiter sees: :meth:`handle_failure`, which must not raise."""
        try:
            self.handle_failure(exc_info)
        except Exception:
            logger.exception("rigger_mp: handle_failure() itself failed")

    def handle_failure(self, exc_info: ExcInfo) -> None:
        """Called with a squashed exception; the default logs it with its traceback."""
        logger.error("rigger_mp: a callable failed: %s", exc_info[1], exc_info=exc_info)

    def log_message(self, msg: str) -> None:
        """Where the dispatcher's own news (started, stopped) goes: riggerlib's hook.

        The default logs at INFO through ``logging``; a subclass may override it.
        """
        logger.info("%s", msg)

    def stats(self) -> dict[str, Any]:
        """Counters: events accepted, done, failed, abandoned, and queued now; backgrounded
        hooks queued, running, done, failed and abandoned; the live workers; the uptime and
        the mean events done per second; the TCP server's counters when it runs."""
        background = self._background
        uptime = self.uptime()
        stats: dict[str, Any] = {
            **(Background.idle_stats() if background is None else background.stats()),
            "uptime": uptime,
            "events_per_second": self._done / uptime if uptime > 0 else 0.0,
            "events": {
                "accepted": self._accepted,
                "done": self._done,
                "failed": self._failed,
                "abandoned": self._abandoned,
                "queued": self._queue.qsize(),
            },
        }
        if self._server is not None:
            stats["server"] = self._server.stats()
        return stats

    def uptime(self) -> float:
        """Seconds from :meth:`start` to :meth:`stop` (to now while running); 0 before."""
        if self._started_at is None:
            return 0.0
        end = time.monotonic() if self._stopped_at is None else self._stopped_at
        return end - self._started_at

    # -- riggerlib compatibility ----------------------------------------------------

    def get_instance_obj(self, name: str) -> RiggerBasePlugin | None:
        """The plugin object of instance ``name``, or ``None``."""
        instance = self.instances.get(name)
        return instance.obj if instance else None

    def get_instance_data(self, name: str) -> Mapping[str, Any] | None:
        """The config mapping of instance ``name``, or ``None``."""
        instance = self.instances.get(name)
        return instance.data if instance else None

    def configure_plugin(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``configure(*args, **kwargs)`` on instance ``name``."""
        obj = self.get_instance_obj(name)
        if obj is None:
            raise PluginError(f"configure_plugin: no enabled instance named {name!r}")
        obj.configure(*args, **kwargs)


# Riggers that were started and not stopped: stopped (drained) at interpreter exit, so
# that a forgotten stop() does not lose accepted events.
_live: weakref.WeakSet[Rigger] = weakref.WeakSet()


@atexit.register
def _stop_live() -> None:
    for rigger in list(_live):
        rigger.stop()
