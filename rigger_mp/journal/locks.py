"""The two sidecar locks of a journal, both ``fcntl.flock`` (the kernel wakes a waiter).

- ``<journal>-lock``: held for life by the one dispatcher that owns the journal (its main
  process) or by ``rigger-mp journal`` for one command; taken without waiting, so a second
  owner gets :class:`JournalLocked` at once. The holder's pid is written into it.
- ``<journal>-write``: every writer (the main process, the server process, the CLI) holds
  it around each write transaction, so SQLite never finds its write lock taken and never
  enters its busy handler, which would retry by sleeping.

Neither touches the database file itself: closing any other descriptor of that file would
drop the POSIX locks SQLite holds on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from .errors import JournalError, JournalFull, JournalLocked


def owner_lock_path(path: str) -> str:
    return path + "-lock"


def writer_lock_path(path: str) -> str:
    return path + "-write"


def _open(path: str, journal: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise JournalError(f"journal {journal}: cannot open its lock file {path}: {exc}") from exc


class OwnerLock:
    """The dispatcher's claim on a journal: taken at once or :class:`JournalLocked`."""

    def __init__(self, journal: str) -> None:
        self.path = owner_lock_path(journal)
        fd = _open(self.path, journal)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JournalLocked(
                f"journal {journal} is in use by another dispatcher or rigger-mp journal "
                f"(pid {holder}, holding {self.path}); stop it or choose another journal"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            kind = JournalFull if exc.errno == errno.ENOSPC else JournalError
            raise kind(f"journal {journal}: cannot write {self.path}: {exc}") from exc
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class WriterLock:
    """Mutual exclusion of writers across processes, held per transaction.

    Its user serialises its own threads first (two threads of one process share the
    descriptor, and a flock does not exclude its own holder).
    """

    def __init__(self, journal: str) -> None:
        self.path = writer_lock_path(journal)
        self._fd: int | None = _open(self.path, journal)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = self._fd
        if fd is None:
            raise JournalError(f"{self.path}: the journal is closed")
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
