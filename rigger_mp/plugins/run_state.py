"""An open run's events kept on disk, so that a restarted dispatcher still has them.

::

    each event of an open run ──▶ <root>/<run dir>/.rigger-state-<instance>.jsonl
                                   one JSON line: [event, data], appended
    the run ends (its snapshot)  ──▶ renamed to ...jsonl.writing (the report is being written)
    its files are written        ──▶ the .writing file is removed
    the plugin starts            ──▶ every state file under the root is read back: an open
                                   run goes on (events append to its file again), a
                                   .writing one is written at once

Lines are appended without ``fsync``: a SIGKILLed dispatcher leaves them in the page
cache, which the next start reads; a crash of the machine may lose the last ones. A line
torn by a kill is skipped when read back. Each file is bounded by ``max_state_bytes``:
beyond it the run's later events are not kept (logged once; a restart then loses them).
Every file is opened through :mod:`rigger_mp.safe_paths`, so a link planted in the root is
never followed; a file that cannot be written stops being written (logged) and the event
goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .. import printable
from ..errors import UnsafePath
from ..safe_paths import open_file, opened_dir, relative_parts
from .artifacts import safe_part
from .run_index import MAX_SCANNED

logger = printable.logger("rigger_mp")

DEFAULT_MAX_STATE_BYTES: Final = 256 * 1024 * 1024
"""Default of ``max_state_bytes``: the largest state file of one open run."""
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
"""One encoder for every line (``json.dumps`` with options builds one per call)."""
WRITING: Final = ".writing"
"""Suffix of a state file whose run has ended and whose files are being written."""


@dataclass(frozen=True, slots=True)
class Found:
    """A state file read back: its run's directory, its events, and whether the run had
    ended (its files were being written) when the dispatcher went away."""

    dir_name: str
    events: list[tuple[str, dict[str, Any]]]
    ended: bool
    mtime: float
    """Wall-clock time of its last event (the file's modification time)."""
    size: int = 0
    """Bytes read."""

    def quiet(self) -> float:
        """Seconds since the run's last event (a restarted reader's clock counts from it)."""
        return max(0.0, time.time() - self.mtime)


@dataclass(slots=True)
class _Open:
    fd: int
    size: int


class StateFiles:
    """The state files of one plugin instance's open runs (used on the event thread)."""

    def __init__(self, root: str | os.PathLike[str], instance: str, max_bytes: int) -> None:
        self.root = Path(root).absolute()
        self.name = f".rigger-state-{safe_part(instance)}.jsonl"
        self.max_bytes = max_bytes
        self._open: dict[str, _Open] = {}
        self._stopped: set[str] = set()
        """Runs whose file is full or could not be written: no more lines for them."""

    def append(self, dir_name: str, event: str, data: Mapping[str, Any]) -> None:
        """Keep one event of the run in ``dir_name``."""
        if dir_name in self._stopped:
            return
        line = (_encode([event, data]) + "\n").encode()
        try:
            kept = self._open.get(dir_name)
            if kept is None:
                kept = self._open[dir_name] = self._opened(dir_name)
            if kept.size + len(line) > self.max_bytes:
                self._stop(dir_name, f"it reached max_state_bytes ({self.max_bytes:,})")
                return
            os.write(kept.fd, line)
            kept.size += len(line)
        except (OSError, ValueError) as exc:  # UnsafePath is a ValueError
            self._stop(dir_name, str(exc))

    def _opened(self, dir_name: str) -> _Open:
        self.root.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        fd = open_file(self.root, f"{dir_name}/{self.name}", flags, 0o600)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a kill: the
            size += os.write(fd, b"\n")  # next one starts on a line of its own
        return _Open(fd, size)

    def _stop(self, dir_name: str, why: str) -> None:
        logger.warning(
            "state file of run directory %r: %s; the run's later events are not kept "
            "(a restart of the dispatcher before its end loses them)",
            dir_name,
            why,
        )
        self._stopped.add(dir_name)
        self._close(dir_name)

    def _close(self, dir_name: str) -> None:
        kept = self._open.pop(dir_name, None)
        if kept is not None:
            os.close(kept.fd)

    def retire(self, dir_name: str) -> None:
        """The run ended: its file becomes ``.writing`` until :meth:`remove`."""
        self._close(dir_name)
        self._stopped.discard(dir_name)
        name = self.name
        self._in_dir(
            dir_name, lambda fd: os.replace(name, name + WRITING, src_dir_fd=fd, dst_dir_fd=fd)
        )

    def remove(self, dir_name: str, ended: bool = True) -> None:
        """The run's files are written (``ended``), or it was dropped: its file goes."""
        if not ended:
            self._close(dir_name)
            self._stopped.discard(dir_name)
        name = self.name + (WRITING if ended else "")
        self._in_dir(dir_name, lambda fd: os.unlink(name, dir_fd=fd))

    def _in_dir(self, dir_name: str, act: Callable[[int], None]) -> None:
        try:
            with opened_dir(self.root, relative_parts(dir_name), create=False) as fd:
                act(fd)
        except FileNotFoundError:
            pass  # never written (no event kept), or gone
        except (OSError, UnsafePath) as exc:
            logger.warning("state file of run directory %r: %s", dir_name, exc)

    def close(self) -> None:
        """Close the open files (they stay for the next start)."""
        for dir_name in list(self._open):
            self._close(dir_name)

    def found(self) -> Iterator[Found]:
        """The state files under the root, each read back (at most ``max_bytes`` each)."""
        for dir_name in run_dirs(self.root):
            for ended in (True, False):
                name = self.name + (WRITING if ended else "")
                found = read_state(self.root, dir_name, name, ended, self.max_bytes)
                if found is not None:
                    yield found


def run_dirs(root: Path) -> list[str]:
    """The run directories under ``root`` (at most ``MAX_SCANNED``, no link), sorted."""
    try:
        with os.scandir(root) as entries:
            return sorted(
                e.name
                for n, e in enumerate(entries)
                if n < MAX_SCANNED and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return []


def open_runs(root: str | os.PathLike[str], max_bytes: int) -> Iterator[Found]:
    """Each open run's events as the first instance that keeps a state file for it has
    them (``report`` and ``junit`` keep the same ones): for a reader other than the
    plugins, the live view of a restarted dispatcher. At most ``max_bytes`` in all."""
    top = Path(root).absolute()
    for dir_name in run_dirs(top):
        if max_bytes <= 0:
            return
        try:
            names = sorted(
                e.name
                for e in os.scandir(top / dir_name)
                if e.name.startswith(".rigger-state-") and e.name.endswith(".jsonl")
            )
        except OSError:
            continue
        found = read_state(top, dir_name, names[0], False, max_bytes) if names else None
        if found is not None:
            max_bytes -= found.size
            yield found


def read_state(root: Path, dir_name: str, name: str, ended: bool, max_bytes: int) -> Found | None:
    """The state file ``<root>/<dir_name>/<name>`` read back (no link followed; at most
    ``max_bytes``; a torn or malformed line skipped), or None if there is none."""
    try:
        fd = open_file(root, f"{dir_name}/{name}", os.O_RDONLY, make_parents=False)
    except (OSError, ValueError):
        return None
    with os.fdopen(fd, "rb") as handle:
        mtime = os.fstat(handle.fileno()).st_mtime
        data = handle.read(max_bytes + 1)[:max_bytes]
    events = []
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], dict)
            ):
                events.append((item[0], item[1]))
    return Found(dir_name, events, ended, mtime, len(data))
