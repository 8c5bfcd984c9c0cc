"""riggerlib 3.1.6's ``Rigger``: a subclass of rigger_mp's that behaves as riggerlib did.

What riggerlib did that :class:`rigger_mp.Rigger` does not, and how this class does it::

    riggerlib                                  compat
    ---------                                  ------
    config: any attribute, read at             self.config is the program's mapping; start()
      parse_config (unknown keys ignored)      hands the core only the keys it knows
    queue thread made in __init__, events      events (in-process and TCP) are held until the
      dropped until initialized = True         dispatcher runs and initialized is True, then
                                               queued in the order they came (TCP batches
                                               through the port compat builds for the
                                               intake, _IntakePort)
    squash_exceptions and global_data read     properties: written before start, used at
      as attributes at every event             start; written after, applied to the running
                                               event thread
    callables may name `config`                every event gets `config` in its locals
    unknown plugin: logged, instance skipped   the same (a warning once when it was enabled)
    disabled instances built, not run          the same
    instance `background: true`: hooks on      the same: one background thread, whose
      one background thread                    global updates the event thread merges
    non-daemon threads serve until terminate   with the server on, a non-daemon thread waits
                                               for the stop
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import yaml

from ..core.config import RiggerConfig
from ..core.dispatcher_port import DispatcherPort
from ..core.event_runner import ExcInfo
from ..core.event_thread import EventThread
from ..core.journaling import Journaling
from ..core.loading import PluginClass, resolve_plugin
from ..core.port import EventSpec
from ..core.rigger import Rigger as _Rigger
from ..core.task import Task
from ..deadline import Deadline
from ..errors import PluginError, ShuttingDown
from ..merge import recursive_update
from ..naming import describe
from ._warn import warn_once

# Top-level keys rigger_mp's config takes from a riggerlib config; the rest stay in
# self.config only. squash_exceptions comes from the attribute, as riggerlib read it.
_CORE_KEYS = frozenset(f.name for f in dataclasses.fields(RiggerConfig)) - {
    "source",
    "raw",
    "plugins",
    "squash_exceptions",
}
_TRUTHY_KEYS = ("threaded", "server_enabled")

_Held = tuple[str | None, str, dict[str, Any], Task]


class _BackgroundThread:
    """riggerlib's background queue: backgrounded hooks run in order on one thread.

    Their global updates are merged by the event thread (the only writer of the
    globals); their local updates are dropped, as riggerlib dropped them.
    """

    def __init__(self, rigger: Rigger, report_failure: Callable[[ExcInfo], None]) -> None:
        self._rigger = rigger
        self._report_failure = report_failure
        self._jobs: collections.deque[tuple[Callable[..., Any], dict[str, Any]] | None] = (
            collections.deque()
        )
        self._merges: collections.deque[Mapping[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._pending = 0
        self.submitted = 0
        self._thread = threading.Thread(
            target=self._run, name="rigger_mp-compat-background", daemon=True
        )
        self._thread.start()

    def submit(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        """Queue one call of a backgrounded hook with its arguments."""
        with self._cond:
            self._jobs.append((func, kwargs))
            self._pending += 1
            self.submitted += 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no job is queued or running; False if ``timeout`` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Run the jobs queued so far, then end the thread."""
        with self._cond:
            self._jobs.append(None)
            self._cond.notify_all()
        self._thread.join()

    def apply_merges(self) -> None:
        """Merge the global updates the jobs returned; on the event thread (or none left)."""
        while self._merges:
            recursive_update(self._rigger.global_data, self._merges.popleft())

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._jobs))
                job = self._jobs.popleft()
            if job is None:
                return
            try:
                self._call(*job)
            finally:
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def _call(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        rigger = self._rigger
        try:
            result = func(**kwargs)
            global_updates = result[1] if result else None
        except Exception as exc:
            if rigger.squash_exceptions:
                self._report_failure((type(exc), exc, exc.__traceback__))
            else:
                rigger.log_message(exc)
            return
        if global_updates:
            self._merges.append(global_updates)
            rigger.call_soon(self.apply_merges)


class _IntakePort(DispatcherPort):
    """The port compat's Rigger hands the TCP intake: its batches get ``config`` in their
    locals and are held, like in-process events, until the dispatcher runs and
    ``initialized`` is True.

    ``hold`` adds ``config`` and returns the stand-in tasks of a batch it held, or None
    once nothing is held; ``finished`` is told of each task queued.
    """

    def __init__(
        self,
        events: EventThread,
        journal: Journaling | None,
        host: Rigger,
        report_failure: Callable[[ExcInfo], None],
        hold: Callable[[Sequence[EventSpec]], list[Task] | None],
        finished: Callable[[Future[dict[str, Any]]], None],
    ) -> None:
        super().__init__(events, journal, host, report_failure)
        self._hold = hold
        self._finished = finished

    def accept_batch(
        self, events: Sequence[EventSpec], seqs: Sequence[int] | None = None
    ) -> list[Task]:
        """Hold the batch, or queue it (a held event's journal seq is not kept: it is
        replayed at the next start)."""
        held = self._hold(events)
        if held is not None:
            return held
        tasks = super().accept_batch(events, seqs)
        for task in tasks:
            task.add_done_callback(self._finished)
        return tasks

    def accept_held(self, event: EventSpec) -> Task:
        """Queue an event this port held, now that holding has ended."""
        return super().accept_batch([event])[0]


class Rigger(_Rigger):
    """riggerlib's ``Rigger(config_file)``; see the module docstring for what differs.

    ``config``, ``global_data``, ``squash_exceptions`` and ``initialized`` are
    attributes a program assigns, as in riggerlib. :meth:`parse_config` reads
    ``config_file`` (unless it is ``None``), builds the instances and starts the
    dispatcher (and its TCP server when ``server_enabled``).
    """

    def __init__(self, config_file: str | None = None) -> None:
        self._core_writing = True  # core's own writes of config/initialized are ignored
        self._config: Any = {}
        self._initialized = False
        self._hold_lock = threading.RLock()
        self._held: list[_Held] | None = []
        self._held_seq = 0
        self._originals: dict[str, Mapping[str, Any]] = {}
        self._backgrounded: set[str] = set()
        self._disabled: dict[str, Any] = {}
        self._bg: _BackgroundThread | None = None
        self._intake_port: _IntakePort | None = None
        self._keeper: threading.Thread | None = None
        self._compat_stopped = threading.Event()
        super().__init__(None)
        self._core_writing = False
        self.config_file = config_file

    # -- riggerlib's attributes ------------------------------------------------------

    @property
    def config(self) -> Any:
        """The program's config mapping, every key kept (riggerlib's ``self.config``)."""
        return self._config

    @config.setter
    def config(self, value: Any) -> None:
        if not self._core_writing:
            self._config = value

    @property
    def initialized(self) -> bool:
        """Events run once this is True and the dispatcher runs (riggerlib's gate)."""
        return self._initialized

    @initialized.setter
    def initialized(self, value: bool) -> None:
        if self._core_writing:
            return
        self._initialized = bool(value)
        if value and self.running:
            self._release_held()

    # -- riggerlib's lifecycle -------------------------------------------------------

    def read_config(self, config_file: str | None) -> None:
        """Read ``config_file`` (YAML) into ``self.config``; exit 127 if it cannot be read."""
        if config_file is None:  # riggerlib exited here; compat keeps the assigned config
            return
        try:
            with open(config_file, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        except OSError:
            print("!!! Configuration file could not be loaded...exiting")
            sys.exit(127)
        except Exception as exc:
            print(exc)
            print("!!! Error parsing Configuration file")
            sys.exit(127)
        self.config = data if data is not None else {}

    def parse_config(self) -> None:
        """riggerlib's sequence: read_config, setup_plugin_instances, start_server."""
        self.read_config(self.config_file)
        self.setup_plugin_instances()
        self.start_server()

    def setup_plugin_instances(self) -> None:
        """Build the instances and start the dispatcher (riggerlib's name for the first)."""
        if not self.running:
            self.start()

    def start_server(self) -> None:
        """Start the dispatcher if not yet started; its TCP server starts with it."""
        if not self.running:
            self.start()

    def await_shutdown(self) -> None:
        """Block until :meth:`stop` has finished (a TCP ``terminate``, or a call)."""
        self._compat_stopped.wait()

    def stop_server(self) -> None:
        """riggerlib's stop: drain everything, stop, then raise ``SystemExit``."""
        host = self.config.get("server_address", "127.0.0.1") if self.config else "127.0.0.1"
        self.log_message(f"Shutdown initiated : {host}")
        self.stop()
        raise SystemExit

    def start(self) -> Rigger:
        """Start the core with the keys it knows from ``self.config``; then run held events."""
        config = self.config if isinstance(self.config, Mapping) else {}
        self.config_source = self._core_config(config)
        self._bg = _BackgroundThread(self, self._report_failure) if self._backgrounded else None
        self._core_writing = True
        try:
            super().start()
        except BaseException:
            if self._bg is not None:
                self._bg.close()
                self._bg = None
            raise
        finally:
            self._core_writing = False
        if self.server_port is not None:  # riggerlib's threads kept the process serving
            self._keeper = threading.Thread(
                target=self.await_shutdown, name="rigger_mp-compat-serving", daemon=False
            )
            self._keeper.start()
        if self._initialized:
            self._release_held()
        return self

    def _core_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The config for rigger_mp's core; builds disabled instances as riggerlib did."""
        core = {key: value for key, value in config.items() if key in _CORE_KEYS}
        for key in _TRUTHY_KEYS:
            if key in core:
                core[key] = bool(core[key])
        core["squash_exceptions"] = self.squash_exceptions
        plugins: dict[str, dict[str, Any]] = {}
        specs = config.get("plugins") or {}
        for ident, spec in specs.items() if isinstance(specs, Mapping) else ():
            spec = spec if isinstance(spec, Mapping) else {}
            cls = self._resolve(str(ident), spec)
            if cls is None:
                continue
            self._originals[ident] = spec
            if not spec.get("enabled"):
                self._disabled[ident] = cls(ident, spec, self)
                continue
            if spec.get("background"):
                self._backgrounded.add(ident)
            plugins[ident] = {**spec, "enabled": True, "background": False}
        core["plugins"] = plugins
        return core

    def _resolve(self, ident: str, spec: Mapping[str, Any]) -> PluginClass | None:
        """The instance's plugin class, or None: riggerlib logged and skipped it."""
        name = spec.get("plugin")
        try:
            if not isinstance(name, str):
                raise PluginError(f"instance {ident!r}: no plugin name")
            return resolve_plugin(name, ident, self.plugins)
        except PluginError as exc:
            self.log_message(f"Plugin [{name}] was not found, disabling instance [{ident}]")
            if spec.get("enabled"):
                warn_once(
                    f"unknown-plugin:{ident}",
                    f"enabled instance {ident!r} skipped, as riggerlib skipped it: {exc}; "
                    "rigger_mp.Rigger.start() raises PluginError instead",
                )
            return None

    def stop(self, timeout: float | None = None) -> None:
        """Run what is held and what the background thread has, then stop as the core does."""
        port = self._intake_port
        if self.running and port is not None and not port.on_event_thread():
            if self._held:
                warn_once(
                    "held-at-stop",
                    f"{len(self._held)} event(s) were still held at stop() because "
                    "initialized was never set True; riggerlib dropped them, compat runs "
                    "them now (rigger_mp.Rigger needs no initialized flag)",
                )
            self._release_held()
            self._settle(None)
        super().stop(timeout)
        bg, self._bg = self._bg, None
        if bg is not None:
            bg.close()
            if port is None or not port.events_running():  # merges the event thread left
                bg.apply_merges()
        self._compat_stopped.set()
        keeper = self._keeper
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join()

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait for the events accepted so far and their backgrounded hooks (thread or pool)."""
        deadline = Deadline(timeout)
        if self.running and not self._settle(timeout):
            return False
        return super().wait_background(deadline.left())

    def _settle(self, timeout: float | None) -> bool:
        """Until the events queued and the background thread's jobs (and what they fire) ran."""
        deadline = Deadline(timeout)
        bg, port = self._bg, self._intake_port
        while port is not None and port.events_running():
            seen = bg.submitted if bg is not None else 0
            if bg is not None and not bg.wait_idle(deadline.left()):
                return False
            fence = threading.Event()
            self.call_soon(fence.set)  # runs after every event queued before it
            if not fence.wait(deadline.left()):
                return False
            if bg is None or bg.submitted == seen:
                return True
        return True

    # -- events ----------------------------------------------------------------------

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue an event with ``config`` in its locals; held until the dispatcher runs."""
        kwargs["config"] = self.config
        with self._hold_lock:
            if self._held is not None:
                return self._hold(None, hook_name, kwargs)
        try:
            task = super().fire_hook(hook_name, **kwargs)
        except ShuttingDown as exc:
            warn_once(
                "fired-after-stop",
                f"{exc}: the event is dropped, as riggerlib dropped it; "
                "rigger_mp.Rigger.fire_hook raises ShuttingDown",
            )
            task = Task("dropped", hook_name)
            task.set_running_or_notify_cancel()
            task.set_exception(exc)
            return task
        task.add_done_callback(self._finished)
        return task

    def _make_port(self, events: EventThread, journal: Journaling | None) -> DispatcherPort:
        """The intake's port: its batches are held like in-process events (see _IntakePort)."""
        port = _IntakePort(
            events, journal, self, self._report_failure, self._hold_batch, self._finished
        )
        self._intake_port = port
        return port

    def _hold_batch(self, events: Sequence[EventSpec]) -> list[Task] | None:
        """The TCP intake's batch: ``config`` added to each event; their stand-ins if they
        are held, None if they are to be queued now."""
        config = self.config
        for _tid, _name, kwargs in events:
            kwargs["config"] = config
        with self._hold_lock:
            if self._held is not None:
                return [self._hold(tid, name, kwargs) for tid, name, kwargs in events]
        return None

    def _hold(self, tid: str | None, hook_name: str, kwargs: dict[str, Any]) -> Task:
        """Keep an event until :meth:`_release_held`; its stand-in task finishes with it."""
        assert self._held is not None
        self._held_seq += 1
        stand_in = Task(tid or f"held{self._held_seq}", hook_name)
        self._held.append((tid, hook_name, kwargs, stand_in))
        return stand_in

    def _release_held(self) -> None:
        """Queue the held events, in the order they came, and stop holding."""
        with self._hold_lock:
            held, self._held = self._held, None
            for tid, hook_name, kwargs, stand_in in held or ():
                try:
                    if tid is None:
                        task = super().fire_hook(hook_name, **kwargs)
                    else:
                        assert self._intake_port is not None  # a batch came from it
                        task = self._intake_port.accept_held((tid, hook_name, kwargs))
                except ShuttingDown as exc:
                    stand_in.set_running_or_notify_cancel()
                    stand_in.set_exception(exc)
                    continue
                task.add_done_callback(functools.partial(self._finished, stand_in=stand_in))

    def _finished(self, task: Any, stand_in: Task | None = None) -> None:
        """riggerlib logged a failed event with log_message; pass the outcome on."""
        exc = task.exception()
        if exc is not None:
            self.log_message(exc)
        if stand_in is not None and stand_in.set_running_or_notify_cancel():
            if exc is not None:
                stand_in.set_exception(exc)
            else:
                stand_in.set_result(task.result())

    # -- riggerlib's registration and instances ----------------------------------------

    def register_plugin(self, cls: PluginClass, plugin_name: str | None = None) -> None:
        """Name ``cls`` for the config; a taken or missing name is logged and ignored."""
        if plugin_name in self.plugins:
            self.log_message(f"Plugin name already taken [{plugin_name}]")
            warn_once(
                f"plugin-taken:{plugin_name}",
                f"register_plugin: name {plugin_name!r} already taken; the first class "
                "stays, as in riggerlib (rigger_mp.Rigger raises PluginError)",
            )
        elif plugin_name is None:
            self.log_message("Plugin name cannot be None")
        else:
            self.plugins[plugin_name] = cls

    def register_hook_callback(
        self,
        hook_name: str | None = None,
        ctype: str = "pre",
        callback: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Bind a pre or post callback; riggerlib ignored a call without hook or callback."""
        if not hook_name or callback is None or ctype not in ("pre", "post"):
            warn_once(
                "callback-ignored",
                f"register_hook_callback({hook_name!r}, {ctype!r}, {callback!r}) ignored, "
                "as riggerlib ignored it; rigger_mp.Rigger raises TypeError/ValueError",
            )
            return ""
        return super().register_hook_callback(hook_name, ctype, callback, name)

    def get_instance_obj(self, name: str) -> Any:
        """The plugin object of instance ``name`` (disabled ones too), or None."""
        obj = super().get_instance_obj(name)
        return obj if obj is not None else self._disabled.get(name)

    def get_instance_data(self, name: str) -> Mapping[str, Any] | None:
        """The instance's mapping from ``self.config`` (disabled ones too), or None."""
        if super().get_instance_obj(name) is None and name not in self._disabled:
            return None
        return self._originals.get(name)

    def configure_plugin(self, name: str, *args: Any, **kwargs: Any) -> None:
        """``configure()`` instance ``name``; riggerlib did nothing for an unknown name."""
        obj = self.get_instance_obj(name)
        if obj is None:
            warn_once(
                f"configure-missing:{name}",
                f"configure_plugin({name!r}): no such instance; ignored as riggerlib "
                "ignored it (rigger_mp.Rigger raises PluginError)",
            )
            return
        obj.configure(*args, **kwargs)

    def log_message(self, message: Any) -> None:
        """Print ``message``, as riggerlib did; override to send it elsewhere."""
        print(message)

    # -- for compat's RiggerBasePlugin -------------------------------------------------

    def instance_data(self, ident: str, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """The mapping riggerlib gave a plugin: the instance's own from ``self.config``."""
        return self._originals.get(ident, data)

    def backgrounded(self, ident: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        """``callback`` as bound for instance ``ident``: queued on the background thread
        when the instance says ``background: true``, else itself."""
        bg = self._bg
        if ident not in self._backgrounded or bg is None:
            return callback

        def submit(**kwargs: Any) -> None:
            bg.submit(callback, kwargs)

        functools.update_wrapper(submit, callback)  # the same signature picks the arguments
        submit.__qualname__ = f"background({describe(callback)})"
        return submit
