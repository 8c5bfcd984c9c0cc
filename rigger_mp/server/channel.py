"""Pickled batches over a one-way OS pipe between the server process and the main process.

Why not a ``multiprocessing.Queue``: a queue is shared by its writers and readers through
locks (a semaphore for the readers, another for the writers) and a byte stream. When the
server process is killed with SIGKILL it is almost always blocked in ``get()`` holding the
reader lock, or mid-``put()`` with half a message written: a queue reused by the next
server process would hang or read garbage. A fresh pair of pipes per server process has
neither problem, and the reader sees end-of-file the moment the writer dies, which is
how each side learns that the other is gone, without polling.

Frames are a 4-byte big-endian length and a pickle. Only rigger_mp's own processes write
to these pipes; data from the network is parsed as JSON in the server before it gets here.

The main process's ends: :class:`BlockingReader` (the requests pipe, read by the intake
thread) and :class:`QueuedWriter` (the reply pipe, written by a thread of its own). The
server process's ends, driven by its asyncio loop without blocking it: :class:`PipeWriter`
(the requests pipe) and :class:`PipeReader` (the reply pipe). What the pipes carry is
declared in :mod:`.pipe_messages`.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol

from .pipe_messages import Replies

if TYPE_CHECKING:
    import asyncio

    from .reply_target import Ack

from .. import printable

logger = printable.logger("rigger_mp")

_HEADER: Final = struct.Struct("!I")
HEADER_SIZE: Final = _HEADER.size
READ_SIZE: Final = 64 * 1024
"""Pipe reads go into one preallocated buffer of this size: a fresh ``os.read`` buffer of
256 KiB or more is an mmap/munmap pair per read, which cost more than the whole hop."""
PIPE_HIGH_WATER: Final = 4 * 1024 * 1024
"""Bytes waiting for the main process above which the server process reads no client."""


def pack(obj: Any) -> bytes:
    """One frame holding ``obj``."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Turns the bytes read from a pipe back into the objects that were packed."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        # The unfinished frame, extended in place: reassembling a frame of n bytes from
        # reads of a fixed size costs O(n), not the O(n²) of concatenating bytes.
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """The objects whose frames ``data`` completes, in order."""
        held = self._buf
        if held:
            held += data
            buf: bytes | bytearray = held
        else:
            buf = data
        out: list[Any] = []
        pos = 0
        end = len(buf)
        unpack = _HEADER.unpack_from
        with memoryview(buf) as view:
            while end - pos >= HEADER_SIZE:
                (size,) = unpack(buf, pos)
                stop = pos + HEADER_SIZE + size
                if stop > end:
                    break
                try:
                    out.append(pickle.loads(view[pos + HEADER_SIZE : stop]))
                except Exception:  # a bug on the other side: lose this frame, not the stream
                    logger.exception("a %d-byte frame does not unpickle; dropped", size)
                pos = stop
        if buf is held:
            del held[:pos]
        elif pos < end:
            held += memoryview(data)[pos:]
        return out


class BlockingReader:
    """The main process's end of the server's request pipe: :meth:`recv` blocks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._closing = threading.Lock()
        self._frames = FrameReader()
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)

    def recv(self) -> list[Any]:
        """Block until at least one object arrived; raise ``EOFError`` when the writer is gone."""
        while True:
            n = os.readv(self.fd, [self._buf])
            if not n:
                raise EOFError("the pipe's writer has gone")
            objs = self._frames.feed(self._view[:n].tobytes())
            if objs:
                return objs

    def close(self) -> None:
        """Close the pipe (once: a second close could hit a descriptor reused since)."""
        with self._closing:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class QueuedWriter:
    """The main process's end of the reply pipe: :meth:`send` never blocks, a thread writes.

    Replies to ``grab_result``/``wait_for_task`` are sent by done-callbacks, on the event
    thread: a blocking write there would stall every event while the server process is
    not reading (stopped, wedged). The writer thread sends what queued up meanwhile as
    one frame, and closes the pipe itself after :meth:`close`, so the descriptor is never
    closed (and its number reused) under a write. Once the reader has gone (the server
    process died) everything is dropped: the connections it was for died with it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="rigger_mp-replies", daemon=True)
        self._thread.start()

    def send(self, obj: Any) -> None:
        """Queue ``obj``: a :class:`~.pipe_messages.Replies` (joined with those queued
        next to it) or any other object, sent alone."""
        self._queue.put(obj)

    def close(self) -> None:
        """Write what is queued, then close the pipe (at once if the reader has gone)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_CLOSE)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        broken = False
        obj = get()
        while True:
            after = None
            if type(obj) is Replies:
                batches = [obj]
                while True:  # every batch queued meanwhile goes into the same frame
                    try:
                        after = get_nowait()
                    except queue.Empty:
                        break
                    if type(after) is not Replies:
                        break
                    batches.append(after)
                    after = None
                if len(batches) > 1:
                    obj = Replies.join(batches)
            if obj is _CLOSE:
                break
            if not broken:
                try:
                    frame = pack(obj)
                except Exception:  # a bug: lose this object, not the thread and the pipe
                    logger.exception("a reply to the TCP server cannot be pickled")
                else:
                    broken = not self._write(frame)
            obj = get() if after is None else after
        os.close(self._fd)

    def _write(self, frame: bytes) -> bool:
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:  # EPIPE: the server process died
            return False
        return True


_CLOSE: Final = object()


class PipeOwner(Protocol):
    """What the server process's pipe ends tell the server (and the loop they run on)."""

    loop: asyncio.AbstractEventLoop

    def main_gone(self) -> None:
        """The main process died or closed its pipe."""

    def release(self, acks: list[Ack]) -> None:
        """The frame these acks came with is wholly in the pipe: write them."""

    def main_backlogged(self, paused: bool) -> None:
        """The pipe holds more than :data:`PIPE_HIGH_WATER` (or has drained)."""

    def deliver(self, replies: Replies) -> None:
        """A batch of replies came from the main process."""

    def receive(self, obj: object) -> None:
        """Any other message came from the main process."""


class PipeWriter:
    """The server process's end of the requests pipe, written without blocking the loop.

    What the pipe cannot take at once is buffered; above :data:`PIPE_HIGH_WATER` the
    clients stop being read until it drains, so memory stays bounded when the main
    process falls behind. The acks that come with a frame are released once its last
    byte is in the pipe (``sent`` counts the bytes written so far).
    """

    def __init__(self, owner: PipeOwner, fd: int) -> None:
        os.set_blocking(fd, False)
        self.owner = owner
        self.fd = fd
        self.buf = bytearray()
        self.sent = 0
        self.held: deque[tuple[int, list[Ack]]] = deque()
        self.paused = False
        self.closing = False
        self.closed = False

    def write(self, frame: bytes, acks: list[Ack]) -> None:
        if self.closed or self.closing:
            return
        if self.buf:
            self.buf += frame
        else:
            try:
                written = os.write(self.fd, frame)
            except BlockingIOError:
                written = 0
            except OSError:  # EPIPE: the main process is gone
                self.owner.main_gone()
                return
            self.sent += written
            if written == len(frame):
                if acks:
                    self.owner.release(acks)
                return
            self.buf += memoryview(frame)[written:]
            self.owner.loop.add_writer(self.fd, self._drain)
        if acks:
            self.held.append((self.sent + len(self.buf), acks))
        if not self.paused and len(self.buf) > PIPE_HIGH_WATER:
            self.paused = True
            self.owner.main_backlogged(True)

    def release_after(self, acks: list[Ack]) -> None:
        """Release ``acks`` once every frame written so far is wholly in the pipe (now, if
        nothing waits): acks that come with no frame of their own."""
        if self.closed or self.closing:
            return
        if self.buf:
            self.held.append((self.sent + len(self.buf), acks))
        else:
            self.owner.release(acks)

    def _drain(self) -> None:
        try:
            written = os.write(self.fd, self.buf)
        except BlockingIOError:
            return
        except OSError:
            self.owner.main_gone()
            return
        del self.buf[:written]
        self.sent += written
        held = self.held
        while held and held[0][0] <= self.sent:
            self.owner.release(held.popleft()[1])
        if self.paused and len(self.buf) <= PIPE_HIGH_WATER // 4:
            self.paused = False
            self.owner.main_backlogged(False)
        if not self.buf:
            self.owner.loop.remove_writer(self.fd)
            if self.closing:
                self.owner.main_gone()

    def close(self) -> None:
        """Close once everything buffered is written; then the process may end."""
        self.closing = True
        if not self.buf:
            self.owner.main_gone()

    def close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.loop.remove_writer(self.fd)
            os.close(self.fd)


class PipeReader:
    """The server process's end of the reply pipe: reply batches and other messages,
    read when the loop says the pipe is readable."""

    def __init__(self, owner: PipeOwner, fd: int) -> None:
        os.set_blocking(fd, False)
        self.owner = owner
        self.fd = fd
        self.frames = FrameReader()
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.closed = False
        owner.loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            n = os.readv(self.fd, [self.buf])
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if not n:  # end-of-file: the main process has gone
            self.owner.main_gone()
            return
        owner = self.owner
        for obj in self.frames.feed(self.view[:n].tobytes()):
            if type(obj) is Replies:
                owner.deliver(obj)
            else:
                owner.receive(obj)

    def close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.loop.remove_reader(self.fd)
            os.close(self.fd)
