"""The raw-bytes side of one JSON-lines connection: an ``attach`` and the file after it.

An ``attach`` header switches its connection to raw bytes: the ``size`` bytes after it
go to its :class:`~.uploads.Upload`, never through the framer. So that they are never
framed, a read holding ``attach`` is cut after the line that holds it (:meth:`cut`), and
the rest (:attr:`Attacher.held`) waits until that line is handled; an ``attach`` header
with anything framed after it (spelled with escapes, say) is refused and the connection
closed. A refused ``attach`` also closes: the bytes the client may send after it are
never read. What the client sends after the file waits, unread, for the upload's reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .. import protocol as proto
from .router import ServerPhase

if TYPE_CHECKING:
    from .auth import TokenCheck
    from .router import Server
    from .uploads import Upload


class Host(Protocol):
    """What the attacher uses of its connection (:class:`~.connection.Connection`)."""

    server: Server
    auth: TokenCheck
    loop: asyncio.AbstractEventLoop
    frames: list[bytes] | None
    framer: proto.Framer
    eof: bool
    last_active: float

    @property
    def lost(self) -> bool: ...
    def error(self, seq: int, code: str, message: str) -> None: ...
    def finish(self) -> None: ...
    def put(self, seq: int, line: bytes) -> bool: ...
    def flush(self) -> None: ...
    def update_reading(self) -> None: ...


class Attacher:
    """The upload of one connection, and the bytes held back around it."""

    def __init__(self, conn: Host, read: Callable[[bytes], None]) -> None:
        self.conn = conn
        self.read_framed = read
        """The connection's own reading, for what is held back once it is due."""
        self.upload: Upload | None = None
        self.seq = 0
        self.held: bytes | None = None
        """Bytes read after an ``attach`` line, not handled yet (reading is paused)."""
        self.header_open = False
        """The framer's unended rest may be an ``attach`` header: cut at its end."""
        self.tail = b""
        """The last bytes of the last read (an ``attach`` split between two reads)."""
        self.scheduled = False

    @property
    def raw(self) -> bool:
        """Bytes read now are an upload's, or go behind those held back."""
        return self.upload is not None or self.held is not None

    @property
    def blocks(self) -> bool:
        """The connection is not to be read: its upload has no room or all its bytes."""
        return self.upload is not None and not self.upload.wants

    def read_buffer(self, default: bytearray) -> bytearray:
        """Where the transport reads into: 1 MiB at a time during an upload."""
        return default if self.upload is None else self.conn.server.uploads().read_buffer

    def read_view(self, default: memoryview) -> memoryview:
        return default if self.upload is None else self.conn.server.uploads().read_view

    def cut(self, data: bytes) -> bytes:
        """``data`` up to the end of a line that may be an ``attach`` header (the rest is
        held back), or all of it. Cheap when no ``attach`` is near: one search."""
        if self.header_open:
            start = 0
        else:
            start = data.find(b"attach")
            if start < 0 and self.conn.framer.pending and b"attach" in self.tail + data[:6]:
                start = 0
        self.tail = data[-5:]
        if start < 0:
            return data
        ends = [i for i in (data.find(b"\n", start), data.find(b"\0", start)) if i >= 0]
        self.header_open = not ends
        end = min(ends) + 1 if ends else len(data)
        if end < len(data):
            self.held = data[end:]
        return data[:end]

    def read(self, data: bytes) -> None:
        """During an upload: its bytes to it; what follows them is held until it is done."""
        upload = self.upload
        if self.held is None and upload is not None and upload.receiving:
            data = data[upload.feed(data) :]
        if data:
            self.held = data if self.held is None else self.held + data
        self.conn.update_reading()

    def schedule(self) -> None:
        """Handle what is held back on the next loop turn."""
        if not self.scheduled:
            self.scheduled = True
            self.conn.loop.call_soon(self._take_held)

    def _take_held(self) -> None:
        self.scheduled = False
        held, self.held = self.held, None
        if held is not None and not self.conn.lost:
            self.read_framed(held)
            self.conn.update_reading()

    def start(self, seq: int, msg: proto.Attach, frame: bytes) -> None:
        """Start an upload; refused (and closed: its bytes are never read) when the client
        may not, or when anything after its line was framed already."""
        conn = self.conn
        server = conn.server
        frames = conn.frames
        if not conn.auth.authed:
            code, why = proto.UNAUTHORIZED, 'send {"op": "auth", ...} first'
        elif server.state is ServerPhase.STOPPING:
            code, why = proto.SHUTTING_DOWN, "the server is stopping"
        elif frames is None or frames[-1] is not frame or conn.framer.pending:
            code, why = proto.BAD_REQUEST, "attach: the header must be spelled out plainly"
        else:
            from .uploads import Refused

            try:
                self.upload = server.uploads().begin(msg, self)
                self.seq = seq
                return
            except Refused as exc:
                code, why = exc.code, exc.message
        conn.error(seq, code, why)
        conn.finish()

    def upload_room(self) -> None:
        self.conn.update_reading()

    def upload_done(self, line: bytes, ok: bool) -> None:
        """The upload's reply: put it; go on with what followed it, or close on an error."""
        conn = self.conn
        self.upload = None
        if conn.lost:
            return
        conn.last_active = conn.loop.time()
        conn.put(self.seq, line)
        if not ok:
            self.held = None
            conn.finish()
            return
        conn.flush()
        if conn.eof and self.held is None:
            conn.finish()
        conn.update_reading()

    def ended(self) -> bool:
        """The client half-closed: an upload short of bytes fails (nothing kept); True (and
        the connection's ``eof`` set) if it is to finish once the upload or what is held
        is handled."""
        upload = self.upload
        if upload is not None and upload.receiving:
            missing, size = upload.missing, upload.size
            why = f"the client ended the upload {missing} bytes short of its {size}"
            upload.fail(proto.BAD_REQUEST, why)
        if self.raw:
            self.conn.eof = True
        return self.raw

    def lost(self) -> None:
        """The connection is gone: an upload under way keeps nothing."""
        self.held = None
        upload, self.upload = self.upload, None
        if upload is not None:
            upload.cut()
