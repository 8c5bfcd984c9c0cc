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
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import threading
from typing import Any, Final

from .. import printable

logger = printable.logger("rigger_mp")

_HEADER: Final = struct.Struct("!I")
HEADER_SIZE: Final = _HEADER.size
READ_SIZE: Final = 64 * 1024
"""Pipe reads go into one preallocated buffer of this size: a fresh ``os.read`` buffer of
256 KiB or more is an mmap/munmap pair per read, which cost more than the whole hop."""


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
                    logger.exception("rigger_mp: a %d-byte frame does not unpickle; dropped", size)
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
        """Queue ``obj``: a list of replies (merged with lists queued next to it) or any
        other object, sent alone."""
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
            if type(obj) is list:
                lists = [obj]
                while True:  # every list queued meanwhile goes into the same frame
                    try:
                        after = get_nowait()
                    except queue.Empty:
                        break
                    if type(after) is not list:
                        break
                    lists.append(after)
                    after = None
                if len(lists) > 1:
                    obj = [reply for replies in lists for reply in replies]
            if obj is _CLOSE:
                break
            if not broken:
                try:
                    frame = pack(obj)
                except Exception:  # a bug: lose this object, not the thread and the pipe
                    logger.exception("rigger_mp: a reply to the TCP server cannot be pickled")
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
