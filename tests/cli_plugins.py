"""Plugin classes for the command-line and pytest-plugin tests, importable by name
(``tests.cli_plugins:Recorder``) in a ``rigger-mp serve`` or pytest subprocess."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

from rigger_mp import RiggerBasePlugin

RECORDED = ("start_session", "finish_session", "start_test", "finish_test")
KEYS = ("run_id", "test_name", "test_location", "test_result", "exit_status")


class Recorder(RiggerBasePlugin):
    """Appends one JSON line per session/test event to the file ``path`` of its config."""

    def plugin_initialize(self) -> None:
        self._lock = threading.Lock()
        for event in RECORDED:
            self.register_plugin_hook(event, functools.partial(self.record, event))

    def record(self, event: str, **namespace: Any) -> None:
        line = {"event": event, **{k: namespace[k] for k in KEYS if k in namespace}}
        with self._lock, open(self.data["path"], "a") as out:
            out.write(json.dumps(line) + "\n")


class Slow(RiggerBasePlugin):
    """A hook that takes ``seconds`` (config) of work per ``work`` event: something to drain."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("work", self.work)

    def work(self) -> tuple[None, dict[str, Any]]:
        time.sleep(float(self.data.get("seconds", 0.05)))  # the work itself, not a wait
        return None, {"worked": 1}


def read_records(path: str) -> list[dict[str, Any]]:
    """The lines a :class:`Recorder` wrote."""
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]


class StoryRecorder(RiggerBasePlugin):
    """Appends one JSON line per session/test event with every name the event carries
    (locals over globals; a value JSON cannot hold as its text), to the file ``path``."""

    def plugin_initialize(self) -> None:
        self._lock = threading.Lock()
        for event in RECORDED:
            self.register_plugin_hook(event, functools.partial(self.record, event))

    def record(self, event: str, **namespace: Any) -> None:
        line = json.dumps({"event": event, **namespace}, default=str)
        with self._lock, open(self.data["path"], "a") as out:
            out.write(line + "\n")
