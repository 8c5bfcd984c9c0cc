"""The seed's per-test log plugin: one small log file per test in its artifact directory.

The file is written below the artifacts root that :func:`rigger_mp.plugins.artifacts.install`
states in the event's locals (a :class:`~rigger_mp.plugins.artifacts.TrustedRoot`), through
:func:`rigger_mp.safe_paths.open_file`: no link below the root is followed, so a directory
link planted inside a shared artifacts directory cannot send the log elsewhere. Without a
trusted root, or with an ``artifact_path`` that resolves outside it, the hook fails,
naming the path, and writes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import PurePath
from typing import ClassVar

from ..core.plugin import ConfigKeys, RiggerBasePlugin
from ..errors import PluginError
from ..safe_paths import inside, open_file
from .artifacts import TrustedRoot


class TestLog(RiggerBasePlugin):
    """Writes ``<ident>.log`` into ``artifact_path``: the test's name and start time, then
    its result.
    """

    __test__ = False  # not a pytest test class, whatever its name says
    config_keys: ClassVar[ConfigKeys] = {}  # no keys of its own

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_test", self.start_test)
        self.register_plugin_hook("finish_test", self.finish_test)

    def start_test(
        self, test_name: str, artifact_path: str, artifacts_root: str | None = None
    ) -> None:
        text = f"{test_name}\nstarted {time.time():.3f}\n"
        self._write(artifact_path, artifacts_root, text, os.O_TRUNC)

    def finish_test(
        self, artifact_path: str, test_result: str, artifacts_root: str | None = None
    ) -> None:
        self._write(artifact_path, artifacts_root, f"{test_result}\n", os.O_APPEND)

    def _write(self, artifact_path: str, root: str | None, text: str, mode: int) -> None:
        if not isinstance(root, TrustedRoot):
            raise PluginError(
                f"testlog {self.ident!r}: no artifacts root (call "
                f"rigger_mp.plugins.artifacts.install), so {artifact_path!r} is not written"
            )
        os.makedirs(root, exist_ok=True)  # the operator's: made as it is, link or not
        relative = below(root, artifact_path) / f"{self.ident}.log"
        fd = open_file(root, relative, os.O_WRONLY | os.O_CREAT | mode)
        with os.fdopen(fd, "w", encoding="utf-8") as log:
            log.write(text)


def below(root: str, artifact_path: str) -> PurePath:
    """``artifact_path`` relative to ``root``, for :func:`open_file` below ``root``.

    Spelled below it (the artifact-path callback's own paths): taken as spelled, with no
    resolving, since ``open_file`` refuses any link on the way; that saves two realpath
    walks per write. Else (``..``, the root itself, another spelling of the root) resolved
    by :func:`inside`, which refuses what lies outside.
    """
    try:
        relative = PurePath(artifact_path).relative_to(root)
    except ValueError:
        return inside(root, artifact_path)
    if not relative.parts or ".." in relative.parts:
        return inside(root, artifact_path)
    return relative
