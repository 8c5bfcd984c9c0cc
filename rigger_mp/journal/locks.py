"""The two sidecar locks of a journal, both ``fcntl.flock`` (the kernel wakes a waiter).

- ``<journal>-lock``: held for life by the one dispatcher that owns the journal (its main
  process) or by ``rigger-mp journal`` for one command; taken without waiting, so a second
  owner gets :class:`JournalLocked` at once. The holder's pid is written into it.
- ``<journal>-write``: every writer (the main process, the server process, the CLI) holds
  it around each write transaction, so SQLite never finds its write lock taken and never
  enters its busy handler, which would retry by sleeping.

Neither touches the database file itself: closing any other descriptor of that file would
drop the POSIX locks SQLite holds on it.

Both files are opened without following a link (:func:`~rigger_mp.safe_paths.open_no_follow`):
a link planted at ``<journal>-lock`` would otherwise have the dispatcher truncate the file it
points to and write its pid there. A refused path is a :class:`JournalError` naming it.

At a clean stop the owner removes both files (:meth:`OwnerLock.release` with ``remove``),
unlinking each while it still holds its flock. Another process may have opened the old
file just before the unlink and be waiting on its flock (a writer) or be about to try it
(a second owner): once it holds the lock, it finds that the path no longer names the file
it locked (:func:`_lock`) and starts again on the path, which a newcomer creates afresh. So
the removal never gives two processes "the" lock at once, and a crash leaves the files
behind, harmless: the next owner locks them as they are.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator

from ..errors import UnsafePath
from ..printable import printable
from ..safe_paths import open_no_follow
from .errors import JournalError, JournalFull, JournalLocked


def owner_lock_path(path: str) -> str:
    return path + "-lock"


def writer_lock_path(path: str) -> str:
    return path + "-write"


def _open(path: str, journal: str) -> int:
    try:
        return open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o600)
    except UnsafePath as exc:
        raise JournalError(f"journal {journal}: refused its lock file: {exc}") from None
    except OSError as exc:
        raise JournalError(f"journal {journal}: cannot open its lock file {path}: {exc}") from exc


class _Busy(Exception):
    """Another process holds the lock (``LOCK_NB``); ``holder`` is what it wrote there."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def _lock(path: str, journal: str, fd: int, flags: int) -> int:
    """``flock(fd, flags)``, and a descriptor of the file ``path`` names once locked:
    ``fd``, or a new one (``fd`` closed) if the file was removed or replaced meanwhile
    (its owner stopped cleanly). With ``LOCK_NB``, :class:`_Busy` (the descriptor closed)
    if another process holds it."""
    while True:
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise _Busy(printable(holder)) from None
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        held = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # a file nobody else will lock again: start over on the path
        fd = _open(path, journal)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class OwnerLock:
    """The dispatcher's claim on a journal: taken at once or :class:`JournalLocked`."""

    def __init__(self, journal: str) -> None:
        self.path = owner_lock_path(journal)
        fd = _open(self.path, journal)
        try:
            fd = _lock(self.path, journal, fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except _Busy as busy:
            raise JournalLocked(
                f"journal {journal} is in use by another dispatcher or rigger-mp journal "
                f"(pid {busy.holder}, holding {self.path}); stop it or choose another journal"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            kind = JournalFull if exc.errno == errno.ENOSPC else JournalError
            raise kind(f"journal {journal}: cannot write {self.path}: {exc}") from exc
        self._fd: int | None = fd

    def release(self, remove: bool = False) -> None:
        """Give up the claim; ``remove``: unlink the lock file first, while held."""
        if self._fd is not None:
            if remove:
                _remove(self.path)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class WriterLock:
    """Mutual exclusion of writers across processes, held per transaction.

    Its user serialises its own threads first (two threads of one process share the
    descriptor, and a flock does not exclude its own holder).
    """

    def __init__(self, journal: str) -> None:
        self.journal = journal
        self.path = writer_lock_path(journal)
        self._fd: int | None = _open(self.path, journal)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = self._fd
        if fd is None:
            raise JournalError(f"{self.path}: the journal is closed")
        try:
            self._fd = fd = _lock(self.path, self.journal, fd, fcntl.LOCK_EX)
        except BaseException:
            self._fd = None  # _lock closed it if it gave up on a new one
            raise
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self, remove: bool = False) -> None:
        """Close; ``remove`` (the owner, at a clean stop): unlink the file, under its lock."""
        if self._fd is not None:
            if remove:
                with self.held():
                    _remove(self.path)
            os.close(self._fd)
            self._fd = None
