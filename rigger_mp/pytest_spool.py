"""The pytest sender's spool: the events encoded and not yet sent, in order, bounded.

The first :data:`MEMORY_BYTES` of events wait in memory; beyond them (while the
dispatcher cannot be reached, or falls behind) they go to a temporary file (unlinked at
once: nothing is left behind, even by a killed process), up to ``max_bytes`` in all:
past that, :meth:`Spool.push` refuses the event and the sender counts it lost. Events
leave from the head only once sent (:meth:`peek`, then :meth:`drop`), so a batch whose
send failed is sent again first. Used by one thread, the sender's.
"""

from __future__ import annotations

import json
import tempfile
from collections import deque
from typing import IO, Final, NamedTuple

MEMORY_BYTES: Final = 8 * 1024 * 1024
"""Bytes of spooled events kept in memory; the rest wait in the spool file."""
MAX_SPOOL_BYTES: Final = 256 * 1024 * 1024
"""Default of ``--rigger-spool-bytes``: all of a process's spooled events together."""


class Spooled(NamedTuple):
    """One event: its hook, its subject (a test's id, for the lost list), its fire id and
    its message line."""

    hook_name: str
    what: str
    fire_id: str
    line: bytes


class Spool:
    """Events in order: the head in memory, the tail in a file once memory is full."""

    def __init__(self, max_bytes: int = MAX_SPOOL_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        """Bytes of the lines spooled, memory and file."""
        self._memory: deque[Spooled] = deque()
        self._memory_bytes = 0
        self._file: IO[bytes] | None = None
        self._read_at = 0
        self._in_file = 0

    def __len__(self) -> int:
        return len(self._memory) + self._in_file

    @property
    def in_file(self) -> int:
        """Events waiting in the file."""
        return self._in_file

    def push(self, event: Spooled) -> bool:
        """Add ``event`` at the end; False (and nothing added) past ``max_bytes``."""
        size = len(event.line)
        if self.bytes + size > self.max_bytes:
            return False
        self.bytes += size
        if not self._in_file and self._memory_bytes + size <= MEMORY_BYTES:
            self._memory.append(event)
            self._memory_bytes += size
            return True
        if self._file is None:  # kept open until close(): no context manager fits
            self._file = tempfile.TemporaryFile(prefix="rigger-mp-spool-")  # noqa: SIM115
        self._file.seek(0, 2)
        head = [event.hook_name, event.what, event.fire_id, size]
        self._file.write(json.dumps(head).encode() + b"\n" + event.line)
        self._in_file += 1
        return True

    def peek(self, n: int) -> list[Spooled]:
        """The first ``n`` events (fewer if the spool holds fewer), left in place."""
        if len(self._memory) < n and self._in_file:
            self._load()
        return [self._memory[i] for i in range(min(n, len(self._memory)))]

    def drop(self, n: int) -> None:
        """Remove the first ``n`` events (sent, or counted lost)."""
        for _ in range(n):
            event = self._memory.popleft()
            self._memory_bytes -= len(event.line)
            self.bytes -= len(event.line)

    def take_all(self) -> list[Spooled]:
        """Every event, removed (the sender gave up on them)."""
        out: list[Spooled] = []
        while len(self):
            batch = self.peek(max(len(self._memory), 1))
            self.drop(len(batch))
            out.extend(batch)
        return out

    def _load(self) -> None:
        """Move events from the file's head into memory, up to :data:`MEMORY_BYTES`."""
        assert self._file is not None
        self._file.seek(self._read_at)
        while self._in_file and self._memory_bytes < MEMORY_BYTES:
            hook_name, what, fire_id, size = json.loads(self._file.readline())
            line = self._file.read(size)
            self._memory.append(Spooled(hook_name, what, fire_id, line))
            self._memory_bytes += size
            self._in_file -= 1
        self._read_at = self._file.tell()
        if not self._in_file:  # all read back: start the file afresh
            self._file.seek(0)
            self._file.truncate()
            self._read_at = 0

    def close(self) -> None:
        """Close the file (its space is given back: it was never linked)."""
        if self._file is not None:
            self._file.close()
            self._file = None
