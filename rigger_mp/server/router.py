"""The server process's router: the state its connections share, and where each message goes.

::

    Connection / HttpCall ── fire, ask_* ──▶ Server.outbox ── flush_outbox ──▶ PipeWriter
      (ReplyTarget)                              (one batch per read)            (requests pipe)
          ▲                                                                           │
          └── put, flush ◀── release (acks, once a batch is in the pipe) ◀────────────┘
          └── put, answered ◀── deliver (replies, by rid) ◀── PipeReader (reply pipe)

A fire is accepted here: it gets its tid from this process's counter, and its ``ok`` is
written once its frame is wholly in the requests pipe (with a journal: once committed,
then in the pipe; :mod:`.journaling`). Other requests are forwarded with a request id
(rid); the main process's reply comes back with it and goes to the target that asked.
The router also bounds what waits: above ``PIPE_HIGH_WATER`` bytes toward the main
process (:mod:`.channel`), or ``max_buffered_replies_bytes`` toward all clients, no
connection is read. Its life is one :class:`ServerPhase`, moved along :data:`SERVER_MOVES`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import resource
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from .. import printable
from .. import protocol as proto
from ..lifecycle import move
from .channel import READ_SIZE, pack
from .dedup import DedupWindow
from .pipe_messages import (
    NO_REPLY,
    Fence,
    FencePassed,
    Fires,
    InfoRequest,
    Ready,
    Replies,
    Request,
    ServerSettings,
    StatsReply,
    StatsRequest,
    StatusRequest,
    Stop,
    TerminateRequest,
)
from .stats_snapshot import StatsSnapshot, stats_line
from .throttle import Throttled

if TYPE_CHECKING:
    from .channel import PipeReader, PipeWriter
    from .journaling import ServerJournal
    from .reply_target import Ack, ReplyTarget
    from .uploads import Uploads

logger = printable.logger("rigger_mp.server")


def default_max_connections() -> int:
    """``max_connections`` when the config says null: well below this process's fd limit,
    so that accepting never runs into it (the rest is for pipes and ``busy`` replies)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(1, min(1024, soft // 2))


class ServerPhase(enum.Enum):
    """Where the server process is in its life: ACCEPTING, then REFUSING once a quiescing
    fence came (or from the start, for a process started while the dispatcher stops),
    then STOPPING once :class:`~.pipe_messages.Stop` came."""

    ACCEPTING = "accepting"
    """Fires are accepted (acked, forwarded)."""
    REFUSING = "refusing"
    """Fires get ``shutting_down``; every other request is served."""
    STOPPING = "stopping"
    """No new connections or requests; each connection closes once answered."""


_ACCEPTING: Final = ServerPhase.ACCEPTING
_REFUSING: Final = ServerPhase.REFUSING
_STOPPING: Final = ServerPhase.STOPPING
SERVER_MOVES: Final = {
    _ACCEPTING: {_REFUSING, _STOPPING},
    _REFUSING: {_STOPPING},
    _STOPPING: set(),
}
"""The legal moves of a :class:`ServerPhase`."""


class Client(Protocol):
    """What the router uses of a TCP connection (:class:`~.connection.Connection`)
    besides its replies (it is a :class:`~.reply_target.ReplyTarget` too)."""

    rids: set[int]
    buffered: int
    """Reply bytes its transport held when last sampled (kept by :meth:`Server.account`)."""

    def put(self, seq: int, line: bytes) -> bool: ...
    def flush(self) -> None: ...
    def answered(self, now: float) -> None: ...
    def error(self, seq: int, code: str, message: str) -> None: ...
    @property
    def lost(self) -> bool: ...
    def write_buffer_size(self) -> int: ...
    def report_drain(self, on: bool) -> None: ...
    def update_reading(self) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class Listener(Protocol):
    """What the router uses of the listening socket (:class:`~.acceptor.Acceptor`)."""

    pauses: int

    def opened(self) -> None: ...
    def fd_freed(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


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
        self.conns: set[Client] = set()
        self.pending: dict[int, tuple[ReplyTarget, int]] = {}
        self.next_rid = 0
        self.fires = 0
        self.outbox: list[Request] = []
        self.run: Fires | None = None
        """The :class:`Fires` at the end of the outbox, which the next fire joins."""
        self.acks: list[Ack] = []
        self.state = _ACCEPTING if settings.accepting else _REFUSING
        self.main_paused = False
        self.backlog_listeners: list[Callable[[bool], None]] = []
        self.taps: dict[str, Callable[[dict[str, Any]], None]] = {}
        """Called with an accepted fire's data, by its event name (the live view's feed)."""
        """Told each change of :attr:`main_paused` (the HTTP front, which reads no socket
        the router knows)."""
        self.buffered = 0
        """Reply bytes in the clients' transports (as last sampled; see :meth:`account`)."""
        self.replies_paused = False
        """Above ``max_buffered_replies_bytes``: no connection is read."""
        self.replies_pauses = 0
        self.replies_dropped = 0
        self.finished: asyncio.Future[None] = loop.create_future()
        self.to_main: PipeWriter | None = None
        self.from_main: PipeReader | None = None
        # Every connection reads into this one buffer (the loop runs one callback at a
        # time); see READ_SIZE in rigger_mp.server.channel for why it is preallocated.
        self.read_buffer = bytearray(READ_SIZE)
        self.read_view = memoryview(self.read_buffer)
        self.listener: Listener | None = None
        self.connections_total = 0
        self.messages = 0
        self.errors: Counter[str] = Counter()
        # With a journal, fires are committed before they go into the pipe (.journaling);
        # imported only then: a server process without one never loads sqlite3.
        self.journal: ServerJournal | None = None
        # A tid names one event: with a journal, for the file's life (its boot number first).
        self.tid_prefix = settings.tid_prefix
        self.dedup = DedupWindow(settings.dedup_window)  # a resent fire gets its first tid
        if settings.journal is not None:
            from .journaling import ServerJournal

            self.journal = ServerJournal.open(self, settings)
            self.tid_prefix = self.journal.store.tid_prefix + settings.tid_prefix
            self.dedup.load(self.journal.recent_ids())
        self.upload_side: Uploads | None = None
        self.stats = StatsSnapshot(loop.time, lambda: self._request(StatsRequest()))
        """The dispatcher's stats, asked of the main process at most once per ``MAX_AGE``."""
        self.faults = Throttled(
            logging.ERROR, "rigger_mp server: handling a message failed; it got an error reply"
        )

    def attach(self, to_main: PipeWriter, from_main: PipeReader, listener: Listener) -> None:
        """The pipes are connected and the socket listens: tell the main process."""
        self.to_main, self.from_main, self.listener = to_main, from_main, listener
        to_main.write(pack(Ready(os.getpid())), [])

    def uploads(self) -> Uploads:
        """The uploads of ``attach`` (:mod:`.uploads`, loaded with the first one)."""
        if self.upload_side is None:
            from .uploads import Uploads

            self.upload_side = Uploads(self.loop, self.settings)
        return self.upload_side

    # -- to the main process -------------------------------------------------------

    def _owe(self, target: ReplyTarget, seq: int) -> int:
        """The next rid: the main process's reply to it goes to message ``seq`` of ``target``."""
        rid = self.next_rid
        self.next_rid = rid + 1
        self.pending[rid] = (target, seq)
        target.rids.add(rid)
        return rid

    def _request(self, request: Request) -> None:
        self.run = None
        self.outbox.append(request)

    def ask_status(self, target: ReplyTarget, seq: int, tid: str) -> None:
        """Forward ``task_status`` of ``tid``; the reply goes to message ``seq`` of ``target``."""
        self._request(StatusRequest(self._owe(target, seq), tid))

    def ask_stats(self, target: ReplyTarget, seq: int) -> None:
        """Answer ``stats`` from the snapshot if it is fresh, else once the main process
        has sent new ones (asked at most once per ``MAX_AGE``: :mod:`.stats_snapshot`)."""
        reply = self.stats.want(target, seq)
        if reply is not None:
            target.put(seq, stats_line(reply, self.counters()))

    def ask_info(self, target: ReplyTarget, seq: int) -> None:
        """Forward ``info``; the reply goes to message ``seq`` of ``target``."""
        self._request(InfoRequest(self._owe(target, seq)))

    def ask_terminate(self, target: ReplyTarget, seq: int) -> None:
        """Forward ``terminate``; the reply (once drained) goes to message ``seq``."""
        self._request(TerminateRequest(self._owe(target, seq)))

    def op(self, target: ReplyTarget, seq: int, msg: proto.Op) -> None:
        """Serve an op other than ``auth`` (of an authenticated client): answer ``ping``
        here, forward the others."""
        op = msg.op
        if op == "ping":
            target.put(seq, proto.OK_LINE)
        elif self.state is _STOPPING:
            if op == "terminate":
                target.put(seq, proto.OK_LINE)
            else:
                target.error(seq, proto.SHUTTING_DOWN, "the server is stopping")
        elif op == "task_status":
            assert msg.arg is not None
            self.ask_status(target, seq, msg.arg)
        elif op == "stats":
            self.ask_stats(target, seq)
        elif op == "info":
            self.ask_info(target, seq)
        elif op == "terminate":
            self.ask_terminate(target, seq)
        else:  # pragma: no cover - parse() admits only the ops above
            target.error(seq, proto.UNKNOWN_OP, f"op {op!r} is not served")

    def fire(self, conn: ReplyTarget, seq: int, msg: proto.Fire, line: bytes) -> None:
        """Accept a fire (parsed from ``line``): give it a tid; a plain fire is acked once
        its batch is in the pipe (with a journal: once committed, then in the pipe). One
        whose ``id`` is in the window is not run: it gets the first tid, acked in turn."""
        n = self.fires + 1
        tid = self.tid_prefix + str(n)
        fire_id = msg.fire_id
        if fire_id is not None and (first := self.dedup.claim(fire_id, tid)) is not None:
            self.acks.append((conn, seq, first, True))  # never before the first one's ack
            return
        self.fires = n
        if self.journal is not None:
            self.journal.add(tid, msg.hook_name, line, fire_id)
        if msg.mode == proto.ACK:
            rid = NO_REPLY
            self.acks.append((conn, seq, tid, False))
        else:
            rid = self._owe(conn, seq)
        run = self.run
        if run is None:
            run = self.run = Fires([], [], [], [], [])
            self.outbox.append(run)
        run.rids.append(rid)
        run.hook_names.append(msg.hook_name)
        run.data.append(msg.data)
        run.modes.append(msg.mode)
        run.tids.append(tid)
        if (tap := self.taps.get(msg.hook_name)) is not None:
            tap(msg.data)

    def flush_outbox(self) -> None:
        """Send what one read of a connection produced, as one batch, at once.

        Not deferred to the end of the loop turn: that costs another turn on every round
        trip. Under load the main process reads many batches at a time and answers them
        with one write, so batching happens there.
        """
        if not self.outbox and not self.acks:  # acks alone: duplicates
            return
        batch, self.outbox = self.outbox, []
        acks, self.acks = self.acks, []
        self.run = None
        if self.journal is not None:
            self.journal.send(batch, acks)
        else:
            self.send_batch(batch, acks)

    def send_batch(self, batch: list[Request], acks: list[Ack]) -> None:
        """Write ``batch`` into the pipe as one frame (item by item if it does not pickle)."""
        if self.to_main is None:
            return
        if not batch:  # duplicates only: acked behind what is in the pipe already
            self.to_main.release_after(acks)
            return
        try:
            frame = pack(batch)
        except Exception:  # one item cannot be pickled (nested too deeply...)
            _send_one_by_one(self, batch, acks)
            return
        self.to_main.write(frame, acks)

    def release(self, acks: list[Ack]) -> None:
        """Write the ``ok`` of fires whose batch is now wholly in the requests pipe."""
        touched: set[ReplyTarget] = set()
        ack_line = proto.ack_line
        for conn, seq, tid, duplicate in acks:
            line = proto.duplicate_line(tid) if duplicate else ack_line(tid)
            if conn.put(seq, line):
                touched.add(conn)
        for conn in touched:
            conn.flush()

    def reply_all(self, replies: list[tuple[ReplyTarget, int, bytes]]) -> None:
        """Write these replies to their connections (those still open)."""
        touched: set[ReplyTarget] = set()
        for conn, seq, line in replies:
            if conn.put(seq, line):
                touched.add(conn)
        for conn in touched:
            conn.flush()

    def fence(self, n: int, quiesce: bool) -> None:
        """Answer fence request ``n`` behind every fire acked so far; maybe stop accepting."""
        if quiesce and self.state is _ACCEPTING:
            self.state = move(SERVER_MOVES, _ACCEPTING, _REFUSING)
        self.flush_outbox()
        if self.journal is not None:
            self.journal.send_frame(pack(FencePassed(n)))
        elif self.to_main is not None:
            self.to_main.write(pack(FencePassed(n)), [])

    def main_backlogged(self, paused: bool) -> None:
        """The pipe to the main process is full (or drained): stop (resume) reading clients."""
        self.main_paused = paused
        for conn in self.conns:
            conn.update_reading()
        for listener in self.backlog_listeners:
            listener(paused)

    # -- reply bytes buffered toward the clients --------------------------------------

    def account(self, conn: Client, size: int) -> None:
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
            conn.buffered = conn.write_buffer_size()
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

    def deliver(self, replies: Replies) -> None:
        """Route the main process's replies to their targets, in order."""
        pending = self.pending
        touched: list[ReplyTarget] = []
        for rid, line in zip(replies.rids, replies.lines, strict=True):
            entry = pending.pop(rid, None)
            if entry is None:  # its target was lost meanwhile
                continue
            conn, seq = entry
            conn.rids.discard(rid)
            if conn.put(seq, line):
                touched.append(conn)
        self._answered(touched)

    def _answered(self, touched: list[ReplyTarget]) -> None:
        """Replies from the main process were put to ``touched``: write them."""
        if touched:
            now = self.loop.time()
            for conn in touched:
                conn.answered(now)
        if self.state is _STOPPING:
            self._check_finished()

    def counters(self) -> dict[str, Any]:
        """This process's own counters: ``server.process`` in the stats."""
        counters = {
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
            "stats_asked": self.stats.asked,
            "stats_waiting": len(self.stats.waiting),
            "duplicates": self.dedup.duplicates,
            "dedup_ids": len(self.dedup),
        }
        if self.journal is not None:
            counters["journal"] = self.journal.stats()
        if self.upload_side is not None:
            counters["uploads"] = self.upload_side.counters()
        return counters

    def _stats_arrived(self, reply: StatsReply) -> list[ReplyTarget]:
        """Answer every ``stats`` request that waited for ``reply``; those to flush."""
        waiting = self.stats.arrived(reply)
        if not waiting:
            return []
        line = stats_line(reply, self.counters())
        return [target for target, seq in waiting if target.put(seq, line)]

    def receive(self, obj: object) -> None:
        """A message from the main process other than replies: the stats asked, a
        :class:`Fence` or :class:`Stop`."""
        if type(obj) is StatsReply:
            self._answered(self._stats_arrived(obj))
        elif type(obj) is Fence:
            self.fence(obj.n, obj.quiesce)
        elif type(obj) is Stop:
            self.stop()
        else:
            logger.error("rigger_mp server: unknown message %r ignored", obj)

    # -- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, answer what is in flight, close each connection once answered."""
        if self.state is _STOPPING:
            return
        self.state = move(SERVER_MOVES, self.state, _STOPPING)
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.conns):
            conn.finish()
        self.loop.call_later(self.settings.stop_grace, self._abort_all)
        self._check_finished()

    def conn_closed(self, conn: Client) -> None:
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
        if not self.pending and not self.stats.waiting and not self.conns:
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
        self.stats.waiting.clear()
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


def _send_one_by_one(server: Server, batch: list[Request], acks: list[Ack]) -> None:
    """A batch did not pickle: send its requests one by one (each fire alone); those
    that fail get an error reply, the others go on as usual (``acks`` are in the order
    of the acked fires)."""
    assert server.to_main is not None
    owed = iter([ack for ack in acks if not ack[3]])
    touched: set[ReplyTarget] = set()
    for item in _one_by_one(batch):
        if isinstance(item, StatsRequest):  # no data: it always pickles
            server.to_main.write(pack([item]), [])
            continue
        rid = item.rids[0] if isinstance(item, Fires) else item.rid
        ack = next(owed) if rid == NO_REPLY else None
        try:
            frame = pack([item])
        except Exception as exc:
            if ack is not None:
                conn, seq = ack[0], ack[1]
            else:
                entry = server.pending.pop(rid, None)
                if entry is None:
                    continue
                conn, seq = entry
                conn.rids.discard(rid)
            if isinstance(exc, RecursionError):
                code, why = proto.BAD_REQUEST, "the message nests too deeply to forward"
            else:
                server.faults(exc_info=exc)
                code, why = proto.INTERNAL, f"cannot forward it: {type(exc).__name__}: {exc}"
            if not conn.lost:
                conn.error(seq, code, why)
                touched.add(conn)
            continue
        server.to_main.write(frame, [] if ack is None else [ack])
    server.to_main.release_after([ack for ack in acks if ack[3]])
    for conn in touched:
        conn.flush()


def _one_by_one(batch: list[Request]) -> list[Request]:
    """``batch`` with each run of fires cut into runs of one fire."""
    out: list[Request] = []
    for item in batch:
        if type(item) is not Fires:
            out.append(item)
            continue
        seqs = item.seqs
        for i, tid in enumerate(item.tids):
            out.append(
                Fires(
                    [item.rids[i]],
                    [item.hook_names[i]],
                    [item.data[i]],
                    [item.modes[i]],
                    [tid],
                    None if seqs is None else [seqs[i]],
                )
            )
    return out
