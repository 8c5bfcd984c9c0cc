"""``rigger-mp serve``: a dispatcher with its TCP server, run until told to stop.

The main thread starts the dispatcher, prints the bound address on stdout (one line,
``rigger-mp: serving on HOST:PORT (pid N)``, which scripts and tests wait for) and
blocks until a stop begins: SIGINT, SIGTERM, or a TCP ``terminate`` (which stops the
dispatcher from the server's intake). It then drains what was accepted, with a
progress line on stderr at most every half second while work is left, and ends with a
one-line summary on stdout.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import Any

import yaml

from ..core.config import ConfigSource, load_config
from ..core.loading import resolve_plugin
from ..core.rigger import Rigger
from ..errors import PluginError
from ..plugins import artifacts, report
from ..protocol import DEFAULT_PORT
from .status import human_duration

logger = logging.getLogger("rigger_mp.serve")


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
    path: str | None, host: str | None = None, port: int | None = None
) -> dict[str, Any]:
    """The mapping ``serve`` runs: the file (validated as a file, so errors name it) or
    the default, with the server enabled and ``--host``/``--port`` applied."""
    if path is None:
        raw = copy.deepcopy(DEFAULT_CONFIG)
    else:
        raw = dict(load_config(path).raw)
        if raw.get("server_enabled") is False:
            logger.info("%s: server_enabled is false; serve enables the server anyway", path)
    raw["server_enabled"] = True
    if host is not None:
        raw["server_address"] = host
    if port is not None:
        raw["server_port"] = port
    load_config(raw)  # the overrides are valid too
    return raw


def check(path: str | None) -> str:
    """Validate a config the way ``start()`` would, without starting anything.

    Keys and types, then each enabled instance's plugin name (registered names do not
    exist here: built-ins, entry points and ``module:Class`` do), then each instance is
    built, so ``plugin_initialize()`` checks its own settings.
    """
    raw = build_config(path)
    settings = load_config(raw)
    names = []
    for ident, spec in settings.plugins.items():
        cls = resolve_plugin(spec.plugin, ident, {})
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
    """Prints ``draining: 1,234 events left`` on stderr while a stop drains."""

    def __init__(self, rigger: Rigger) -> None:
        self.rigger = rigger
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
            events, jobs = work_left(self.rigger.stats())
            if events or jobs:
                print(
                    f"draining: {events:,} events left, {jobs:,} background jobs",
                    file=sys.stderr,
                    flush=True,
                )


def serve(
    path: str | None,
    host: str | None = None,
    port: int | None = None,
    artifacts_root: str = "rigger-artifacts",
    journal: bool = True,
) -> int:
    """Run until SIGINT, SIGTERM or ``terminate``; drain; return the exit status.

    With ``journal`` (the default) and no ``journal:`` in the config, the journal is
    ``ARTIFACTS/rigger-journal.sqlite``: a restart on the same artifacts replays it.
    """
    config = with_journal(build_config(path, host, port), artifacts_root, journal)
    rigger = ServedRigger(report.with_dir(config, artifacts_root))
    artifacts.install(rigger, artifacts_root)
    started = time.monotonic()
    rigger.start()
    previous = {
        signum: signal.signal(signum, _stop_handler(rigger))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        print(
            f"rigger-mp: serving on {rigger.server_address}:{rigger.server_port} "
            f"(pid {os.getpid()})",
            flush=True,
        )
        logger.info(
            "plugins: %s; artifacts under %s; journal: %s; stop with Ctrl-C, SIGTERM or "
            "`rigger-mp terminate --port %s`",
            ", ".join(f"{i} ({p.config.plugin})" for i, p in rigger.instances.items()) or "none",
            os.path.abspath(artifacts_root),
            config.get("journal") or "none",
            rigger.server_port,
        )
        rigger.stop_begun.wait()
        logger.info("stopping: draining the events already accepted")
        with DrainProgress(rigger):
            rigger.stop()  # returns at once if a `terminate` is already stopping it
            rigger.wait_stopped()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        rigger.stop()
    print(summary(rigger.stats(), time.monotonic() - started), flush=True)
    for written in report.rewrite_reports(rigger.instances):
        print(f"rigger-mp: report: {written}", flush=True)
    return 0


def _stop_handler(rigger: ServedRigger) -> Any:
    def handle(signum: int, frame: FrameType | None) -> None:
        if rigger.stop_begun.is_set():
            logger.warning("already draining; send SIGKILL to abandon what is left")
            return
        logger.info("received %s", signal.Signals(signum).name)
        rigger.stop_begun.set()

    return handle


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
