"""Files and directories the dispatcher creates never follow a link.

Whoever can write into a shared artifacts directory or CI workspace could plant a
symbolic link where the dispatcher is about to create a file, and aim the write at any
file the dispatcher's user may change. Every place that creates or opens a file from a
path that others may write into goes through this module:

- :func:`open_file` and :func:`make_dirs` take a *root* (trusted: the configured
  artifacts root, say) and a *relative* path (from an event, a test name, an upload's
  name). They walk from the root one component at a time with ``openat``-style directory
  descriptors and ``O_NOFOLLOW``, so no link below the root is followed, not even one
  planted while the walk runs, and nothing is created outside the root.
- :func:`open_no_follow` opens one configured path (a journal's lock file, say) without
  following a link in its last component, and only if it is a regular file.
- :func:`write_atomically` writes a whole file under a root by way of a new temporary
  name (``O_EXCL``), renamed over the final name once complete; :func:`atomic_file`
  does the same for a file streamed in pieces (an archive).

A refused path raises :class:`~rigger_mp.errors.UnsafePath`, naming it; nothing is
created, truncated or written.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import UnsafePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)
_partials = itertools.count()


def relative_parts(relative: str | os.PathLike[str]) -> tuple[str, ...]:
    """The components of ``relative``: a path with no absolute part, no ``..``, no ``.``
    component other than a leading one, no empty name and no NUL; else UnsafePath."""
    text = os.fspath(relative)
    if "\0" in text:
        raise UnsafePath(f"path {text!r} contains a NUL byte")
    if text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise UnsafePath(f"path {text!r} is absolute; a relative path is needed")
    parts = tuple(p for p in PurePosixPath(text.replace("\\", "/")).parts if p != ".")
    if not parts:
        raise UnsafePath(f"path {text!r} names no file")
    if ".." in parts:
        raise UnsafePath(f"path {text!r} climbs out with '..'")
    return parts


@contextlib.contextmanager
def opened_dir(
    root: str | os.PathLike[str], parts: tuple[str, ...], create: bool
) -> Iterator[int]:
    """A descriptor of ``root/<parts...>``, every component below ``root`` opened without
    following a link (created first when missing and ``create``); closed on exit.

    ``root`` itself may be a link: the operator chose it.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                child = _open_child_dir(fd, part, create)
            except OSError as exc:
                shown = os.path.join(os.fspath(root), *parts[: index + 1])
                if exc.errno in _LINK_ERRNOS:
                    raise UnsafePath(
                        f"{shown} is a symbolic link or not a directory; not followed"
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child_dir(parent: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    with contextlib.suppress(FileExistsError):  # made meanwhile by another process
        os.mkdir(name, 0o777, dir_fd=parent)
    return os.open(name, _DIR_FLAGS, dir_fd=parent)


def make_dirs(root: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """Create ``root/relative`` and its parents inside ``root``, following no link below
    ``root``; return the path. An existing link or file on the way is UnsafePath."""
    parts = relative_parts(relative)
    with opened_dir(root, parts, create=True):
        pass
    return Path(root).joinpath(*parts)


def open_file(
    root: str | os.PathLike[str],
    relative: str | os.PathLike[str],
    flags: int,
    mode: int = 0o644,
    *,
    make_parents: bool = True,
) -> int:
    """``os.open`` of ``root/relative`` with ``flags`` (``O_CREAT``, ``O_APPEND``, ...),
    following no link below ``root`` and none in the file's own name; a descriptor."""
    parts = relative_parts(relative)
    with opened_dir(root, parts[:-1], create=make_parents) as parent:
        return _open_in(parent, parts[-1], flags, mode, Path(root).joinpath(*parts))


def _open_in(parent: int, name: str, flags: int, mode: int, shown: Path) -> int:
    # Non-blocking first: opened blocking, a FIFO planted there waits for ever for a peer.
    nofollow = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(name, nofollow, mode, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{shown} is a symbolic link; not followed") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise UnsafePath(f"{shown} is not a regular file") from None
        raise
    fd = _regular(fd, shown)
    if not flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def _regular(fd: int, shown: str | os.PathLike[str]) -> int:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{os.fspath(shown)} is not a regular file")
    return fd


def open_no_follow(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` of one configured ``path`` that refuses a link in its last component
    and anything but a regular file (a FIFO, a device): a descriptor, or UnsafePath."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{os.fspath(path)} is a symbolic link; not followed") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise UnsafePath(f"{os.fspath(path)} is not a regular file") from None
        raise
    fd = _regular(fd, path)
    os.set_blocking(fd, True)
    return fd


def refuse_link(path: str | os.PathLike[str]) -> None:
    """UnsafePath if ``path`` is a symbolic link (dangling or not); for files a library
    opens by name (SQLite), checked just before it does."""
    if os.path.islink(path):
        raise UnsafePath(f"{os.fspath(path)} is a symbolic link; not followed")


@contextlib.contextmanager
def atomic_file(
    root: str | os.PathLike[str], relative: str | os.PathLike[str], mode: int = 0o644
) -> Iterator[BinaryIO]:
    """A binary file to stream ``root/relative`` into, whole or not at all: a new
    temporary file (``O_EXCL``, no link followed) in the same directory, made below
    ``root`` without following a link, renamed over the final name (a rename replaces a
    link there, never writes through it) when the block ends without an exception, else
    removed. The directories stay open meanwhile, so a link planted during the write
    cannot move it."""
    parts = relative_parts(relative)
    shown = Path(root).joinpath(*parts)
    with opened_dir(root, parts[:-1], create=True) as parent:
        partial = f".{parts[-1]}.part-{os.getpid()}-{next(_partials)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = _open_in(parent, partial, flags, mode, shown)
        except FileExistsError:  # left by a killed process that had this pid
            os.unlink(partial, dir_fd=parent)
            fd = _open_in(parent, partial, flags, mode, shown)
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
            os.replace(partial, parts[-1], src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial, dir_fd=parent)
            raise


def write_atomically(
    root: str | os.PathLike[str],
    relative: str | os.PathLike[str],
    data: bytes,
    mode: int = 0o644,
    *,
    fsync: bool = False,
) -> Path:
    """Write ``data`` to ``root/relative`` whole or not at all (:func:`atomic_file`).
    Returns the path."""
    with atomic_file(root, relative, mode) as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    return Path(root).joinpath(*relative_parts(relative))


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (absolute, or relative to ``root``) as a path relative to ``root``, if it
    lies strictly inside ``root`` once both are resolved (links too); else UnsafePath."""
    real_root = Path(root).resolve()
    real = (Path(root) / path).resolve()
    if real == real_root or not real.is_relative_to(real_root):
        raise UnsafePath(f"{os.fspath(path)} resolves to {real}, outside {real_root}")
    return real.relative_to(real_root)
