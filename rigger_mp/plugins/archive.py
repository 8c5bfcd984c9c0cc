"""Built-in plugin ``archive``: pack a test's artifact directory into a compressed tarball.

Config (all optional)::

    plugins:
      archiver:
        plugin: archive
        event: artifacts_ready    # the event whose hook packs ``artifact_path``
        format: zst               # zst (.tar.zst), xz (.tar.xz) or gz (.tar.gz)
        level: 3                  # zst 1-22 (default 3), xz preset 0-9, gzip 0-9 (default 6)
        root: null                # the artifacts root; default: from artifacts.install
        dest: null                # directory for the archives; default: beside the directory
        remove_originals: false   # delete the directory once it is packed
        keep_errors: 20           # how many of the last problems ``archives`` keeps
        background: true          # run in the worker pool (the default: it is CPU-heavy)

Trust: the config is the operator's, an event may come from the network. The hook packs
only a directory strictly inside the artifacts root, checked where it is used: the path
(made absolute against the root if relative) is resolved with ``os.path.realpath``, so a
symlink inside the root that points outside is refused, and so is the root itself. The
root is ``root`` from the config, else the :class:`~rigger_mp.plugins.artifacts.TrustedRoot`
that :func:`rigger_mp.plugins.artifacts.install`'s pre callback puts into the event's locals (a
type no JSON event can carry); with neither, the hook refuses to pack. A refused path
fails the hook (logged, counted, raised to a waiter); nothing is packed or deleted.
``dest`` comes from the config only; by default the archive goes beside the directory,
which is inside the root.

Members keep their times in whole seconds (no PAX extended header per member).

Archives stream: ``tarfile`` writes into the compressor's file object, which writes into
a hidden ``.<archive>.part-<pid>-<n>``, renamed over the final name only once complete;
memory stays flat whatever the size of the directory. The partial file and any directory
made on the way are created below the artifacts root (or ``dest``) without following a
link (:func:`rigger_mp.safe_paths.atomic_file`): a link planted there is refused, naming
it, and nothing is written through it. The partial file is created with the mode of the
directory it packs (read and write bits only; the umask may only remove more), so an
archive is never more readable than its directory.

Zstandard comes from the standard library's ``compression.zstd`` on Python 3.14+, else
from ``backports.zstd``, its backport with the same API.

Records stay bounded: each plugin instance in each process (a pool worker, or the main
process for a foreground hook) keeps running totals and sends them under the global key
``archives``, as ``{"<ident>@<pid>": {archives, bytes_in, bytes_out, seconds, errors,
last_errors}}``; each send replaces that entry, so the key grows by one entry per worker
process, never per event. ``last_errors`` is a tuple of the last ``keep_errors``
``{"path", "error"}`` records (an empty directory: logged and recorded, not a failure).
:func:`totals` adds the entries up.

A missing directory fails the hook (logged and counted by the dispatcher, raised to a
waiter): the message names the path, the host and pid where the hook ran, and that with
``pool: dask`` the artifacts must be on a filesystem shared with the workers. Packing
nothing there must not look like success. It is counted in the totals too, and shows in
the next record this instance sends from that process.
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import shutil
import socket
import stat
import sys
import tarfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import IO, Any, ClassVar, NamedTuple, NoReturn

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # the backport of the 3.14 module: same API, one code path
    from backports import zstd

from .. import printable
from ..core.plugin import ConfigKeys, RiggerBasePlugin
from ..errors import PluginError, UnsafePath
from ..safe_paths import atomic_file
from .artifacts import READY_EVENT, TrustedRoot

logger = printable.logger("rigger_mp")


class Format(NamedTuple):
    suffix: str
    low: int
    high: int
    default: int


FORMATS = {
    "zst": Format(".tar.zst", 1, 22, 3),
    "xz": Format(".tar.xz", 0, 9, 6),
    "gz": Format(".tar.gz", 0, 9, 6),
}
DEFAULT_FORMAT = "zst"
DEFAULT_KEEP_ERRORS = 20
COPY_BUFFER = 1 << 20
"""Bytes tarfile copies per read/write: large enough that Python's overhead is small."""

Updates = tuple[None, dict[str, Any]]


class ArchivePlugin(RiggerBasePlugin):
    """Packs ``artifact_path`` into ``<name>.tar.zst`` (or ``.tar.xz``, ``.tar.gz``)."""

    config_keys: ClassVar[ConfigKeys] = {
        "event": str,
        "format": str,
        "level": int,
        "root": (str, type(None)),
        "dest": (str, type(None)),
        "remove_originals": bool,
        "keep_errors": int,
    }

    def plugin_initialize(self) -> None:
        data = self.data
        where = f"instance {self.ident!r} (plugin archive)"
        self.event = data.get("event", READY_EVENT)
        self.format = data.get("format", DEFAULT_FORMAT)
        self.dest = data.get("dest")
        self.root = data.get("root")
        self.remove_originals = data.get("remove_originals", False)
        keep = data.get("keep_errors", DEFAULT_KEEP_ERRORS)
        if not isinstance(self.event, str) or not self.event:
            raise PluginError(f"{where}: event must be a non-empty string")
        if self.format not in FORMATS:
            raise PluginError(
                f"{where}: format must be one of {', '.join(FORMATS)}, not {self.format!r}"
            )
        spec = FORMATS[self.format]
        self.level = data.get("level", spec.default)
        if not (
            isinstance(self.level, int)
            and not isinstance(self.level, bool)
            and spec.low <= self.level <= spec.high
        ):
            raise PluginError(
                f"{where}: level must be an integer from {spec.low} to {spec.high} "
                f"for format {self.format}, not {self.level!r}"
            )
        if self.dest is not None and not isinstance(self.dest, str):
            raise PluginError(f"{where}: dest must be a directory path or null")
        if self.root is not None and not (isinstance(self.root, str) and self.root):
            raise PluginError(f"{where}: root must be a directory path or null")
        if not isinstance(self.remove_originals, bool):
            raise PluginError(f"{where}: remove_originals must be a boolean")
        if not (isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0):
            raise PluginError(f"{where}: keep_errors must be an integer of 0 or more")
        self._key = f"{self.ident}@{os.getpid()}"
        self._totals: dict[str, Any] = dict.fromkeys(
            ("archives", "bytes_in", "bytes_out", "errors"), 0
        )
        self._totals["seconds"] = 0.0
        self._errors: deque[dict[str, str]] = deque(maxlen=keep)
        self.register_plugin_hook(self.event, self.archive, bg=data.get("background", True))

    def archive(
        self, artifact_path: str | None = None, artifacts_root: str | None = None
    ) -> Updates | None:
        """Pack ``artifact_path`` if it is inside the root; update the totals."""
        if not artifact_path:
            logger.warning("archive %r: no artifact_path in the event", self.ident)
            return None
        real_root, path = self._contained(os.fspath(artifact_path), artifacts_root)
        if not os.path.isdir(path):
            self._missing(path)
        if not _has_files(path):
            return self._report(path, "empty directory")
        start = time.perf_counter()
        base = os.path.basename(path)
        target = self.target(path)
        where = self._where(target, real_root)
        bytes_in = self._pack(path, base, where, stat.S_IMODE(os.stat(path).st_mode) & 0o666)
        totals = self._totals
        totals["seconds"] += time.perf_counter() - start  # packing only
        totals["archives"] += 1
        totals["bytes_in"] += bytes_in
        totals["bytes_out"] += os.path.getsize(target)
        if self.remove_originals:
            shutil.rmtree(path)
        return self._updates()

    def target(self, path: str) -> str:
        """The archive this instance writes for the (absolute) directory ``path``."""
        base = os.path.basename(os.path.normpath(path))
        return os.path.join(self.dest or os.path.dirname(path), base + FORMATS[self.format].suffix)

    def _contained(self, path: str, artifacts_root: str | None) -> tuple[str, str]:
        """The root and ``path``, resolved (symlinks too), if ``path`` is strictly inside
        the root; else PluginError."""
        root = self.root
        if root is None and isinstance(artifacts_root, TrustedRoot):
            root = str(artifacts_root)
        if root is None:
            raise PluginError(
                f"archive {self.ident!r}: no artifacts root (set root: in the config or "
                f"call rigger_mp.plugins.artifacts.install), so {path!r} is not packed"
            )
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
        if real == real_root:
            problem = "is the artifacts root itself"
        elif os.path.commonpath([real, real_root]) != real_root:
            problem = f"resolves to {real!r}, outside the artifacts root {real_root!r}"
        else:
            return real_root, real
        logger.error("archive %r: refused: %r %s", self.ident, path, problem)
        raise PluginError(f"archive {self.ident!r}: refused artifact_path {path!r}: {problem}")

    def _where(self, target: str, real_root: str) -> tuple[str, str]:
        """``target`` as (a trusted root, a path below it) to create it through
        :func:`~rigger_mp.safe_paths.atomic_file`: ``dest`` (the operator's, made if
        missing), else the artifacts root (``real_root``, as :meth:`_contained` resolved
        it), below which no link is followed."""
        if self.dest:
            os.makedirs(self.dest, exist_ok=True)
            return self.dest, os.path.basename(target)
        return real_root, os.path.relpath(target, real_root)

    def _pack(self, path: str, base: str, where: tuple[str, str], mode: int) -> int:
        """Stream ``path`` into the archive ``where`` names by way of a partial file
        (no link followed on the way); return the bytes in."""
        bytes_in = 0

        def tally(member: tarfile.TarInfo) -> tarfile.TarInfo:
            nonlocal bytes_in
            if member.isfile():
                bytes_in += member.size
            # Whole seconds, as a plain tar header holds them: a fraction would take a
            # PAX extended header per member, a sixth of the time a test's archive takes.
            member.mtime = int(member.mtime)
            return member

        try:
            with (
                atomic_file(*where, mode) as raw,
                self._compressor(raw, base) as packed,
                tarfile.TarFile(fileobj=packed, mode="w", copybufsize=COPY_BUFFER) as tar,
            ):
                tar.add(path, arcname=base, filter=tally)
        except UnsafePath as exc:
            self._totals["errors"] += 1
            self._errors.append({"path": path, "error": str(exc)})
            logger.error("archive %r: refused: %s", self.ident, exc)
            raise PluginError(f"archive {self.ident!r}: refused: {exc}") from None
        return bytes_in

    def _compressor(self, raw: IO[bytes], base: str) -> IO[bytes]:
        """A file object compressing into ``raw`` (which it leaves open)."""
        if self.format == "zst":
            return zstd.ZstdFile(raw, "w", level=self.level)  # type: ignore[return-value]
        if self.format == "xz":
            return lzma.LZMAFile(raw, "w", preset=self.level)
        return gzip.GzipFile(base + ".tar", "wb", self.level, raw)  # type: ignore[return-value]

    def _missing(self, path: str) -> NoReturn:
        """Fail the hook: the directory is not there where it runs (counted, then raised).

        On a Dask worker of another host this is what a filesystem that is not shared
        looks like: a failure the main process logs and counts, never a silent skip.
        """
        self._totals["errors"] += 1
        self._errors.append({"path": path, "error": "missing directory"})
        raise PluginError(
            f"archive {self.ident!r}: artifact directory {path!r} is not there on host "
            f"{socket.gethostname()} (pid {os.getpid()}), where the hook runs: nothing "
            "packed. With pool: dask the artifacts must be on a filesystem shared with "
            "the Dask workers, at the same path (else the directory was never made, or "
            "was removed before the hook ran)"
        )

    def _report(self, path: str, problem: str) -> Updates:
        logger.warning("archive %r: %s: %s, nothing packed", self.ident, path, problem)
        self._totals["errors"] += 1
        self._errors.append({"path": path, "error": problem})
        return self._updates()

    def _updates(self) -> Updates:
        record = {**self._totals, "last_errors": tuple(self._errors)}
        return None, {"archives": {self._key: record}}


def totals(global_data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``archives`` entries of every process added up (``last_errors`` joined)."""
    out: dict[str, Any] = {"archives": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0}
    out["seconds"] = 0.0
    errors: list[Mapping[str, str]] = []
    for record in global_data.get("archives", {}).values():
        for key in ("archives", "bytes_in", "bytes_out", "errors", "seconds"):
            out[key] += record.get(key, 0)
        errors.extend(record.get("last_errors", ()))
    out["last_errors"] = errors
    return out


@contextlib.contextmanager
def open_archive(name: str) -> Iterator[tarfile.TarFile]:
    """Read an archive of any of the three formats (``.tar.zst`` by the suffix)."""
    if not name.endswith(FORMATS["zst"].suffix):
        with tarfile.open(name) as tar:
            yield tar
        return
    with zstd.ZstdFile(name) as stream, tarfile.TarFile(fileobj=stream) as tar:
        yield tar


def zstd_module() -> str:
    """The name of the Zstandard module in use (``compression.zstd`` or its backport)."""
    return zstd.__name__


def _has_files(path: str) -> bool:
    return any(names for _, _, names in os.walk(path))
