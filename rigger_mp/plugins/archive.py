"""Built-in plugin ``archive``: pack a test's artifact directory into a compressed tarball.

Config (all optional)::

    plugins:
      archiver:
        plugin: archive
        event: finish_test        # the event whose hook packs ``artifact_path``
        format: xz                # xz (.tar.xz) or gz (.tar.gz)
        level: 6                  # xz preset 0-9, gzip level 0-9
        dest: null                # directory for the archives; default: beside the directory
        remove_originals: false   # delete the directory once it is packed
        background: true          # run in the worker pool (the default: it is CPU-heavy)

Each run records ``{artifact_path: {archive, bytes_in, bytes_out, seconds}}`` under the
global key ``archives``. A missing or empty directory is logged and recorded with an
``error`` instead of an archive; it does not fail the hook.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import time
from typing import Any

from ..core.plugin import RiggerBasePlugin
from ..errors import PluginError

logger = logging.getLogger("rigger_mp")

FORMATS = {"xz": ".tar.xz", "gz": ".tar.gz"}
Updates = tuple[None, dict[str, Any]]


class ArchivePlugin(RiggerBasePlugin):
    """Packs ``artifact_path`` into ``<name>.tar.xz`` (or ``.tar.gz``) on one event."""

    def plugin_initialize(self) -> None:
        data = self.data
        self.event = data.get("event", "finish_test")
        self.format = data.get("format", "xz")
        self.level = data.get("level", 6)
        self.dest = data.get("dest")
        self.remove_originals = data.get("remove_originals", False)
        where = f"instance {self.ident!r} (plugin archive)"
        if not isinstance(self.event, str) or not self.event:
            raise PluginError(f"{where}: event must be a non-empty string")
        if self.format not in FORMATS:
            raise PluginError(
                f"{where}: format must be one of {', '.join(FORMATS)}, not {self.format!r}"
            )
        if not (
            isinstance(self.level, int)
            and not isinstance(self.level, bool)
            and 0 <= self.level <= 9
        ):
            raise PluginError(f"{where}: level must be an integer from 0 to 9")
        if self.dest is not None and not isinstance(self.dest, str):
            raise PluginError(f"{where}: dest must be a directory path or null")
        if not isinstance(self.remove_originals, bool):
            raise PluginError(f"{where}: remove_originals must be a boolean")
        self.register_plugin_hook(self.event, self.archive, bg=data.get("background", True))

    def archive(self, artifact_path: str | None = None) -> Updates | None:
        """Pack ``artifact_path``; record the result under ``archives``."""
        if not artifact_path:
            logger.warning("rigger_mp: archive %r: no artifact_path in the event", self.ident)
            return None
        path = os.fspath(artifact_path)
        if not os.path.isdir(path):
            return self._report(path, "missing directory")
        files = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        if not files:
            return self._report(path, "empty directory")
        start = time.perf_counter()
        bytes_in = sum(os.path.getsize(f) for f in files if not os.path.islink(f))
        base = os.path.basename(os.path.normpath(path))
        folder = self.dest or os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, base + FORMATS[self.format])
        partial = f"{target}.part-{os.getpid()}"
        try:
            with self._open(partial) as tar:
                tar.add(path, arcname=base)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        if self.remove_originals:
            shutil.rmtree(path)
        record = {
            "archive": target,
            "bytes_in": bytes_in,
            "bytes_out": os.path.getsize(target),
            "seconds": time.perf_counter() - start,
        }
        return None, {"archives": {path: record}}

    def _open(self, name: str) -> tarfile.TarFile:
        if self.format == "xz":
            return tarfile.open(name, "w:xz", preset=self.level)
        return tarfile.open(name, "w:gz", compresslevel=self.level)

    def _report(self, path: str, problem: str) -> Updates:
        logger.warning("rigger_mp: archive %r: %s: %s, nothing packed", self.ident, path, problem)
        record = {"archive": None, "bytes_in": 0, "bytes_out": 0, "seconds": 0.0, "error": problem}
        return None, {"archives": {path: record}}
