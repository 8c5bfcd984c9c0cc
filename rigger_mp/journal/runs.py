"""Which journaled events started and finished, kept where a SIGKILL cannot take it.

``<journal>-runs`` beside the journal is a small file the dispatcher's main process maps
into memory (``MAP_SHARED``) and alone writes (it holds the owner lock): an event's seq
goes into its slot when the event starts, and again, marked finished, once the event and
its backgrounded hooks have ended. A store into a shared file mapping is in the kernel's
page cache at once: it outlives the process that made it (not a power cut), and costs no
system call. So an attempt can be counted on the hot path without an SQLite write per
event, and a finished event whose done mark was not committed yet is known to be done.

At the next owner open, :meth:`~.store.JournalStore.open` reads the map of the run that
ended (:func:`read_runs`): a pending event whose slot says started counts one attempt,
one whose slot says finished is deleted. The dispatcher then starts a fresh map for its
own run (:meth:`RunMap.start`).

Layout: a header (magic, version, the journal's id, the boot number of the run that
wrote it), then :data:`SLOTS` 8-byte slots. The slot of seq ``s`` is ``s % SLOTS``; it
holds ``2s`` once ``s`` started, ``2s + 1`` once it finished. Seqs never repeat within a
journal, so a slot holding another seq (a later event that took the slot while ``s``
was still pending) says nothing about ``s``: that event counts no attempt and runs
again, as it would without the map.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from array import array
from dataclasses import dataclass

from ..errors import UnsafePath
from ..safe_paths import open_no_follow
from .errors import JournalError, JournalFull

SLOTS = 1 << 13
"""Events one map tells apart: a pending event is found unless this many later events
started while it waited (on its backgrounded hooks, say)."""
MASK = SLOTS - 1
MAGIC = b"RGMJRUNS"
VERSION = 1
_HEADER = struct.Struct("<8sI4x16sq")  # magic, version, journal id, boot
HEADER_BYTES = 64
SIZE = HEADER_BYTES + 8 * SLOTS


def runs_path(journal: str) -> str:
    return journal + "-runs"


@dataclass(frozen=True)
class Runs:
    """What one run's map says: the seqs that started (and did not finish), and finished."""

    boot: int
    started: frozenset[int]
    finished: frozenset[int]


def read_runs(journal: str, journal_id: bytes) -> Runs | None:
    """The map beside ``journal`` if it is this journal's (else None: none, another
    journal's, or not a map)."""
    try:
        fd = open_no_follow(runs_path(journal), os.O_RDONLY)
    except (OSError, UnsafePath):
        return None
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read(SIZE + 1)
    except OSError:
        return None
    if len(data) != SIZE:
        return None
    magic, version, owner, boot = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or owner != journal_id or boot <= 0:
        return None
    slots = array("q")
    slots.frombytes(data[HEADER_BYTES:])
    started: set[int] = set()
    finished: set[int] = set()
    for value in slots:
        if value > 0:
            (finished if value & 1 else started).add(value >> 1)
    return Runs(boot, frozenset(started), frozenset(finished))


class RunMap:
    """The map a running dispatcher writes; :meth:`started` and :meth:`finished` are one
    store each, safe from any thread (each event has its own slot)."""

    def __init__(self, journal: str, mapped: mmap.mmap) -> None:
        self.path = runs_path(journal)
        self._mmap: mmap.mmap | None = mapped
        self._slots = memoryview(mapped)[HEADER_BYTES:].cast("q")

    @classmethod
    def start(cls, journal: str, journal_id: bytes, boot: int) -> RunMap:
        """A fresh map for run ``boot`` of ``journal`` (its blocks allocated now, so that a
        full disk is a :class:`JournalFull` here, not a SIGBUS at a store later)."""
        path = runs_path(journal)
        try:
            fd = open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o600)
        except (OSError, UnsafePath) as exc:
            raise JournalError(f"journal {journal}: cannot open {path}: {exc}") from exc
        try:
            if os.fstat(fd).st_size != SIZE:
                os.ftruncate(fd, SIZE)
            os.posix_fallocate(fd, 0, SIZE)
            mapped = mmap.mmap(fd, SIZE)
        except OSError as exc:
            kind = JournalFull if exc.errno == errno.ENOSPC else JournalError
            raise kind(f"journal {journal}: cannot prepare {path}: {exc}") from exc
        finally:
            os.close(fd)
        # The header goes last: a crash while the slots are cleared leaves no valid map.
        mapped[:HEADER_BYTES] = bytes(HEADER_BYTES)
        mapped[HEADER_BYTES:] = bytes(SIZE - HEADER_BYTES)
        mapped[: _HEADER.size] = _HEADER.pack(MAGIC, VERSION, journal_id, boot)
        return cls(journal, mapped)

    def started(self, seq: int) -> None:
        """Event ``seq`` starts (on the event thread)."""
        self._slots[seq & MASK] = seq << 1

    def finished(self, seq: int) -> None:
        """Event ``seq`` and its backgrounded hooks have ended."""
        self._slots[seq & MASK] = (seq << 1) | 1

    def close(self) -> None:
        """Stop writing the file (what was stored stays in it).

        The mapping is not closed here but dropped: an event thread left running at a
        stop may be storing into it this instant. It is unmapped once nothing holds it;
        stores from now on go to a scratch buffer.
        """
        self._slots = memoryview(bytearray(8 * SLOTS)).cast("q")
        self._mmap = None
