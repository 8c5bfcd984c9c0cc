"""One client connection of the server process's JSON-lines port.

Messages are numbered as they arrive (``seq_in``); replies are written in that order
(:class:`~.reply_order.ReplyOrder`). A read is handled ``max_messages_per_turn``
messages at a time (the rest waits in ``frames`` for a later loop turn, with reading
paused), so one flooding client cannot starve the others. Before any line is handled,
a connection that starts as an HTTP request is refused (:mod:`.http_refusal`). A
connection is a :class:`~.reply_target.ReplyTarget`: the server hands it its replies.
Its life is one :class:`ConnPhase`, moved along :data:`CONN_MOVES`. An ``attach`` and
the file after it are its :class:`~.attacher.Attacher`'s.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Final

from .. import protocol as proto
from ..lifecycle import move
from .attacher import Attacher
from .auth import TokenCheck
from .http_refusal import REFUSAL, looks_like_http
from .reply_order import ReplyOrder
from .router import ServerPhase

if TYPE_CHECKING:
    from .router import Server

MAX_OWED: Final = 10_000
"""Replies one connection may be owed before the server stops reading from it: a reply
held back (a slow ``grab_result``) keeps every later one waiting in memory."""
WRITE_HIGH_WATER: Final = 256 * 1024
"""A client's unread replies above this: stop reading its messages until it catches up."""


class ConnPhase(enum.Enum):
    """Where a connection is in its life: OPEN, FINISHING, LOST (never back)."""

    OPEN = "open"
    """Messages are read and handled."""
    FINISHING = "finishing"
    """No more messages are read; it closes once every one read has its reply."""
    LOST = "lost"
    """The transport is gone: nothing more is read or written."""


_OPEN: Final = ConnPhase.OPEN
_FINISHING: Final = ConnPhase.FINISHING
_LOST: Final = ConnPhase.LOST
CONN_MOVES: Final = {_OPEN: {_FINISHING, _LOST}, _FINISHING: {_LOST}, _LOST: set()}
"""The legal moves of a :class:`ConnPhase`."""
_ACCEPTING: Final = ServerPhase.ACCEPTING
_STOPPING: Final = ServerPhase.STOPPING


class Connection(asyncio.BufferedProtocol):
    """One client connection (see the module's docstring). ``rids`` are the requests
    the main process owes it a reply to."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.framer = proto.Framer()
        self.auth = TokenCheck(server.token, server.settings.max_auth_failures)
        self.seq_in = 0
        self.replies = ReplyOrder()
        self.head: bytearray | None = bytearray()
        """The first bytes read, until they tell whether this is an HTTP request."""
        self.state = _OPEN
        self.write_paused = False
        self.reading = True
        self.frames: list[bytes] | None = None
        """Frames of the last read not handled yet (None: all handled)."""
        self.index = 0
        self.scheduled = False
        self.eof = False
        """The client half-closed while frames were left: finish once they are handled."""
        self.rids: set[int] = set()
        self.refused = 0
        """Messages answered with an error by this process (they do not count as activity)."""
        self.protocol_errors = 0
        self.buffered = 0
        self.drain_limited = False
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.auth_timer: asyncio.TimerHandle | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.attacher = Attacher(self, self._read)

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        if server.listener is not None:
            server.listener.opened()
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        server.conns.add(self)
        server.connections_total += 1
        settings = server.settings
        self.last_active = self.loop.time()
        self.timer = self.loop.call_at(self.last_active + settings.idle_timeout, self._check_idle)
        if not self.auth.authed:
            self.auth_timer = self.loop.call_later(settings.auth_timeout, self._auth_expired)
        if server.state is _STOPPING:
            self.finish()
        else:
            if server.replies_paused:
                self.report_drain(True)
            self.update_reading()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.attacher.read_buffer(self.server.read_buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.attacher.read_view(self.server.read_view)[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.state is not _OPEN:
            return
        if self.head is not None:
            head = self.head
            head += data
            verdict = looks_like_http(head)
            if verdict is None:  # too few bytes yet to tell
                return
            self.head = None
            if verdict:
                self._refuse_http()
                return
            data = bytes(head)
        self._read(data)

    def _refuse_http(self) -> None:
        """The connection starts as an HTTP request: one ``bad_request``, then close."""
        self.server.errors["http_refused"] += 1
        self.seq_in = 1
        self.error(0, proto.BAD_REQUEST, REFUSAL)
        self.finish()

    def _read(self, data: bytes) -> None:
        """Handle the frames ``data`` completes (some on later turns if many)."""
        if self.attacher.raw:  # an upload's bytes, or behind those held back
            self.attacher.read(data)
            return
        frames = self.framer.feed(self.attacher.cut(data))
        if self.frames is not None:  # read before pause_reading took effect
            self.frames += frames
            return
        if frames:
            self.frames = frames
            self.index = 0
            self._work()
        else:
            self._rest()

    def _work(self) -> None:
        """Handle up to ``max_messages_per_turn`` of the frames read; leave the rest for
        a later turn (reading stays paused until they are all handled)."""
        self.scheduled = False
        frames = self.frames
        if frames is None or self.state is not _OPEN:
            self.frames = None
            return
        if self._blocked():  # update_reading() calls us again once unblocked
            self.update_reading()
            return
        server = self.server
        i = self.index
        end = min(len(frames), i + server.per_turn)
        accepted = self.seq_in - self.refused
        handle = self._handle
        while i < end:
            frame = frames[i]
            i += 1
            if frame:
                handle(frame)
                if self.state is not _OPEN:
                    break
        if self.seq_in - self.refused != accepted:  # blank and refused lines do not count
            self.last_active = self.loop.time()
        if i < len(frames) and self.state is _OPEN:
            self.index = i
        else:
            self.frames = None
            self._rest()
        server.flush_outbox()
        self.flush()
        self.update_reading()

    def _rest(self) -> None:
        """Every frame read is handled: bound the unended rest; a half-close finishes."""
        if self.state is not _OPEN:
            return
        if self.framer.pending > self.server.max_bytes:
            self._too_large(self.seq_in, self.framer.pending)
        elif self.eof:
            self.finish()

    def eof_received(self) -> bool:
        # The client is done sending (``nc -N``, shutdown(SHUT_WR)); a message left
        # unended counts as its last one. Keep the socket open to write the replies.
        if self.attacher.ended():  # finish once the upload, and what follows it, is done
            return True
        head, self.head = self.head, None
        if head and self.state is _OPEN:  # too short to be an HTTP request
            self._read(bytes(head))
        rest = self.framer.finish()
        if self.state is _OPEN and rest and not proto.is_blank(rest):
            if self.frames is not None:
                self.frames.append(rest)
            else:
                self._handle(rest)
                self.server.flush_outbox()
        if self.frames is not None and self.state is _OPEN:
            self.eof = True  # finish once the frames left are handled
            return True
        self.finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = move(CONN_MOVES, self.state, _LOST)
        self.replies.clear()
        self.frames = None
        self.attacher.lost()
        for timer in (self.timer, self.auth_timer, self.drain_timer):
            if timer is not None:
                timer.cancel()
        self.server.conn_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.drain_timer is None:
            self.drain_timer = self.loop.call_later(
                self.server.settings.drain_timeout, self._drain_expired
            )
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        transport = self.transport
        if self.drain_timer is not None and not (transport is None or transport.is_closing()):
            self.drain_timer.cancel()
            self.drain_timer = None
        self.sample()
        self.update_reading()

    # -- messages --------------------------------------------------------------------

    def _handle(self, frame: bytes) -> None:
        server = self.server
        seq = self.seq_in
        if len(frame) > server.max_bytes:
            self._too_large(seq, len(frame))
            return
        try:
            msg = proto.parse(frame, server.max_depth, server.max_hook_name)
        except proto.ProtocolError as exc:
            if proto.is_blank(frame):
                return
            self.seq_in = seq + 1
            server.messages += 1
            self.error(seq, exc.code, exc.message)
            return
        self.seq_in = seq + 1
        server.messages += 1
        try:
            if type(msg) is proto.Fire:
                if not self.auth.authed:
                    self.error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
                elif server.state is not _ACCEPTING:
                    self.error(seq, proto.SHUTTING_DOWN, "the dispatcher is stopping")
                else:
                    server.fire(self, seq, msg, frame)
                return
            if type(msg) is proto.Attach:
                self.attacher.start(seq, msg, frame)
                return
            assert type(msg) is proto.Op
            self._op(seq, msg)
        except Exception as exc:  # a fault of ours: this message's reply says so
            self._fault(seq, exc)

    def _fault(self, seq: int, exc: Exception) -> None:
        """Handling message ``seq`` raised: answer it ``internal`` unless it has a reply."""
        self.server.faults(exc_info=exc)
        if self.replies.has(seq):
            return
        self.error(seq, proto.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _op(self, seq: int, msg: proto.Op) -> None:
        server = self.server
        op = msg.op
        if op == "auth":
            assert msg.arg is not None
            refusal = self.auth.check(msg.arg)
            if refusal is None:
                if self.auth_timer is not None:
                    self.auth_timer.cancel()
                    self.auth_timer = None
                self.put(seq, proto.OK_LINE)
                return
            self.error(seq, proto.UNAUTHORIZED, refusal)
            if self.auth.exhausted:
                server.errors["auth_failures_closed"] += 1
                self.finish()
        elif not self.auth.authed:
            self.error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
        else:
            server.op(self, seq, msg)

    def error(self, seq: int, code: str, message: str) -> None:
        """Answer message ``seq`` with an error; past ``max_protocol_errors``, close after it."""
        server = self.server
        server.errors[code] += 1
        self.refused += 1
        if code is not proto.SHUTTING_DOWN:
            self.protocol_errors = n = self.protocol_errors + 1
            limit = server.settings.max_protocol_errors
            if n >= limit and self.state is _OPEN:
                server.errors["protocol_errors_closed"] += 1
                message = (
                    f"{n} errors (max_protocol_errors {limit}), closing the connection: "
                    + message
                )
                self.put(seq, proto.error_line(code, message))
                self.finish()
                return
        self.put(seq, proto.error_line(code, message))

    def _too_large(self, seq: int, size: int) -> None:
        """Reply ``too_large`` after the replies already due, then close."""
        self.seq_in = seq + 1
        self.error(
            seq,
            proto.TOO_LARGE,
            f"message of {size} bytes or more exceeds max_message_bytes "
            f"({self.server.max_bytes}); closing the connection",
        )
        self.finish()

    # -- replies ---------------------------------------------------------------------

    def put(self, seq: int, line: bytes) -> bool:
        """Queue the reply to message ``seq``; True if it (and maybe more) can be written."""
        if self.state is _LOST or not self.replies.put(seq, line):
            return False
        if not self.reading:
            self.update_reading()
        return True

    def flush(self) -> None:
        """Write the replies that are due; close if finishing and nothing is owed."""
        transport = self.transport
        if transport is None or self.state is _LOST:
            return
        if self.replies.due:
            transport.write(self.replies.take())
            size = transport.get_write_buffer_size()
            if size or self.buffered:
                self.server.account(self, size)
        if (
            self.state is _FINISHING
            and self.replies.next == self.seq_in
            and not transport.is_closing()
        ):
            self._close()

    def answered(self, now: float) -> None:
        """Replies from the main process were put: the idle clock restarts once they are out."""
        self.last_active = now
        self.flush()

    @property
    def lost(self) -> bool:
        return self.state is _LOST

    def write_buffer_size(self) -> int:
        """Reply bytes this connection's transport holds now."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def sample(self) -> None:
        """Tell the server how many reply bytes this connection's transport holds now."""
        if self.transport is not None and self.state is not _LOST:
            self.server.account(self, self.transport.get_write_buffer_size())

    def report_drain(self, on: bool) -> None:
        """Have the transport call ``resume_writing`` only once empty (while the server holds
        too many reply bytes), or at its usual low-water mark again."""
        transport = self.transport
        if on == self.drain_limited or transport is None or self.state is _LOST:
            return
        self.drain_limited = on
        transport.set_write_buffer_limits(high=0 if on else WRITE_HIGH_WATER)

    def finish(self) -> None:
        """Read no more; close once every message read so far has its reply."""
        self._stop_reading()
        self.update_reading()
        self.flush()

    def _stop_reading(self) -> None:
        """OPEN -> FINISHING: the frames left unhandled are dropped."""
        if self.state is _OPEN:
            self.state = move(CONN_MOVES, _OPEN, _FINISHING)
            self.frames = None

    def _close(self) -> None:
        """Close once the replies are written; a client that leaves them unread for
        ``drain_timeout`` is aborted (``transport.close`` alone would wait for ever)."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        if transport.get_write_buffer_size() and self.drain_timer is None:
            self.drain_timer = self.loop.call_later(
                self.server.settings.drain_timeout, self._drain_expired
            )

    def _drain_expired(self) -> None:
        self.drain_timer = None
        if self.state is _LOST or self.transport is None:
            return
        self.server.errors["drain_timeout"] += 1
        self.transport.abort()

    def abort(self) -> None:
        if self.transport is not None and self.state is not _LOST:
            self.transport.abort()

    def _blocked(self) -> bool:
        """No message is to be handled now: finishing, owed too many replies, a buffer toward
        it, toward main or toward all clients full, or its upload with no room."""
        server = self.server
        return (
            self.state is not _OPEN
            or self.write_paused
            or server.main_paused
            or server.replies_paused
            or self.seq_in - self.replies.next > MAX_OWED
            or self.attacher.blocks
        )

    def update_reading(self) -> None:
        """Read from the client unless blocked or frames of the last read are left (which
        are then handled on a later turn)."""
        transport = self.transport
        if transport is None or self.state is _LOST:
            return
        blocked = self._blocked()
        if self.frames is not None and not blocked and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._work)
        elif self.attacher.held is not None and not blocked and self.frames is None:
            self.attacher.schedule()
        want = not blocked and self.frames is None and self.attacher.held is None
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _check_idle(self) -> None:
        """Close a connection that completed no accepted message for ``idle_timeout`` and is
        owed nothing.

        Neither a message trickling in byte by byte (slowloris) nor blank lines nor
        messages refused with an error count as activity.
        """
        if self.state is _LOST:
            return
        idle = self.server.settings.idle_timeout
        now = self.loop.time()
        if self.replies.next != self.seq_in or self.frames is not None:  # not idle: busy
            self.timer = self.loop.call_at(now + idle, self._check_idle)
            return
        deadline = self.last_active + idle
        if now >= deadline:
            self.server.errors["idle_timeout"] += 1
            self._stop_reading()
            self._close()
            return
        self.timer = self.loop.call_at(deadline, self._check_idle)

    def _auth_expired(self) -> None:
        """A token is required and none was accepted within ``auth_timeout``: say so, close."""
        self.auth_timer = None
        if self.auth.authed or self.state is _LOST or self.transport is None:
            return
        self.server.errors["auth_timeout"] += 1
        timeout = self.server.settings.auth_timeout
        self._stop_reading()
        if self.replies.next == self.seq_in:
            self.transport.write(
                proto.error_line(
                    proto.UNAUTHORIZED,
                    f"no valid auth within auth_timeout ({timeout:g} s); closing the connection",
                )
            )
        self.update_reading()
        self._close()
