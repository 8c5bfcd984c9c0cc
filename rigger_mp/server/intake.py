"""The intake: the main process's thread that reads the server process's requests pipe.

::

    server process ── requests pipe ──▶ Intake.serve(incarnation), one read at a time:
                                          Fires ─────────▶ EventPort.accept_batch (in pipe order)
                                                           │ refused: shutting_down / lost
                                          │ then StatusWindow.settle behind them
                                          StatusRequest ─▶ StatusWindow.status_line
                                          StatsRequest ──▶ EventPort.stats
                                          InfoRequest ───▶ EventPort.info
                                          TerminateRequest ▶ a thread runs EventPort.stop
                                          FencePassed(n) ▶ Fences.passed(n)
    server process ◀── reply pipe ──────  one batch of replies per read;
                   ◀──────────────────── done-callbacks of grab_result / wait_for_task

The server process has already accepted the fires in the pipe (given tids, acked the
plain ones): the intake queues each run of them (one :class:`~.pipe_messages.Fires`)
with one :meth:`EventPort.accept_batch`
and answers the other requests with one batch per read. Above :data:`MAX_BACKLOG`
queued events it reads no more until the event thread has caught up. A batch that
raises is a bug: the server is killed, the batch's acked fires counted as ``lost``, and
the batches behind it still handled up to the end-of-file, where :meth:`Intake.serve`
returns to the supervisor (:mod:`.supervisor`), which replaces or retires the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from .. import printable
from .. import protocol as proto
from ..errors import ShuttingDown, describe_error
from .pipe_messages import (
    NO_REPLY,
    FencePassed,
    Fires,
    InfoRequest,
    Replies,
    Request,
    StatsReply,
    StatsRequest,
    StatusRequest,
    TerminateRequest,
)
from .status_window import StatusWindow

if TYPE_CHECKING:
    from ..core.port import EventPort
    from ..core.task import Task
    from .fences import Fences
    from .incarnation import Incarnation

logger = printable.logger("rigger_mp")

MAX_BACKLOG: Final = 50_000
"""Events queued and not yet run above which the intake stops reading requests until the
event thread has caught up; the server then stops reading its sockets (TCP flow control
reaches the clients), so memory stays bounded however fast clients fire."""
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
"""Default of ``max_reply_bytes``: a longer ``grab_result`` or stats reply line is
replaced by a ``reply_too_large`` error (the event itself ran)."""


class Intake:
    """Feeds the dispatcher what the server processes send, one incarnation at a time.

    ``stopping`` is set once a stop begins (quiesce or stop); :meth:`wake` must follow
    it, so that a wait for room ends and none starts. The other arguments are the config
    keys of the same names (``None``: their defaults).
    """

    def __init__(
        self,
        port: EventPort,
        fences: Fences,
        stopping: threading.Event,
        *,
        status_window: int | None = None,
        status_window_bytes: int | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.port = port
        self.fences = fences
        self.status = StatusWindow(status_window, status_window_bytes)
        self.max_reply_bytes = max_reply_bytes
        self._stopping = stopping
        self._room = threading.Event()
        self.silent: tuple[Incarnation, float] | None = None
        """While waiting on a server's pipe: that server, and since when."""
        self._serving: Incarnation | None = None  # the one being read
        self._lock = threading.Lock()
        # terminate requests waiting for the drain, by the process they came from;
        # None once stop() has answered them: later ones are answered at once.
        self._terminates: list[tuple[Incarnation | None, int]] | None = []
        self._terminator: threading.Thread | None = None
        self.accepted = 0
        self.refused = 0
        self.lost = 0
        self.pauses = 0
        self.stats_computed = 0

    def serve(self, current: Incarnation) -> None:
        """Handle the batches of one server process until its pipe reaches end-of-file.

        A pipe that cannot be read on (a bug, a frame that does not unpickle) kills the
        process rather than hang on it.
        """
        try:
            self._serve(current)
        except Exception:
            logger.exception(
                "the TCP intake cannot go on reading the server's pipe; "
                "killing the server (events it acknowledged and not yet read are lost)"
            )
            current.process.kill()

    def _serve(self, current: Incarnation) -> None:
        self._serving = current
        handle = self._handle
        writer = current.writer
        batches = current.leftover
        recv = current.reader.recv
        while True:
            # Everything one read brought, from any number of batches, is answered by
            # one write: the busier the server, the bigger the batches.
            replies = Replies([], [])
            for batch in batches:
                if type(batch) is not list:
                    if type(batch) is FencePassed:
                        self.fences.passed(batch.n)
                    continue
                try:
                    handle(batch, writer.send, replies)
                except Exception:  # a bug here must not stop the intake for good
                    self._bug(current, batch)
            if replies.rids:
                writer.send(replies)
            if self.port.backlog() > MAX_BACKLOG:
                self._wait_for_room()
            self.silent = (current, time.monotonic())
            try:
                batches = recv()
            except (EOFError, OSError):
                return
            finally:
                self.silent = None

    def wake(self) -> None:
        """End a wait for room (a stop has begun: the drain runs the events anyway)."""
        self._room.set()

    def _bug(self, current: Incarnation, batch: list[Request]) -> None:
        """Handling ``batch`` raised: log it, count its acked fires as lost, replace the server.

        The batches behind it are still handled, up to the server's end-of-file. Its
        clients lose their connections (and the replies the batch owed them).
        """
        current.process.kill()
        try:
            acked = [
                str(tid)
                for item in batch
                if type(item) is Fires
                for rid, tid in zip(item.rids, item.tids, strict=True)
                if rid == NO_REPLY
            ]
            tids = _first_tids(acked)
        except Exception:  # the batch itself is malformed: say so, count nothing
            acked, tids = [], "(unreadable batch)"
        self.lost += len(acked)
        logger.exception(
            "the TCP intake failed on a batch of %d request(s); %d acknowledged "
            "event(s) in it may not have been queued (counted as lost): tids %s; "
            "replacing the server",
            len(batch),
            len(acked),
            tids,
        )

    def _wait_for_room(self) -> None:
        """Read no more requests until the event thread has run what is queued now."""
        self.pauses += 1
        room = self._room = threading.Event()
        if self._stopping.is_set():  # a stop has begun: wake() comes after it
            return
        self.port.call_soon(room.set)  # runs once every event queued before it has
        room.wait()

    def _handle(
        self,
        batch: list[Request],
        send: Callable[[Any], None],
        replies: Replies,
    ) -> None:
        """Fire a batch of events and answer its requests into ``replies``, in order.

        Each run of fires is accepted as one :meth:`EventPort.accept_batch`. Replies that
        wait for an event are sent later with ``send``.
        """
        for item in batch:
            if isinstance(item, Fires):
                self._fire(item, send, replies)
            elif isinstance(item, StatusRequest):
                replies.add(item.rid, self.status.status_line(item.tid))
            elif isinstance(item, StatsRequest):
                send(self._stats())
            elif isinstance(item, InfoRequest):
                replies.add(item.rid, proto.reply_line({"ok": True, "info": self.port.info()}))
            elif isinstance(item, TerminateRequest):
                self._terminate(item.rid, replies)
            else:
                logger.error("the TCP intake ignored an unknown request %r", item)

    def _fire(
        self,
        fires: Fires,
        send: Callable[[Any], None],
        replies: Replies,
    ) -> None:
        """Queue a run of fires the server accepted.

        Plain fires were acked by the server already; the others are answered when
        their event has run.
        """
        try:
            specs = list(zip(fires.tids, fires.hook_names, fires.data, strict=True))
            tasks = self.port.accept_batch(specs, fires.seqs)
        except Exception as exc:
            self._refuse(fires, exc, replies)
            return
        self.status.remember(tasks)
        self.port.call_soon(partial(self.status.settle, tasks))  # runs after their events
        self.accepted += len(tasks)
        finished = self._finished
        for rid, mode, task in zip(fires.rids, fires.modes, tasks, strict=True):
            if rid != NO_REPLY:
                task.add_done_callback(partial(finished, send, rid, mode))

    def _refuse(
        self,
        fires: Fires,
        exc: Exception,
        replies: Replies,
    ) -> None:
        """The dispatcher would not queue ``fires``: tell whoever waits, log the acked ones.

        Only after a stop that gave up on the server's fence (or a bug): acked events
        that cannot run are counted as ``lost`` and named in the log.
        """
        if isinstance(exc, ShuttingDown):
            line = proto.error_line(proto.SHUTTING_DOWN, str(exc))
        else:
            logger.exception("queueing %d event(s) from TCP failed", len(fires.tids))
            line = proto.error_line(proto.INTERNAL, describe_error(exc))
        acked = [tid for rid, tid in zip(fires.rids, fires.tids, strict=True) if rid == NO_REPLY]
        for rid in fires.rids:
            if rid != NO_REPLY:
                replies.add(rid, line)
        self.refused += len(fires.tids) - len(acked)
        if acked:
            self.lost += len(acked)
            logger.error(
                "%d event(s) acknowledged over TCP could not be queued (%s): "
                "tids %s",
                len(acked),
                describe_error(exc),
                _first_tids(acked),
            )

    def _finished(self, send: Callable[[Any], None], rid: int, mode: int, task: Task) -> None:
        """Done-callback of a ``grab_result``/``wait_for_task`` event: send its reply."""
        try:
            exc = task.exception()
            if exc is not None:
                code = proto.SHUTTING_DOWN if isinstance(exc, ShuttingDown) else proto.HOOK_FAILED
                line = proto.error_line(code, describe_error(exc), task.tid)
            elif mode == proto.GRAB:
                line = proto.output_line(task.tid, task.result())
            else:
                line = proto.reply_line({"ok": True, "tid": task.tid})
        except Exception as exc:  # never let a reply go missing
            logger.exception("building the reply of tid %s failed", task.tid)
            line = proto.error_line(proto.INTERNAL, describe_error(exc), task.tid)
        if len(line) > self.max_reply_bytes:
            line = self._too_large("the event ran, but its output", len(line), task.tid)
        send(Replies([rid], [line]))

    def _stats(self) -> StatsReply:
        """Answer ``stats``: the dispatcher's, to which the server adds its own counters.

        The server process asks at most once per 100 ms, however often it is asked
        (:mod:`.stats_snapshot`); :attr:`stats_computed` counts the times.
        """
        self.stats_computed += 1
        stats = self.port.stats()
        try:
            size = len(proto.reply_line({"ok": True, "stats": stats}))
        except (TypeError, ValueError):  # the server answers not_serializable
            size = 0
        if size > self.max_reply_bytes:
            return StatsReply(None, self._too_large("the stats", size))
        return StatsReply(stats)

    def _too_large(self, what: str, size: int, tid: str | None = None) -> bytes:
        """The ``reply_too_large`` line that replaces a reply of ``size`` bytes."""
        return proto.error_line(
            proto.REPLY_TOO_LARGE,
            f"{what} is too large to send: the reply would be {size} bytes, over "
            f"max_reply_bytes ({self.max_reply_bytes})",
            tid,
        )

    def _terminate(self, rid: int, replies: Replies) -> None:
        """Start a clean stop on a thread of its own; the reply waits for the drain."""
        with self._lock:
            if self._terminates is None:  # stop() has begun
                replies.add(rid, proto.OK_LINE)
                return
            self._terminates.append((self._serving, rid))  # rids are per process
            if self._terminator is not None:
                return
            self._terminator = threading.Thread(
                target=self._run_terminate, name="rigger_mp-terminate", daemon=True
            )
        logger.warning("terminate received over TCP; stopping after the drain")
        self._terminator.start()

    def _run_terminate(self) -> None:
        try:
            self.port.stop()
        except Exception:
            logger.exception("stop() after a TCP terminate failed")

    def answer_terminates(self, current: Incarnation | None) -> None:
        """stop() has begun: answer the terminates ``current`` sent, and later ones at once.

        Those sent by an earlier process died with their connections.
        """
        with self._lock:
            waiting, self._terminates = self._terminates, None
        rids = [rid for inc, rid in waiting or () if inc is current]
        if rids and current is not None:
            current.writer.send(Replies(rids, [proto.OK_LINE] * len(rids)))

    def wait_terminated(self, timeout: float | None = None) -> None:
        """Join the thread that carried out a TCP ``terminate`` (if any)."""
        terminator = self._terminator
        if terminator is not None and terminator is not threading.current_thread():
            terminator.join(timeout)


def _first_tids(tids: list[str]) -> str:
    """The first ten of ``tids`` for a log line."""
    return ", ".join(tids[:10]) + (" ..." if len(tids) > 10 else "")
