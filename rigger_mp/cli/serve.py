"""``rigger-mp serve``: a dispatcher with its TCP server, run until told to stop.

The main thread starts the dispatcher, prints the bound address on stdout (one line,
``rigger-mp: serving on HOST:PORT (pid N)``, which scripts and tests wait for) and
blocks until a stop begins: SIGINT, SIGTERM, or a TCP ``terminate`` (which stops the
dispatcher from the server's intake). It then drains what was accepted, on a thread of
its own, with a progress line on stderr at most every half second while work is left
(what it waits for), and ends with a one-line summary on stdout. The drain is bounded by
``--stop-timeout``: what is left then is abandoned and named in the log; a second signal
abandons at once, printing what was left, and exits with status 1.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any, NoReturn

import psutil
import yaml

from .. import printable
from ..core.config import ConfigSource, load_config
from ..core.loading import check_config_keys, instance_class
from ..core.rigger import Rigger
from ..deadline import Deadline
from ..errors import PluginError
from ..plugins import artifacts, report
from ..protocol import DEFAULT_PORT, TOKEN_ENV
from .status import human_duration

logger = printable.logger("rigger_mp.serve")


def main_job_config(
    port: int,
    workers: int | None,
    level: int,
    remove_originals: bool,
    archive_format: str = "zst",
) -> dict[str, Any]:
    """The main job's dispatcher: per-test log, archiver backgrounded on artifacts_ready,
    and the session's report.html in the artifacts root (see ``report.with_dir``).

    The archiver takes its root from :func:`rigger_mp.plugins.artifacts.install`.
    """
    return {
        "server_enabled": True,
        "server_address": "127.0.0.1",
        "server_port": port,
        "workers": workers,
        "plugins": {
            "testlog": {"plugin": "testlog"},
            "archive": {
                "plugin": "archive",
                "background": True,
                "event": artifacts.READY_EVENT,
                "format": archive_format,
                "level": level,
                "remove_originals": remove_originals,
            },
            "report": {"plugin": "report"},
        },
    }


DEFAULT_CONFIG: dict[str, Any] = main_job_config(DEFAULT_PORT, None, 3, False)
"""The embedded config of ``serve`` without ``-c``: what the demo runs, on a fixed port."""

JOURNAL_NAME = "rigger-journal.sqlite"
"""The journal ``serve`` and ``demo`` keep by default, in the directory they write to."""


def with_journal(
    config: dict[str, Any], directory: str | os.PathLike[str], on: bool
) -> dict[str, Any]:
    """``config`` with the default journal in ``directory`` (made if missing), unless the
    config names its own (``journal:``, null included) or ``on`` is False (``--no-journal``:
    the config's is dropped too)."""
    config = dict(config)
    if not on:
        config.pop("journal", None)
    elif "journal" not in config:
        os.makedirs(directory, exist_ok=True)
        config["journal"] = os.path.join(os.fspath(directory), JOURNAL_NAME)
    return config


PROGRESS_EVERY = 0.5
"""Seconds between two draining progress lines."""


def default_config_yaml() -> str:
    """The embedded default config, as a YAML file would say it."""
    return yaml.safe_dump(DEFAULT_CONFIG, sort_keys=False)


def build_config(
    path: str | None,
    host: str | None = None,
    port: int | None = None,
    http: tuple[str | None, int] | None = None,
) -> dict[str, Any]:
    """The mapping ``serve`` runs: the file (validated as a file, so errors name it) or
    the default, with the server enabled and ``--host``/``--port`` applied."""
    if path is None:
        raw = copy.deepcopy(DEFAULT_CONFIG)
    else:
        settings = load_config(path)
        check_config_keys(settings)  # here, so that an error names the file and line
        raw = dict(settings.raw)
        if raw.get("server_enabled") is False:
            logger.info("%s: server_enabled is false; serve enables the server anyway", path)
    raw["server_enabled"] = True
    if host is not None:
        raw["server_address"] = host
    if port is not None:
        raw["server_port"] = port
    if http is not None:  # --http [HOST:]PORT
        if http[0] is not None:
            raw["http_address"] = http[0]
        raw["http_port"] = http[1]
    load_config(raw)  # the overrides are valid too
    return raw


def check(path: str | None) -> str:
    """Validate a config the way ``start()`` would, without starting anything.

    Keys and types, then each instance's plugin name (registered names do not exist
    here: built-ins, entry points and ``module:Class`` do) and the keys its plugin
    declares (errors name the file and line), then each enabled instance is built, so
    ``plugin_initialize()`` checks its own settings.
    """
    raw = build_config(path)
    settings = load_config(raw)
    names = []
    for ident, spec in settings.plugins.items():
        cls = instance_class(spec, path or settings.source, {})
        if spec.enabled:
            try:
                cls(ident, spec.data, None)
            except Exception as exc:
                raise PluginError(
                    f"instance {ident!r}: plugin {spec.plugin!r} rejects its config: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        names.append(f"{ident} ({spec.plugin}{'' if spec.enabled else ', disabled'})")
    source = path or "the embedded default config"
    return f"{source}: ok; {len(names)} plugin instance(s): {', '.join(names) or 'none'}"


class ServedRigger(Rigger):
    """A Rigger that says when a stop begins, whoever began it."""

    def __init__(self, config: ConfigSource = None) -> None:
        super().__init__(config)
        self.stop_begun = threading.Event()

    def stop(self, timeout: float | None = None) -> None:
        self.stop_begun.set()
        super().stop(timeout)


def work_left(stats: Mapping[str, Any]) -> tuple[int, int]:
    """(events accepted but not finished, background jobs queued or running)."""
    events = stats.get("events", {})
    left = events.get("accepted", 0) - sum(
        events.get(key, 0) for key in ("done", "failed", "abandoned")
    )
    background = stats.get("background", {})
    jobs = background.get("queued", 0) + background.get("running", 0)
    return max(0, left), max(0, jobs)


class DrainProgress:
    """Prints what a stop still waits for on stderr, every :data:`PROGRESS_EVERY` s:
    ``draining: 1,234 events left; background: 5 queued, 2 running; abandoned in 25 s``."""

    def __init__(self, rigger: Rigger, deadline: Deadline) -> None:
        self.rigger = rigger
        self.deadline = deadline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-drain-progress")

    def __enter__(self) -> DrainProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(PROGRESS_EVERY):
            line = waiting_for(self.rigger.stats())
            if line:
                left = self.deadline.left()
                when = "" if left is None else f"; abandoned in {left:.0f} s"
                print(f"draining: {line}{when}", file=sys.stderr, flush=True)


def waiting_for(stats: Mapping[str, Any]) -> str:
    """What a stop still waits for, from ``stats()``; empty if nothing."""
    events, _ = work_left(stats)
    background = stats.get("background", {})
    queued, running = background.get("queued", 0), background.get("running", 0)
    parts = [f"{events:,} events left"] if events else []
    if queued or running:
        parts.append(f"background: {queued:,} queued, {running:,} running")
    return "; ".join(parts)


STOP_SLACK = 5.0
"""Seconds past ``--stop-timeout`` that ``serve`` gives the stop to end the workers and
the server (after abandoning what was left) before it abandons everything and exits."""


class Stopping:
    """What ``serve``'s signals and its stop thread tell the main thread.

    The first SIGINT/SIGTERM begins the stop (:attr:`ServedRigger.stop_begun`); a
    second one, or the stop outrunning its bound, abandons: the main thread reports
    what was left and exits at once. ``wake`` is set by whichever comes first.
    """

    def __init__(self, rigger: ServedRigger) -> None:
        self.rigger = rigger
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.abandon = threading.Event()
        self.by_signal = False
        """Whether a signal began the stop (else a TCP ``terminate``, whose thread stops)."""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.rigger.stop_begun.is_set():
            logger.warning("received %s again: abandoning what is left now", name)
            self.abandon.set()
            self.wake.set()
            return
        logger.info("received %s", name)
        self.by_signal = True
        self.rigger.stop_begun.set()

    def run_stop(self, timeout: float) -> None:
        """The stop thread: stop, or wait for the stop a ``terminate`` began (calling
        stop() too could fail: this thread may get the id of the event thread, ended
        meanwhile, which the loop still counts as one that runs events)."""
        try:
            if self.by_signal:
                self.rigger.stop(timeout)
            self.rigger.wait_stopped()
            self.stopped.set()
        except Exception:
            logger.exception("stop() failed")
        finally:
            self.wake.set()


def abandon_now(rigger: Rigger, why: str) -> NoReturn:
    """Report what is left, end every process of ours, exit with status 1 at once.

    The hooks still running cannot be interrupted in this process: only exiting ends
    them (the server and the workers would also notice that the main process is gone).
    """
    left = waiting_for(rigger.stats()) or "nothing"
    print(f"rigger-mp: {why}; abandoned: {left}", flush=True)
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    sys.stderr.flush()
    os._exit(1)


def terminate_hint(rigger: Rigger) -> str:
    """The ``rigger-mp terminate`` command that stops this dispatcher, as a log line says
    it: its host when not the command's default, and how to give the token it needs."""
    settings = rigger.settings
    assert settings is not None and rigger.server_port is not None
    host = rigger.server_address
    command = "rigger-mp terminate" + (f" --host {host}" if host != "127.0.0.1" else "")
    command = f"`{command} --port {rigger.server_port}`"
    if settings.server_token is not None:
        command += f" with ${TOKEN_ENV} set to the server_token (or --token TOKEN)"
    return command


def serve(
    path: str | None,
    host: str | None = None,
    port: int | None = None,
    artifacts_root: str = "rigger-artifacts",
    journal: bool = True,
    http: tuple[str | None, int] | None = None,
    stop_timeout: float = 30.0,
) -> int:
    """Run until SIGINT, SIGTERM or ``terminate``; drain; return the exit status.

    The drain is bounded: what is not done after ``stop_timeout`` is abandoned (named in
    the log), and ``serve`` exits at the latest :data:`STOP_SLACK` s later; a second
    signal abandons at once. With ``journal`` (the default) and no ``journal:`` in the
    config, the journal is ``ARTIFACTS/rigger-journal.sqlite``: a restart on the same
    artifacts replays it.
    """
    config = with_journal(build_config(path, host, port, http), artifacts_root, journal)
    rigger = ServedRigger(report.with_dir(config, artifacts_root))
    artifacts.install(rigger, artifacts_root)
    started = time.monotonic()
    rigger.start()
    stopping = Stopping(rigger)
    previous = {
        signum: signal.signal(signum, stopping.handle) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        print(
            f"rigger-mp: serving on {rigger.server_address}:{rigger.server_port} "
            f"(pid {os.getpid()})",
            flush=True,
        )
        served_http = rigger.stats().get("server", {})
        if served_http.get("http_port") is not None:
            print(
                f"rigger-mp: HTTP on http://{served_http['http_address']}:"
                f"{served_http['http_port']}/",
                flush=True,
            )
        logger.info(
            "plugins: %s; artifacts under %s; journal: %s; stop with Ctrl-C, SIGTERM or %s",
            ", ".join(f"{i} ({p.config.plugin})" for i, p in rigger.instances.items()) or "none",
            os.path.abspath(artifacts_root),
            config.get("journal") or "none",
            terminate_hint(rigger),
        )
        rigger.stop_begun.wait()
        logger.info(
            "stopping: draining the events already accepted (abandoned after %g s; "
            "a second signal abandons at once)",
            stop_timeout,
        )
        deadline = Deadline(stop_timeout)
        threading.Thread(
            target=stopping.run_stop, args=(stop_timeout,), name="serve-stop", daemon=True
        ).start()
        with DrainProgress(rigger, deadline):
            stopping.wake.wait(stop_timeout + STOP_SLACK)
        if stopping.abandon.is_set():
            abandon_now(rigger, "stopped by a second signal")
        if not stopping.stopped.is_set():
            abandon_now(rigger, f"the stop did not end within {stop_timeout + STOP_SLACK:g} s")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(summary(rigger.stats(), time.monotonic() - started), flush=True)
    for written in report.rewrite_reports(rigger.instances):
        print(f"rigger-mp: report: {written}", flush=True)
    return 0


def summary(stats: Mapping[str, Any], seconds: float) -> str:
    """The last line of ``serve``: what it did in its life."""
    events = stats.get("events", {})
    background = stats.get("background", {})
    text = (
        f"rigger-mp: stopped after {human_duration(seconds)}: "
        f"{events.get('accepted', 0):,} events ({events.get('done', 0):,} done, "
        f"{events.get('failed', 0):,} failed, {events.get('abandoned', 0):,} abandoned)"
    )
    if background:
        text += (
            f"; background jobs: {background.get('done', 0):,} done, "
            f"{background.get('failed', 0):,} failed, {background.get('abandoned', 0):,} abandoned"
        )
    return text
