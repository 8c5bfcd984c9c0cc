"""Plugins for the journal's dispatcher tests, importable by name in a ``serve`` subprocess.

Each run of a hook appends one line to the file ``path`` of its config with ``os.write`` on
an ``O_APPEND`` descriptor: the line is the kernel's once written, so a SIGKILL of the
process right after it loses nothing, and the file counts every run exactly.
"""

from __future__ import annotations

import os
import signal
import time

from rigger_mp import RiggerBasePlugin


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


class Counted(RiggerBasePlugin):
    """``ev(k)``: appends ``<tag> <k> <attempt> <end>`` (``end``: ``time.monotonic()`` as the
    hook ends, the same clock in every process); ``poison`` SIGKILLs its own process.

    Config: ``path``; ``tag`` (default ``fg``); ``kill_after_replays``: SIGKILL the process
    when this many replayed events have run in it (a crash during the replay).
    """

    def plugin_initialize(self) -> None:
        self.replays = 0
        self.register_plugin_hook("ev", self.ev)
        self.register_plugin_hook("poison", self.poison)

    def ev(self, k: int, rigger_replay: bool = False, rigger_attempt: int = 1) -> None:
        tag = self.data.get("tag", "fg")
        _append(self.data["path"], f"{tag} {k} {rigger_attempt} {time.monotonic():.6f}")
        if rigger_replay:
            self.replays += 1
            if self.replays == self.data.get("kill_after_replays"):
                os.kill(os.getpid(), signal.SIGKILL)

    def poison(self, rigger_attempt: int = 1) -> None:
        _append(self.data["path"], f"poison 0 {rigger_attempt}")
        os.kill(os.getpid(), signal.SIGKILL)


class Reported(RiggerBasePlugin):
    """``finish_test``: appends ``<location>::<name> <rerun> <attempt>`` to ``path``, one
    line per run of the hook (so the file counts how often each test was reported)."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("finish_test", self.finish_test)

    def finish_test(
        self, test_location: str, test_name: str, rerun: int = 0, rigger_attempt: int = 1
    ) -> None:
        _append(self.data["path"], f"{test_location}::{test_name} {rerun} {rigger_attempt}")
