"""Uploads: the files ``attach`` streams into a test's artifact directory.

::

    Connection, HTTP request ── feed(bytes) ──▶ Upload.queue ── a job at a time ──▶ writer
      (UploadOwner) ◀── upload_room() ───────── (bounded)      open, write + hash,  thread
                    ◀── upload_done(line) ◀───────────────────  fsync, rename, discard

The header is checked on the event loop before a byte of the file is read: the size
against ``max_attach_bytes``, the run's completed and running uploads against
``max_run_bytes``, the free space under the root against ``min_free_disk_bytes`` (one
``statvfs``), the name against :func:`~rigger_mp.safe_paths.relative_parts`. The file's
directory is the test's, :func:`~rigger_mp.plugins.artifacts.artifact_dir`, exactly the
one its events name. Disk work never runs on the loop: each upload hands its bytes, in
order, to a small pool of writer threads, one job at a time, and the owner stops reading
its client while :data:`UPLOAD_BUFFER` bytes of it (or :data:`TOTAL_BUFFER` bytes of all
uploads) wait to be written, so memory stays flat whatever the size and other clients'
events never wait on a disk. The file is written under a temporary name
(:func:`~rigger_mp.safe_paths.atomic_file`: no link followed, nothing outside the root)
and renamed into place once all its bytes are in (with a journal, fsynced first, and its
directory after the rename); an upload cut, stalled or refused removes its temporary
file and leaves nothing. An upload's life is one :class:`UploadPhase`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import PurePosixPath
from typing import BinaryIO, Final, Protocol

from .. import protocol as proto
from ..errors import UnsafePath
from ..lifecycle import move
from ..plugins.artifacts import artifact_dir
from ..safe_paths import atomic_file, opened_dir, refuse_link, relative_parts
from .pipe_messages import ServerSettings

UPLOAD_BUFFER: Final = 4 * 1024 * 1024
"""Bytes of one upload read and not yet written above which its client is not read."""
TOTAL_BUFFER: Final = 32 * 1024 * 1024
"""Bytes of all uploads read and not yet written above which no upload is read."""
WRITER_THREADS: Final = 4
"""Threads that write uploads to disk (each upload's jobs run one at a time)."""
READ_SIZE: Final = 1024 * 1024
"""An uploading connection reads into one shared buffer of this size (the loop runs one
callback at a time, and each read is copied out): fewer, larger reads than messages'."""
WRITER_NICE: Final = 10
"""How much lower the writer threads' CPU priority is than the server process's."""
MAX_RUN_IDS: Final = 10_000
"""Run ids whose upload bytes are counted; past it the least recently used is forgotten."""


class UploadPhase(enum.Enum):
    """Where an upload is: RECEIVING its bytes, FINISHING (all in: written, renamed),
    then DONE (answered ok) or FAILED (answered with an error, or cut: nothing kept)."""

    RECEIVING = "receiving"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


_RECEIVING: Final = UploadPhase.RECEIVING
_FINISHING: Final = UploadPhase.FINISHING
_DONE: Final = UploadPhase.DONE
_FAILED: Final = UploadPhase.FAILED
UPLOAD_MOVES: Final = {
    _RECEIVING: {_FINISHING, _FAILED},
    _FINISHING: {_DONE, _FAILED},
    _DONE: set(),
    _FAILED: set(),
}
"""The legal moves of an :class:`UploadPhase`."""


class UploadOwner(Protocol):
    """Who feeds an upload: a TCP connection or an HTTP request."""

    def upload_room(self) -> None:
        """The upload has room for more bytes again: read the client."""

    def upload_done(self, line: bytes, ok: bool) -> None:
        """The upload's one reply (``ok`` false: an error; the owner then closes)."""


class Refused(Exception):
    """An ``attach`` header refused before its bytes are read; ``code`` is the wire code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Cut(Exception):
    """The upload ended before its bytes were all written: discard the temporary file."""


class Uploads:
    """The server process's uploads: their bounds, the bytes each run uploaded, and the
    writer threads (started with the first upload)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: ServerSettings) -> None:
        self.loop = loop
        self.root = settings.artifacts_root
        self.fsync = settings.journal is not None
        self.max_attach = settings.max_attach_bytes
        self.max_run = settings.max_run_bytes
        self.min_free = settings.min_free_disk_bytes
        self.stall = settings.idle_timeout
        self.runs: OrderedDict[str, int] = OrderedDict()
        """Bytes of each run id's uploads, completed or running (at most :data:`MAX_RUN_IDS`)."""
        self.buffered = 0
        self.waiting: set[Upload] = set()
        """Uploads not read because :data:`TOTAL_BUFFER` was reached."""
        self.executor: ThreadPoolExecutor | None = None
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.running = 0
        self.completed = 0
        self.failed = 0
        self.bytes = 0

    def begin(self, msg: proto.Attach, owner: UploadOwner, stalls: bool = True) -> Upload:
        """Check ``msg`` and start its upload; :class:`Refused` if it may not be."""
        if self.root is None:
            raise Refused(proto.BAD_REQUEST, "this dispatcher has no artifacts root")
        size = msg.size
        if size > self.max_attach:
            raise Refused(
                proto.TOO_LARGE,
                f"a file of {size} bytes exceeds max_attach_bytes ({self.max_attach})",
            )
        run = "" if msg.run_id is None else msg.run_id
        used = self.runs.get(run, 0)
        if used + size > self.max_run:
            raise Refused(
                proto.QUOTA_EXCEEDED,
                f"run {run[:80]!r} has {used} bytes uploaded; {size} more exceed "
                f"max_run_bytes ({self.max_run})",
            )
        try:
            parts = relative_parts(msg.name)
        except UnsafePath as exc:
            raise Refused(proto.BAD_REQUEST, f"attach: {exc}") from None
        test_dir = artifact_dir("", msg.test_location, msg.test_name, msg.run_id)
        relative = PurePosixPath(*test_dir.parts, *parts)
        try:
            disk = os.statvfs(self.root)
        except OSError as exc:
            raise Refused(proto.INTERNAL, f"the artifacts root: {exc.strerror}") from None
        free = disk.f_bavail * disk.f_frsize
        if free - size < self.min_free:
            raise Refused(
                proto.DISK_FULL,
                f"{free} bytes free under the artifacts root; a file of {size} would leave "
                f"less than min_free_disk_bytes ({self.min_free})",
            )
        self.runs[run] = used + size
        self.runs.move_to_end(run)
        while len(self.runs) > MAX_RUN_IDS:
            self.runs.popitem(last=False)
        if self.executor is None:
            self.executor = ThreadPoolExecutor(
                WRITER_THREADS, "rigger_mp-upload", initializer=_lower_priority
            )
        self.running += 1
        return Upload(self, owner, relative, run, size, self.stall if stalls else None)

    def ended(self, upload: Upload, ok: bool) -> None:
        """``upload`` is over: count it; a failed one gives its bytes back to its run."""
        self.running -= 1
        if ok:
            self.completed += 1
            self.bytes += upload.size
        else:
            self.failed += 1
            if upload.run in self.runs:
                self.runs[upload.run] = max(0, self.runs[upload.run] - upload.size)
        self.waiting.discard(upload)

    def counters(self) -> dict[str, int]:
        """``server.process.uploads`` in the stats."""
        return {
            "running": self.running,
            "completed": self.completed,
            "failed": self.failed,
            "bytes": self.bytes,
            "buffered_bytes": self.buffered,
        }

    def drained(self, size: int) -> None:
        """``size`` buffered bytes were written: wake the uploads waiting for room."""
        self.buffered -= size
        if self.waiting and self.buffered <= TOTAL_BUFFER // 2:
            waiting, self.waiting = self.waiting, set()
            for upload in waiting:
                upload.owner.upload_room()

    def close(self) -> None:
        """Let the writer threads finish their jobs (a cut upload's clean-up included)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)


class Upload:
    """One file being uploaded (see the module's docstring)."""

    def __init__(
        self,
        uploads: Uploads,
        owner: UploadOwner,
        relative: PurePosixPath,
        run: str,
        size: int,
        stall: float | None,
    ) -> None:
        self.uploads = uploads
        self.owner = owner
        self.relative = relative
        self.run = run
        self.size = size
        self.missing = size
        self.phase = _RECEIVING
        self.queue: list[bytes] = []
        self.queued = 0
        """Bytes read and not yet written (in :attr:`queue` or being written)."""
        self.busy = False
        self.writing = 0
        """Bytes the running job writes."""
        self.committed = False
        self.opened: AbstractContextManager[BinaryIO] | None = None
        self.file: BinaryIO | None = None
        self.discarded = False
        self.hash = hashlib.sha256()
        self.stall = stall
        self.fed = False
        self.settled: asyncio.Future[None] = uploads.loop.create_future()
        """Resolved once it is over and its writer has nothing left to do (the temporary
        file renamed or removed)."""
        self.timer: asyncio.TimerHandle | None = None
        if stall is not None:
            self.timer = uploads.loop.call_later(stall, self._check_stall)
        if size == 0:
            self._all_in()

    @property
    def wants(self) -> bool:
        """Bytes are missing and there is room for them: read the client. An upload
        told no for want of room among all uploads is woken when there is."""
        if self.phase is not _RECEIVING or self.queued >= UPLOAD_BUFFER:
            return False
        if self.uploads.buffered >= TOTAL_BUFFER:
            self.uploads.waiting.add(self)
            return False
        return True

    @property
    def receiving(self) -> bool:
        return self.phase is _RECEIVING

    def feed(self, data: bytes) -> int:
        """Take the file's bytes from ``data``; how many (the rest is not this file's)."""
        if self.phase is not _RECEIVING:
            return 0
        n = min(len(data), self.missing)
        if n:
            self.queue.append(data if n == len(data) else data[:n])
            self.missing -= n
            self.queued += n
            self.uploads.buffered += n
            self.fed = True
            self._next()
        if not self.missing:
            self._all_in()
        return n

    def cut(self) -> None:
        """The client went away: keep nothing, answer no one. Once every byte is in, the
        file is completed all the same (its reply goes nowhere)."""
        if self.phase is _RECEIVING:
            self._fail(None, "")

    def fail(self, code: str, message: str) -> None:
        """End the upload with an error reply; keep nothing."""
        self._fail(code, message)

    # -- on the loop -----------------------------------------------------------------

    def _all_in(self) -> None:
        self.phase = move(UPLOAD_MOVES, _RECEIVING, _FINISHING)
        self._stop_timer()
        self._next()

    def _check_stall(self) -> None:
        """No byte came for ``idle_timeout`` while the upload could take some: drop it."""
        self.timer = None
        if self.phase is not _RECEIVING or self.stall is None:
            return
        if self.fed or not self.wants:
            self.fed = False
            self.timer = self.uploads.loop.call_later(self.stall, self._check_stall)
            return
        self.fail(
            proto.BAD_REQUEST,
            f"no byte of the upload for idle_timeout ({self.stall:g} s) with "
            f"{self.missing} of {self.size} missing; dropped",
        )

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _fail(self, code: str | None, message: str) -> None:
        if self.phase in (_DONE, _FAILED):
            return
        self.phase = move(UPLOAD_MOVES, self.phase, _FAILED)
        self._stop_timer()
        rest = self.queued - self.writing  # the running job's bytes are released when it ends
        self.queued -= rest
        self.queue = []
        self.uploads.ended(self, ok=False)
        self.uploads.drained(rest)
        if code is not None:
            self.owner.upload_done(proto.error_line(code, message), False)
        self._next()

    def _next(self) -> None:
        """Start the next job of this upload's writer, unless one is running."""
        if self.busy:
            return
        if self.phase is _FAILED:
            if self.opened is not None and not self.discarded:
                self.discarded = True
                self._submit(self._discard, 0)
            elif not self.settled.done():
                self.settled.set_result(None)
            return
        if self.opened is None:  # with the first bytes: a small file takes one job
            if self.queue or self.phase is _FINISHING:
                chunks, self.queue = self.queue, []
                finish = self.phase is _FINISHING
                self._submit(lambda: self._first(chunks, finish), sum(map(len, chunks)))
        elif self.queue:
            chunks, self.queue = self.queue, []
            self._submit(lambda: self._write(chunks), sum(map(len, chunks)))
        elif self.phase is _FINISHING:
            self._submit(self._commit, 0)

    def _submit(self, job: object, size: int) -> None:
        uploads = self.uploads
        assert uploads.executor is not None and callable(job)
        self.busy = True
        self.writing = size
        future = uploads.loop.run_in_executor(uploads.executor, job)
        future.add_done_callback(self._job_done)

    def _job_done(self, future: asyncio.Future[object]) -> None:
        self.busy = False
        written, self.writing = self.writing, 0
        self.queued -= written
        self.uploads.drained(written)
        exc = future.exception()
        if exc is not None:
            if isinstance(exc, _Cut):
                self.settled.set_result(None)
                return
            code, message = _code_of(exc)
            self._fail(code, f"{self.relative}: {message}")
            return
        if self.committed:
            self._succeed()
            return
        self._next()
        if self.wants:
            self.owner.upload_room()

    def _succeed(self) -> None:
        self.phase = move(UPLOAD_MOVES, _FINISHING, _DONE)
        self.uploads.ended(self, ok=True)
        reply = {
            "ok": True,
            "path": self.relative.as_posix(),
            "size": self.size,
            "sha256": self.hash.hexdigest(),
        }
        self.settled.set_result(None)
        self.owner.upload_done(proto.reply_line(reply), True)

    # -- in a writer thread ----------------------------------------------------------

    def _open(self) -> None:
        root = self.uploads.root
        assert root is not None
        # A link planted at the file's own name is refused, as one on its way is (the
        # rename would only replace it, but a planted link says someone meant harm).
        refuse_link(os.path.join(root, self.relative))
        opened = atomic_file(root, self.relative)
        self.file = opened.__enter__()
        self.opened = opened

    def _first(self, chunks: list[bytes], finish: bool) -> None:
        self._open()
        self._write(chunks)
        if finish:
            self._commit()

    def _write(self, chunks: list[bytes]) -> None:
        file, update = self.file, self.hash.update
        assert file is not None
        for chunk in chunks:  # both release the GIL: the loop reads on meanwhile
            update(chunk)
            file.write(chunk)

    def _commit(self) -> None:
        file, opened = self.file, self.opened
        assert file is not None and opened is not None
        if self.uploads.fsync:
            file.flush()
            os.fsync(file.fileno())
        self.file = None
        opened.__exit__(None, None, None)  # renamed into place
        if self.uploads.fsync:  # the rename too survives a crash
            root = self.uploads.root
            assert root is not None
            with opened_dir(root, self.relative.parts[:-1], create=False) as parent:
                os.fsync(parent)
        self.committed = True

    def _discard(self) -> None:
        opened, self.file = self.opened, None
        assert opened is not None
        cut = _Cut()
        opened.__exit__(_Cut, cut, None)  # removes the temporary file
        raise cut


def _lower_priority() -> None:
    """Run this writer thread at a lower CPU priority (nice +:data:`WRITER_NICE`): on a
    busy machine, hashing and copying uploads yield to the loop and to the dispatcher's
    events, and take what CPU is left."""
    with contextlib.suppress(OSError, AttributeError):  # no per-thread nice: run as is
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE)


def _code_of(exc: BaseException) -> tuple[str, str]:
    """The error code and message of a writer job's failure."""
    if isinstance(exc, UnsafePath):
        return proto.BAD_REQUEST, str(exc)
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return proto.DISK_FULL, text
        if exc.errno in (errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
            return proto.BAD_REQUEST, text
        return proto.INTERNAL, text
    return proto.INTERNAL, f"{type(exc).__name__}: {exc}"
