"""The TCP server process: one asyncio loop serving every connection, no thread per client.

It parses and validates each message (see :mod:`rigger_mp.protocol`), answers what it can
by itself (``ping``, ``auth``, malformed input) and forwards the rest to the main process
as batches over a pipe (see :mod:`.channel`, :mod:`.messages`): everything that one read
of a connection produced travels as one pickled list. The main process answers with batches
of ``(rid, kind, payload)``; each connection numbers its messages and writes the replies
strictly in that order, whatever order they come back in.

A fire is accepted here: it gets its tid from this process's counter, and its ``ok`` is
written once its frame is wholly in the requests pipe. From then on it belongs to the
main process: the read end of that pipe is the main process's, and what was written into
it stays readable after this process dies, so the main process starts another one on the
same listening socket and loses nothing acknowledged (see :mod:`.supervisor`, and
:mod:`.intake` for the thread that reads the pipe). Only ``grab_result`` and
``wait_for_task`` fires wait for the main process's reply. To learn that it has queued
every fire this process acked, the main process sends a :data:`FENCE` request, which
comes back down the requests pipe behind them; at a stop the request also makes this
process refuse fires from then on. When the main process dies, the reply pipe reaches
end-of-file and this process exits at once: it never outlives its parent.

The server and each connection keep one state each (:class:`ServerState`,
:class:`ConnState`). This module imports only the channel, the messages and the
protocol: the server process never loads the dispatcher.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections import Counter, deque
from hmac import compare_digest
from typing import Any, Final

from .. import protocol as proto
from .channel import READ_SIZE, FrameReader, pack
from .journaling import ServerJournal
from .messages import (
    FENCE,
    FIRE,
    NO_REPLY,
    R_LINE,
    READY,
    STATS,
    STATUS,
    STOP,
    TERMINATE,
    ServerSettings,
)

logger = logging.getLogger("rigger_mp.server")

BACKLOG: Final = 1024
PIPE_HIGH_WATER: Final = 4 * 1024 * 1024
"""Bytes waiting for the main process above which no client is read."""
MAX_OWED: Final = 10_000
"""Replies one connection may be owed before the server stops reading from it: a reply
held back (a slow ``grab_result``) keeps every later one waiting in memory."""
WRITE_HIGH_WATER: Final = 256 * 1024
"""A client's unread replies above this: stop reading its messages until it catches up."""


def main(argv: list[str]) -> None:
    """Run the server process: ``argv`` holds the socket, request and reply pipe fds.

    The first object on the reply pipe is the :class:`ServerSettings` (the token is
    never on the command line, where ``ps`` would show it).
    """
    # Ctrl-C reaches the whole process group; the main process decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock_fd, requests_fd, replies_fd = (int(a) for a in argv)
    sock = socket.socket(fileno=sock_fd)
    settings = _read_settings(replies_fd)
    loop = asyncio.new_event_loop()
    server: Server | None = None
    try:
        server = Server(loop, settings)
        loop.run_until_complete(server.run(sock, requests_fd, replies_fd))
    finally:
        if server is not None and server.journal is not None:
            server.journal.close()
        loop.close()


def _read_settings(fd: int) -> ServerSettings:
    """Block for the first frame of the reply pipe: the settings (read byte-exact)."""

    def read_exactly(n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(fd, n)
            if not chunk:
                raise SystemExit("rigger_mp server: the main process went away before starting us")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack("!I", read_exactly(4))
    settings = pickle.loads(read_exactly(size))
    if not isinstance(settings, ServerSettings):
        raise SystemExit(f"rigger_mp server: expected settings, got {type(settings).__name__}")
    return settings


class ServerState(enum.Enum):
    """Where the server process is in its life: ACCEPTING, then REFUSING once a quiescing
    fence came (or from the start, for a process started while the dispatcher stops),
    then STOPPING once STOP came."""

    ACCEPTING = "accepting"
    """Fires are accepted (acked, forwarded)."""
    REFUSING = "refusing"
    """Fires get ``shutting_down``; every other request is served."""
    STOPPING = "stopping"
    """No new connections or requests; each connection closes once answered."""


class ConnState(enum.Enum):
    """Where a connection is in its life: OPEN, FINISHING, LOST (never back)."""

    OPEN = "open"
    """Messages are read and handled."""
    FINISHING = "finishing"
    """No more messages are read; it closes once every one read has its reply."""
    LOST = "lost"
    """The transport is gone: nothing more is read or written."""


_ACCEPTING: Final = ServerState.ACCEPTING
_STOPPING: Final = ServerState.STOPPING
_OPEN: Final = ConnState.OPEN
_FINISHING: Final = ConnState.FINISHING
_LOST: Final = ConnState.LOST


class Server:
    """The state shared by all connections of the server process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: ServerSettings) -> None:
        self.loop = loop
        self.settings = settings
        self.max_bytes = settings.max_message_bytes
        self.conns: set[Conn] = set()
        self.pending: dict[int, tuple[Conn, int]] = {}
        self.next_rid = 0
        self.fires = 0
        self.outbox: list[tuple[Any, ...]] = []
        self.acks: list[tuple[Conn, int, str]] = []
        self.state = _ACCEPTING if settings.accepting else ServerState.REFUSING
        self.main_paused = False
        self.finished: asyncio.Future[None] = loop.create_future()
        self.to_main: _ToMain | None = None
        self.from_main: _FromMain | None = None
        # Every connection reads into this one buffer (the loop runs one callback at a
        # time); see READ_SIZE in rigger_mp.server.channel for why it is preallocated.
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.listener: asyncio.Server | None = None
        self.connections_total = 0
        self.messages = 0
        self.errors: Counter[str] = Counter()
        # With a journal, fires are committed before they go into the pipe (.journaling).
        self.journal = ServerJournal.open(self, settings)

    async def run(self, sock: socket.socket, requests_fd: int, replies_fd: int) -> None:
        """Connect the pipes, start listening, tell the main process, serve until told."""
        self.to_main = _ToMain(self, requests_fd)
        self.from_main = _FromMain(self, replies_fd)
        self.listener = await self.loop.create_server(
            lambda: Conn(self), sock=sock, backlog=BACKLOG, start_serving=True
        )
        self.to_main.write(pack((READY, os.getpid())), [])
        await self.finished

    # -- to the main process -------------------------------------------------------

    def forward(self, conn: Conn, seq: int, item: tuple[Any, ...]) -> None:
        """Send ``item`` to the main process with the next rid; its reply goes to ``conn``."""
        rid = self.next_rid
        self.next_rid = rid + 1
        self.pending[rid] = (conn, seq)
        self.outbox.append((rid, *item))

    def fire(self, conn: Conn, seq: int, msg: proto.Fire) -> None:
        """Accept a fire: give it a tid; a plain fire is acked once its batch is in the pipe."""
        self.fires = n = self.fires + 1
        tid = self.settings.tid_prefix + str(n)
        if msg.mode == proto.ACK:
            self.outbox.append((NO_REPLY, FIRE, msg.hook_name, msg.data, msg.mode, tid))
            self.acks.append((conn, seq, tid))
        else:
            self.forward(conn, seq, (FIRE, msg.hook_name, msg.data, msg.mode, tid))

    def flush_outbox(self) -> None:
        """Send what one read of a connection produced, as one batch, at once.

        Not deferred to the end of the loop turn: that costs another turn on every round
        trip. Under load the main process reads many batches at a time and answers them
        with one write, so batching happens there.
        """
        if not self.outbox:
            return
        batch, self.outbox = self.outbox, []
        acks, self.acks = self.acks, []
        if self.journal is not None:
            self.journal.send(batch, acks)
        elif self.to_main is not None:
            self.to_main.write(pack(batch), acks)

    def release(self, acks: list[tuple[Conn, int, str]]) -> None:
        """Write the ``ok`` of fires whose batch is now wholly in the requests pipe."""
        touched: set[Conn] = set()
        ack_line = proto.ack_line
        for conn, seq, tid in acks:
            if conn.state is not _LOST and conn.put(seq, ack_line(tid)):
                touched.add(conn)
        for conn in touched:
            conn.flush()

    def reply_all(self, replies: list[tuple[Conn, int, bytes]]) -> None:
        """Write these replies to their connections (those still open)."""
        touched: set[Conn] = set()
        for conn, seq, line in replies:
            if conn.state is not _LOST and conn.put(seq, line):
                touched.add(conn)
        for conn in touched:
            conn.flush()

    def fence(self, n: int, quiesce: bool) -> None:
        """Answer fence request ``n`` behind every fire acked so far; maybe stop accepting."""
        if quiesce and self.state is _ACCEPTING:
            self.state = ServerState.REFUSING
        self.flush_outbox()
        if self.journal is not None:
            self.journal.send_frame(pack((FENCE, n)))
        elif self.to_main is not None:
            self.to_main.write(pack((FENCE, n)), [])

    def main_backlogged(self, paused: bool) -> None:
        """The pipe to the main process is full (or drained): stop (resume) reading clients."""
        self.main_paused = paused
        for conn in self.conns:
            conn.update_reading()

    # -- from the main process -----------------------------------------------------

    def deliver(self, batch: list[tuple[int, int, Any]]) -> None:
        """Route the main process's replies to their connections, in order."""
        pending = self.pending
        touched: list[Conn] = []
        for rid, kind, payload in batch:
            entry = pending.pop(rid, None)
            if entry is None:
                continue
            conn, seq = entry
            if conn.state is _LOST:
                continue
            line = payload if kind == R_LINE else self._stats_line(payload)
            if conn.put(seq, line):
                touched.append(conn)
        for conn in touched:
            conn.flush()
        if self.state is _STOPPING:
            self._check_finished()

    def _stats_line(self, stats: dict[str, Any]) -> bytes:
        server = stats.setdefault("server", {})
        if isinstance(server, dict):
            server["process"] = {
                "pid": os.getpid(),
                "connections_open": len(self.conns),
                "connections_total": self.connections_total,
                "messages": self.messages,
                "errors": dict(self.errors),
                "waiting_on_main": len(self.pending),
            }
            if self.journal is not None:
                server["process"]["journal"] = self.journal.stats()
        try:
            return proto.reply_line({"ok": True, "stats": stats})
        except (TypeError, ValueError) as exc:
            return proto.error_line(
                proto.NOT_SERIALIZABLE, f"stats {proto.unserializable(stats, exc)}"
            )

    def control(self, obj: Any) -> None:
        """A control object from the main process: a :data:`FENCE` request or :data:`STOP`."""
        if type(obj) is tuple and obj[0] == FENCE:
            self.fence(obj[1], obj[2])
        elif obj == STOP:
            self.stop()
        else:
            logger.error("rigger_mp server: unknown control object %r ignored", obj)

    # -- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, answer what is in flight, close each connection once answered."""
        if self.state is _STOPPING:
            return
        self.state = _STOPPING
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.conns):
            conn.finish()
        self.loop.call_later(self.settings.stop_grace, self._abort_all)
        self._check_finished()

    def conn_closed(self, conn: Conn) -> None:
        """``conn`` has closed: forget it; a stop may now be finished."""
        self.conns.discard(conn)
        if self.state is _STOPPING:
            self._check_finished()

    def _check_finished(self) -> None:
        if not self.pending and not self.conns:
            self._close_main()

    def _abort_all(self) -> None:
        """The grace period is over: drop connections still waiting for their replies."""
        if self.conns:
            logger.warning(
                "rigger_mp server: %d connection(s) still waiting after %.0f s; closing them",
                len(self.conns),
                self.settings.stop_grace,
            )
        for conn in list(self.conns):
            conn.abort()
        self.pending.clear()
        self._close_main()

    def _close_main(self) -> None:
        """Flush and close the pipe to the main process; the loop ends when it has closed."""
        self.flush_outbox()
        if self.journal is not None and self.journal.busy():
            self.journal.after(self._close_main)  # the batches still committing go first
            return
        if self.to_main is not None:
            self.to_main.close()
        else:
            self.main_gone()

    def main_gone(self) -> None:
        """The main process died or closed our pipes: exit now, it has no use for us."""
        for conn in list(self.conns):
            conn.abort()
        if self.listener is not None:
            self.listener.close()
        for end in (self.to_main, self.from_main):
            if end is not None:
                end.close_now()
        if not self.finished.done():
            self.finished.set_result(None)


class _ToMain:
    """The pipe to the main process, written without blocking the loop.

    What the pipe cannot take at once is buffered; above :data:`PIPE_HIGH_WATER` the
    clients stop being read until it drains, so memory stays bounded when the main
    process falls behind. The acks that come with a frame are released once its last
    byte is in the pipe (``sent`` counts the bytes written so far).
    """

    def __init__(self, server: Server, fd: int) -> None:
        os.set_blocking(fd, False)
        self.server = server
        self.fd = fd
        self.buf = bytearray()
        self.sent = 0
        self.held: deque[tuple[int, list[tuple[Conn, int, str]]]] = deque()
        self.paused = False
        self.closing = False
        self.closed = False

    def write(self, frame: bytes, acks: list[tuple[Conn, int, str]]) -> None:
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
                self.server.main_gone()
                return
            self.sent += written
            if written == len(frame):
                if acks:
                    self.server.release(acks)
                return
            self.buf += memoryview(frame)[written:]
            self.server.loop.add_writer(self.fd, self._drain)
        if acks:
            self.held.append((self.sent + len(self.buf), acks))
        if not self.paused and len(self.buf) > PIPE_HIGH_WATER:
            self.paused = True
            self.server.main_backlogged(True)

    def _drain(self) -> None:
        try:
            written = os.write(self.fd, self.buf)
        except BlockingIOError:
            return
        except OSError:
            self.server.main_gone()
            return
        del self.buf[:written]
        self.sent += written
        held = self.held
        while held and held[0][0] <= self.sent:
            self.server.release(held.popleft()[1])
        if self.paused and len(self.buf) <= PIPE_HIGH_WATER // 4:
            self.paused = False
            self.server.main_backlogged(False)
        if not self.buf:
            self.server.loop.remove_writer(self.fd)
            if self.closing:
                self.server.main_gone()

    def close(self) -> None:
        """Close once everything buffered is written; then the process may end."""
        self.closing = True
        if not self.buf:
            self.server.main_gone()

    def close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.loop.remove_writer(self.fd)
            os.close(self.fd)


class _FromMain:
    """The pipe from the main process: reply batches and control objects."""

    def __init__(self, server: Server, fd: int) -> None:
        os.set_blocking(fd, False)
        self.server = server
        self.fd = fd
        self.frames = FrameReader()
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.closed = False
        server.loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            n = os.readv(self.fd, [self.buf])
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if not n:  # end-of-file: the main process has gone
            self.server.main_gone()
            return
        server = self.server
        for obj in self.frames.feed(self.view[:n].tobytes()):
            if type(obj) is list:
                server.deliver(obj)
            else:
                server.control(obj)

    def close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.loop.remove_reader(self.fd)
            os.close(self.fd)


class Conn(asyncio.BufferedProtocol):
    """One client connection.

    Messages are numbered as they arrive (``seq_in``); replies are written in that order
    (``seq_out`` is the next one due; replies that come early wait in ``early``).
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.framer = proto.Framer()
        self.authed = server.settings.token is None
        self.seq_in = 0
        self.seq_out = 0
        self.early: dict[int, bytes] = {}
        self.out: list[bytes] = []
        self.state = _OPEN
        self.write_paused = False
        self.reading = True
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        server = self.server
        server.conns.add(self)
        server.connections_total += 1
        self.last_active = self.loop.time()
        self.timer = self.loop.call_at(
            self.last_active + server.settings.idle_timeout, self._check_idle
        )
        if server.state is _STOPPING:
            self.finish()
        else:
            self.update_reading()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server.read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.state is not _OPEN:
            return
        frames = self.framer.feed(data)
        if frames:
            self.last_active = self.loop.time()
            handle = self._handle
            for frame in frames:
                if frame:
                    handle(frame)
                    if self.state is not _OPEN:
                        break
        if self.state is _OPEN and self.framer.pending > self.server.max_bytes:
            self._too_large(self.seq_in, self.framer.pending)
        self.server.flush_outbox()
        self.flush()
        if self.reading and self.seq_in - self.seq_out > MAX_OWED:
            self.update_reading()

    def eof_received(self) -> bool:
        # The client is done sending (``nc -N``, shutdown(SHUT_WR)); a message left
        # unended counts as its last one. Keep the socket open to write the replies.
        rest = self.framer.finish()
        if self.state is _OPEN and rest and not proto.is_blank(rest):
            self._handle(rest)
            self.server.flush_outbox()
        self.finish()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _LOST
        self.early.clear()
        self.out.clear()
        if self.timer is not None:
            self.timer.cancel()
        self.server.conn_closed(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.update_reading()

    # -- messages --------------------------------------------------------------------

    def _handle(self, frame: bytes) -> None:
        server = self.server
        seq = self.seq_in
        if len(frame) > server.max_bytes:
            self._too_large(seq, len(frame))
            return
        try:
            msg = proto.parse(frame)
        except proto.ProtocolError as exc:
            if proto.is_blank(frame):
                return
            self.seq_in = seq + 1
            server.messages += 1
            self._error(seq, exc.code, exc.message)
            return
        self.seq_in = seq + 1
        server.messages += 1
        if type(msg) is proto.Fire:
            if not self.authed:
                self._error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
            elif server.state is not _ACCEPTING:
                self._error(seq, proto.SHUTTING_DOWN, "the dispatcher is stopping")
            else:
                server.fire(self, seq, msg)
            return
        assert type(msg) is proto.Op
        self._op(seq, msg)

    def _op(self, seq: int, msg: proto.Op) -> None:
        server = self.server
        op = msg.op
        if op == "auth":
            token = server.settings.token
            if token is None or compare_digest(msg.arg.encode(), token.encode()):  # type: ignore[union-attr]
                self.authed = True
                self.put(seq, proto.OK_LINE)
            else:
                self._error(seq, proto.UNAUTHORIZED, "wrong token")
        elif not self.authed:
            self._error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
        elif op == "ping":
            self.put(seq, proto.OK_LINE)
        elif server.state is _STOPPING:
            if op == "terminate":
                self.put(seq, proto.OK_LINE)
            else:
                self._error(seq, proto.SHUTTING_DOWN, "the server is stopping")
        elif op == "task_status":
            server.forward(self, seq, (STATUS, msg.arg))
        elif op == "stats":
            server.forward(self, seq, (STATS,))
        elif op == "terminate":
            server.forward(self, seq, (TERMINATE,))
        else:  # pragma: no cover - parse() admits only the ops above
            self._error(seq, proto.UNKNOWN_OP, f"op {op!r} is not served")

    def _error(self, seq: int, code: str, message: str) -> None:
        self.server.errors[code] += 1
        self.put(seq, proto.error_line(code, message))

    def _too_large(self, seq: int, size: int) -> None:
        """Reply ``too_large`` after the replies already due, then close."""
        self.seq_in = seq + 1
        self._error(
            seq,
            proto.TOO_LARGE,
            f"message of {size} bytes or more exceeds max_message_bytes "
            f"({self.server.max_bytes}); closing the connection",
        )
        self.finish()

    # -- replies ---------------------------------------------------------------------

    def put(self, seq: int, line: bytes) -> bool:
        """Queue the reply to message ``seq``; True if it (and maybe more) can be written."""
        if seq != self.seq_out:
            self.early[seq] = line
            return False
        self.out.append(line)
        seq += 1
        early = self.early
        while early and seq in early:
            self.out.append(early.pop(seq))
            seq += 1
        self.seq_out = seq
        if not self.reading:
            self.update_reading()
        return True

    def flush(self) -> None:
        """Write the replies that are due; close if finishing and nothing is owed."""
        transport = self.transport
        if transport is None or self.state is _LOST:
            return
        if self.out:
            transport.write(b"".join(self.out))
            self.out.clear()
            self.last_active = self.loop.time()
        if self.state is _FINISHING and self.seq_out == self.seq_in:
            transport.close()

    def finish(self) -> None:
        """Read no more; close once every message read so far has its reply."""
        if self.state is _OPEN:
            self.state = _FINISHING
        self.update_reading()
        self.flush()

    def abort(self) -> None:
        if self.transport is not None and self.state is not _LOST:
            self.transport.abort()

    def update_reading(self) -> None:
        """Read from the client unless it is finishing, is owed too many replies, or a
        buffer toward it or main is full."""
        transport = self.transport
        if transport is None or self.state is _LOST:
            return
        want = not (
            self.state is not _OPEN
            or self.write_paused
            or self.server.main_paused
            or self.seq_in - self.seq_out > MAX_OWED
        )
        if want != self.reading:
            self.reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _check_idle(self) -> None:
        """Close a connection that completed no message for ``idle_timeout`` and is owed nothing.

        A message trickling in byte by byte does not count as activity (slowloris).
        """
        if self.state is _LOST:
            return
        idle = self.server.settings.idle_timeout
        now = self.loop.time()
        if self.seq_out != self.seq_in:  # a reply is still coming: not idle
            self.timer = self.loop.call_at(now + idle, self._check_idle)
            return
        deadline = self.last_active + idle
        if now >= deadline:
            self.server.errors["idle_timeout"] += 1
            if self.transport is not None:
                self.transport.close()
            return
        self.timer = self.loop.call_at(deadline, self._check_idle)


if __name__ == "__main__":
    main(sys.argv[1:])
