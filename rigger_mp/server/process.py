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
import errno
import logging
import os
import pickle
import resource
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from hmac import compare_digest
from typing import TYPE_CHECKING, Any, Final

from .. import printable
from .. import protocol as proto
from .channel import READ_SIZE, FrameReader, pack
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

if TYPE_CHECKING:
    from .journaling import ServerJournal

logger = printable.logger("rigger_mp.server")

PIPE_HIGH_WATER: Final = 4 * 1024 * 1024
"""Bytes waiting for the main process above which no client is read."""
MAX_OWED: Final = 10_000
"""Replies one connection may be owed before the server stops reading from it: a reply
held back (a slow ``grab_result``) keeps every later one waiting in memory."""
WRITE_HIGH_WATER: Final = 256 * 1024
"""A client's unread replies above this: stop reading its messages until it catches up."""
LOG_EVERY: Final = 10.0
"""Seconds between two log records of one kind that an attacker can cause (accept
failures, faults while handling a message): the next one counts those skipped."""
ACCEPT_PER_TURN: Final = 64
"""Connections accepted per loop turn. Few enough that clients which connect and leave at
once are noticed gone (a few turns later) before ``max_connections`` counts them all."""
ACCEPT_RETRY: Final = 1.0
"""Out of file descriptors with no connection of ours open to free one: retry after this."""
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def default_max_connections() -> int:
    """``max_connections`` when the config says null: well below this process's fd limit,
    so that accepting never runs into it (the rest is for pipes and ``busy`` replies)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(1, min(1024, soft // 2))


class Throttled:
    """One logger call that logs at most once per :data:`LOG_EVERY` seconds, counting the
    rest: what a client can make happen over and over must not flood the log."""

    def __init__(self, level: int, message: str) -> None:
        self.level = level
        self.message = message
        self.next = 0.0
        self.skipped = 0
        self.total = 0

    def __call__(self, *args: object, exc_info: BaseException | None = None) -> None:
        self.total += 1
        now = time.monotonic()
        if now < self.next:
            self.skipped += 1
            return
        self.next = now + LOG_EVERY
        message = self.message
        if self.skipped:
            message += f" ({self.skipped} more like it in the last {LOG_EVERY:.0f} s)"
            self.skipped = 0
        logger.log(self.level, message, *args, exc_info=exc_info)


def main(argv: list[str], on_start: Callable[[Server], None] | None = None) -> None:
    """Run the server process: ``argv`` holds the socket, request and reply pipe fds.

    The first object on the reply pipe is the :class:`ServerSettings` (the token is
    never on the command line, where ``ps`` would show it). ``on_start`` gets the
    :class:`Server` before it runs (the HTTP front starts there: :mod:`.http`).
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
        if on_start is not None:
            on_start(server)
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
        self.max_depth = settings.max_json_depth
        self.max_hook_name = settings.max_hook_name_length
        self.per_turn = settings.max_messages_per_turn
        self.max_connections = settings.max_connections or default_max_connections()
        self.max_buffered = settings.max_buffered_replies_bytes
        self.token = (
            None if settings.token is None else settings.token.encode("utf-8", "surrogatepass")
        )
        self.conns: set[Conn] = set()
        self.pending: dict[int, tuple[Conn, int]] = {}
        self.next_rid = 0
        self.fires = 0
        self.outbox: list[tuple[Any, ...]] = []
        self.acks: list[tuple[Conn, int, str]] = []
        self.state = _ACCEPTING if settings.accepting else ServerState.REFUSING
        self.main_paused = False
        self.backlog_listeners: list[Callable[[bool], None]] = []
        """Told each change of :attr:`main_paused` (the HTTP front, which reads no Conn)."""
        self.buffered = 0
        """Reply bytes in the clients' transports (as last sampled; see :meth:`account`)."""
        self.replies_paused = False
        """Above ``max_buffered_replies_bytes``: no connection is read."""
        self.replies_pauses = 0
        self.replies_dropped = 0
        self.finished: asyncio.Future[None] = loop.create_future()
        self.to_main: _ToMain | None = None
        self.from_main: _FromMain | None = None
        # Every connection reads into this one buffer (the loop runs one callback at a
        # time); see READ_SIZE in rigger_mp.server.channel for why it is preallocated.
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.listener: _Acceptor | None = None
        self.connections_total = 0
        self.messages = 0
        self.errors: Counter[str] = Counter()
        # With a journal, fires are committed before they go into the pipe (.journaling);
        # imported only then: a server process without one never loads sqlite3.
        self.journal: ServerJournal | None = None
        # A tid names one event: with a journal, for the file's life (its boot number first).
        self.tid_prefix = settings.tid_prefix
        if settings.journal is not None:
            from .journaling import ServerJournal

            self.journal = ServerJournal.open(self, settings)
            self.tid_prefix = self.journal.store.tid_prefix + settings.tid_prefix
        self.faults = Throttled(
            logging.ERROR, "rigger_mp server: handling a message failed; it got an error reply"
        )

    async def run(self, sock: socket.socket, requests_fd: int, replies_fd: int) -> None:
        """Connect the pipes, start listening, tell the main process, serve until told."""
        self.to_main = _ToMain(self, requests_fd)
        self.from_main = _FromMain(self, replies_fd)
        self.listener = _Acceptor(self, sock)
        self.to_main.write(pack((READY, os.getpid())), [])
        await self.finished

    # -- to the main process -------------------------------------------------------

    def forward(self, conn: Conn, seq: int, item: tuple[Any, ...]) -> None:
        """Send ``item`` to the main process with the next rid; its reply goes to ``conn``."""
        rid = self.next_rid
        self.next_rid = rid + 1
        self.pending[rid] = (conn, seq)
        conn.rids.add(rid)
        self.outbox.append((rid, *item))

    def fire(self, conn: Conn, seq: int, msg: proto.Fire, line: bytes) -> None:
        """Accept a fire (parsed from ``line``): give it a tid; a plain fire is acked once
        its batch is in the pipe (with a journal: once committed, then in the pipe)."""
        self.fires = n = self.fires + 1
        tid = self.tid_prefix + str(n)
        if self.journal is not None:
            self.journal.add(tid, msg.hook_name, line)
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
        else:
            self.send_batch(batch, acks)

    def send_batch(self, batch: list[tuple[Any, ...]], acks: list[tuple[Conn, int, str]]) -> None:
        """Write ``batch`` into the pipe as one frame (item by item if it does not pickle)."""
        if self.to_main is None:
            return
        try:
            frame = pack(batch)
        except Exception:  # one item cannot be pickled (nested too deeply...)
            self._send_one_by_one(batch, acks)
            return
        self.to_main.write(frame, acks)

    def _send_one_by_one(
        self, batch: list[tuple[Any, ...]], acks: list[tuple[Conn, int, str]]
    ) -> None:
        """A batch did not pickle: send its items one by one; those that fail get an error
        reply, the others go on as usual (``acks`` are in the order of the acked fires)."""
        assert self.to_main is not None
        owed = iter(acks)
        touched: set[Conn] = set()
        for item in batch:
            rid = item[0]
            ack = next(owed) if rid == NO_REPLY else None
            try:
                frame = pack([item])
            except Exception as exc:
                if ack is not None:
                    conn, seq = ack[0], ack[1]
                else:
                    entry = self.pending.pop(rid, None)
                    if entry is None:
                        continue
                    conn, seq = entry
                    conn.rids.discard(rid)
                if isinstance(exc, RecursionError):
                    code, why = proto.BAD_REQUEST, "the message nests too deeply to forward"
                else:
                    self.faults(exc_info=exc)
                    code, why = proto.INTERNAL, f"cannot forward it: {type(exc).__name__}: {exc}"
                if conn.state is not _LOST:
                    conn.error(seq, code, why)
                    touched.add(conn)
                continue
            self.to_main.write(frame, [] if ack is None else [ack])
        for conn in touched:
            conn.flush()


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
        for listener in self.backlog_listeners:
            listener(paused)

    # -- reply bytes buffered toward the clients --------------------------------------

    def account(self, conn: Conn, size: int) -> None:
        """``conn``'s transport holds ``size`` reply bytes now; bound the total.

        A sample only shrinks unseen (the client reads), so the total is an upper bound:
        crossing ``max_buffered_replies_bytes`` first samples every connection afresh.
        While paused, each connection with bytes left reports its drain (its high-water
        mark is 0: ``resume_writing`` comes when it is empty); below half the bound, every
        connection is read again.
        """
        self.buffered += size - conn.buffered
        conn.buffered = size
        if self.replies_paused:
            if self.buffered <= self.max_buffered // 2:
                self._replies_drained()
            elif size:
                conn.report_drain(True)
        elif self.buffered > self.max_buffered:
            self._replies_full()

    def _replies_full(self) -> None:
        total = 0
        for conn in self.conns:
            transport = conn.transport
            conn.buffered = 0 if transport is None else transport.get_write_buffer_size()
            total += conn.buffered
        self.buffered = total
        if self.buffered <= self.max_buffered:
            return
        self.replies_paused = True
        self.replies_pauses += 1
        logger.warning(
            "rigger_mp server: %d bytes of replies wait for their clients "
            "(max_buffered_replies_bytes %d): reading no connection until they drain",
            self.buffered,
            self.max_buffered,
        )
        for conn in list(self.conns):
            if conn.buffered:
                conn.report_drain(True)
            conn.update_reading()

    def _replies_drained(self) -> None:
        self.replies_paused = False
        for conn in list(self.conns):
            conn.report_drain(False)
            conn.update_reading()

    # -- from the main process -----------------------------------------------------

    def deliver(self, batch: list[tuple[int, int, Any]]) -> None:
        """Route the main process's replies to their connections, in order."""
        pending = self.pending
        touched: list[Conn] = []
        for rid, kind, payload in batch:
            entry = pending.pop(rid, None)
            if entry is None:  # its connection was lost meanwhile
                continue
            conn, seq = entry
            conn.rids.discard(rid)
            line = payload if kind == R_LINE else self._stats_line(payload)
            if conn.put(seq, line):
                touched.append(conn)
        if touched:
            now = self.loop.time()
            for conn in touched:
                conn.last_active = now  # the idle clock starts again once the reply is out
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
                "replies_dropped": self.replies_dropped,
                "buffered_replies_bytes": self.buffered,
                "replies_pauses": self.replies_pauses,
                "max_connections": self.max_connections,
                "accept_pauses": 0 if self.listener is None else self.listener.pauses,
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
        """``conn`` has closed: forget it and the replies it was owed; a stop may now be
        finished; an fd is free for the next connection."""
        self.conns.discard(conn)
        if conn.rids:
            pending = self.pending
            for rid in conn.rids:
                pending.pop(rid, None)
            self.replies_dropped += len(conn.rids)
            conn.rids.clear()
        if conn.buffered:
            self.account(conn, 0)
        if self.listener is not None:
            self.listener.fd_freed()
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
            self.listener.abort()
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


class _Acceptor:
    """The listening socket, accepted by hand rather than by ``loop.create_server``.

    Past ``max_connections`` (counting those being set up) a client gets one ``busy``
    line and is closed at once. asyncio's accept loop, out of file descriptors, logs a
    traceback per accept attempt (up to its backlog, 1024) and retries each second, for
    as long as it lasts. Here,
    EMFILE (ENFILE, ENOBUFS, ENOMEM) logs one throttled warning and stops accepting until
    one of our connections closes (:meth:`fd_freed`); the clients wait in the backlog.
    """

    def __init__(self, server: Server, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.paused = False
        self.closed = False
        self.pauses = 0
        self.starting: set[asyncio.Task[None]] = set()
        self.opening = 0
        """Connections accepted and not yet made (counted toward ``max_connections``)."""
        self.retry: asyncio.TimerHandle | None = None
        self.busy_line = proto.error_line(
            proto.BUSY,
            f"the server has max_connections ({server.max_connections}) open; try again later",
        )
        self.warn = Throttled(
            logging.WARNING,
            "rigger_mp server: out of file descriptors (%s): accepting no connection until "
            "one closes",
        )
        server.loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        server = self.server
        for _ in range(ACCEPT_PER_TURN):  # the connections of clients get their turns too
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._pause(exc)
                else:
                    self.warn(exc)
                return
            if len(server.conns) + self.opening >= server.max_connections:
                self._busy(conn)
                continue
            conn.setblocking(False)
            self.opening += 1
            task = server.loop.create_task(self._serve(conn))
            self.starting.add(task)
            task.add_done_callback(self.starting.discard)

    def _busy(self, sock: socket.socket) -> None:
        """One ``busy`` line (a few bytes: the socket buffer takes them) and close at once,
        so that a refused client holds no file descriptor."""
        server = self.server
        server.errors[proto.BUSY] += 1
        try:
            sock.setblocking(False)
            sock.send(self.busy_line)
        except OSError:
            pass
        finally:
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self.server.loop.connect_accepted_socket(lambda: Conn(self.server), sock=sock)
        except OSError as exc:
            self.opened()
            sock.close()
            self.warn(exc)

    def opened(self) -> None:
        """A connection accepted is set up (or failed to be): :attr:`Server.conns` has it."""
        self.opening -= 1

    def _pause(self, exc: OSError) -> None:
        self.paused = True
        self.pauses += 1
        self.server.errors["out_of_fds"] += 1
        self.warn(os.strerror(exc.errno or 0))
        self.server.loop.remove_reader(self.fd)
        if not self.server.conns:  # nothing of ours will close to free one
            self.retry = self.server.loop.call_later(ACCEPT_RETRY, self.fd_freed)

    def fd_freed(self) -> None:
        """A connection closed (its fd is closed right after): accept again."""
        if self.paused and not self.closed:
            self.paused = False
            if self.retry is not None:
                self.retry.cancel()
                self.retry = None
            self.server.loop.add_reader(self.fd, self._ready)

    def close(self) -> None:
        """Accept no more (a stop); the main process keeps its own copy of the socket."""
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        if not self.paused:
            self.server.loop.remove_reader(self.fd)
        self.sock.close()

    def abort(self) -> None:
        """Close, and drop the connections still being set up (the process exits)."""
        self.close()
        for task in list(self.starting):
            task.cancel()


class Conn(asyncio.BufferedProtocol):
    """One client connection.

    Messages are numbered as they arrive (``seq_in``); replies are written in that order
    (``seq_out`` is the next one due; replies that come early wait in ``early``). A read
    is handled ``max_messages_per_turn`` messages at a time (the rest waits in ``frames``
    for a later loop turn, with reading paused), so one flooding client cannot starve
    the others. ``rids`` are the requests the main process owes it a reply to.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.framer = proto.Framer()
        self.authed = server.token is None
        self.seq_in = 0
        self.seq_out = 0
        self.early: dict[int, bytes] = {}
        self.out: list[bytes] = []
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
        self.auth_failures = 0
        self.buffered = 0
        self.drain_limited = False
        self.last_active = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.auth_timer: asyncio.TimerHandle | None = None
        self.drain_timer: asyncio.TimerHandle | None = None

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
        if not self.authed:
            self.auth_timer = self.loop.call_later(settings.auth_timeout, self._auth_expired)
        if server.state is _STOPPING:
            self.finish()
        else:
            if server.replies_paused:
                self.report_drain(True)
            self.update_reading()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.server.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server.read_view[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self.state is not _OPEN:
            return
        frames = self.framer.feed(data)
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
        self.state = _LOST
        self.early.clear()
        self.out.clear()
        self.frames = None
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
                if not self.authed:
                    self.error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
                elif server.state is not _ACCEPTING:
                    self.error(seq, proto.SHUTTING_DOWN, "the dispatcher is stopping")
                else:
                    server.fire(self, seq, msg, frame)
                return
            assert type(msg) is proto.Op
            self._op(seq, msg)
        except Exception as exc:  # a fault of ours: this message's reply says so
            self._fault(seq, exc)

    def _fault(self, seq: int, exc: Exception) -> None:
        """Handling message ``seq`` raised: answer it ``internal`` unless it has a reply."""
        self.server.faults(exc_info=exc)
        if seq < self.seq_out or seq in self.early:
            return
        self.error(seq, proto.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _op(self, seq: int, msg: proto.Op) -> None:
        server = self.server
        op = msg.op
        if op == "auth":
            token = server.token
            assert msg.arg is not None
            # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which plain
            # UTF-8 cannot encode; it is simply not the token.
            if token is None or compare_digest(msg.arg.encode("utf-8", "surrogatepass"), token):
                self.authed = True
                if self.auth_timer is not None:
                    self.auth_timer.cancel()
                    self.auth_timer = None
                self.put(seq, proto.OK_LINE)
            else:
                self._wrong_token(seq)
        elif not self.authed:
            self.error(seq, proto.UNAUTHORIZED, 'send {"op": "auth", ...} first')
        elif op == "ping":
            self.put(seq, proto.OK_LINE)
        elif server.state is _STOPPING:
            if op == "terminate":
                self.put(seq, proto.OK_LINE)
            else:
                self.error(seq, proto.SHUTTING_DOWN, "the server is stopping")
        elif op == "task_status":
            server.forward(self, seq, (STATUS, msg.arg))
        elif op == "stats":
            server.forward(self, seq, (STATS,))
        elif op == "terminate":
            server.forward(self, seq, (TERMINATE,))
        else:  # pragma: no cover - parse() admits only the ops above
            self.error(seq, proto.UNKNOWN_OP, f"op {op!r} is not served")

    def _wrong_token(self, seq: int) -> None:
        self.auth_failures = n = self.auth_failures + 1
        limit = self.server.settings.max_auth_failures
        if n < limit:
            self.error(seq, proto.UNAUTHORIZED, "wrong token")
            return
        self.server.errors["auth_failures_closed"] += 1
        self.error(
            seq,
            proto.UNAUTHORIZED,
            f"wrong token; {n} failed auths (max_auth_failures {limit}): closing the connection",
        )
        self.finish()

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
            size = transport.get_write_buffer_size()
            if size or self.buffered:
                self.server.account(self, size)
        if self.state is _FINISHING and self.seq_out == self.seq_in and not transport.is_closing():
            self._close()

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
        if self.state is _OPEN:
            self.state = _FINISHING
            self.frames = None
        self.update_reading()
        self.flush()

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
        """No message is to be handled now: finishing, owed too many replies, or a buffer
        toward it, toward main or toward all clients is full."""
        server = self.server
        return (
            self.state is not _OPEN
            or self.write_paused
            or server.main_paused
            or server.replies_paused
            or self.seq_in - self.seq_out > MAX_OWED
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
        want = not blocked and self.frames is None
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
        if self.seq_out != self.seq_in or self.frames is not None:  # not idle: busy
            self.timer = self.loop.call_at(now + idle, self._check_idle)
            return
        deadline = self.last_active + idle
        if now >= deadline:
            self.server.errors["idle_timeout"] += 1
            self.state = _FINISHING
            self._close()
            return
        self.timer = self.loop.call_at(deadline, self._check_idle)

    def _auth_expired(self) -> None:
        """A token is required and none was accepted within ``auth_timeout``: say so, close."""
        self.auth_timer = None
        if self.authed or self.state is _LOST or self.transport is None:
            return
        self.server.errors["auth_timeout"] += 1
        timeout = self.server.settings.auth_timeout
        self.state = _FINISHING
        self.frames = None
        if self.seq_out == self.seq_in:
            self.transport.write(
                proto.error_line(
                    proto.UNAUTHORIZED,
                    f"no valid auth within auth_timeout ({timeout:g} s); closing the connection",
                )
            )
        self.update_reading()
        self._close()


if __name__ == "__main__":
    main(sys.argv[1:])
