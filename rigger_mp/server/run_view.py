"""The live run view's HTTP routes: the runs as JSON, and their updates pushed to the
page as server-sent events.

::

    GET /runs                      {"ok": true, "runs": [head, ...]}          newest first
    GET /runs/{run_id}             {"ok": true, "run": {...}}                 the whole run
    GET /runs/{run_id}/tests       {"ok": true, "matched": N, "tests": [...]}  ?q=&outcome=
    GET /files/...                 the report and the artifacts: :mod:`.file_view`
    GET /live/stream?run={run_id}  text/event-stream:
        event: snapshot   {"seq", "runs": [head, ...], "run": the whole run or null}
        event: delta      {"seq", "runs": [head, ...], "run": what changed or null}

A run id in a path is percent-encoded (``/`` as ``%2F``). The board (:mod:`.run_board`)
calls :meth:`RunView.changed` on every test event; the first change after a quiet spell
starts a timer of :data:`INTERVAL`, and when it fires every subscriber is woken and
sent, as one event, what changed since it was last written to: so a subscriber gets at
most one event per interval however fast the tests go, and the rows it is sent are only
those that changed. The page reads the stream with ``fetch``, not
``EventSource``, which cannot send the ``Authorization`` header a token needs.

Bounds: ``live_max_subscribers`` streams at once (one more is answered 503
``too_many_subscribers``); a subscriber that does not read (more than
:data:`MAX_UNREAD` bytes in its socket's buffer, or a write that waits longer than
:data:`WRITE_TIMEOUT`) is dropped: its stream is closed, nothing is buffered for it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any, Final
from urllib.parse import unquote

from aiohttp import web

from .. import protocol as proto
from .run_board import Entry, RunBoard, head, listed, run_json

INTERVAL: Final = 0.15
"""Seconds between two updates of one subscriber, at most."""
MAX_UNREAD: Final = 256 * 1024
"""Bytes a subscriber may leave unread in its socket's send buffer before it is dropped."""
WRITE_TIMEOUT: Final = 5.0
"""Seconds one update may take to be written before its subscriber is dropped."""
_JSON: Final = "application/json"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def error(code: str, message: str, status: int) -> web.Response:
    return web.Response(body=proto.error_line(code, message), status=status, content_type=_JSON)


class Subscriber:
    """One open stream: the run it follows and the last change it was sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, run_id: str | None) -> None:
        self.loop = loop
        self.run_id = run_id
        self.seen = 0
        self.wake: asyncio.Future[None] = loop.create_future()

    async def woken(self) -> None:
        """Until poked: at once if it was poked meanwhile (while its last update was
        being written, say), so that no change is left unsent."""
        await self.wake
        self.wake = self.loop.create_future()

    def poke(self) -> None:
        if not self.wake.done():
            self.wake.set_result(None)


class RunView:
    """The routes above, over one :class:`~.run_board.RunBoard`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, board: RunBoard, max_subscribers: int
    ) -> None:
        self.loop = loop
        self.board = board
        self.max_subscribers = max_subscribers
        self.subscribers: set[Subscriber] = set()
        self.by_connection: dict[object, Subscriber] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.refused = 0
        self.dropped = 0
        self.updates = 0
        board.listeners.append(self.changed)

    def counters(self) -> dict[str, int]:
        return {
            "subscribers": len(self.subscribers),
            "refused": self.refused,
            "dropped": self.dropped,
            "updates": self.updates,
        }

    def changed(self) -> None:
        if self.timer is None and self.subscribers:
            self.timer = self.loop.call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        self.timer = None
        for subscriber in self.subscribers:
            subscriber.poke()

    def lost(self, connection: object) -> None:
        """A connection has closed: its stream, if it had one, ends now."""
        subscriber = self.by_connection.get(connection)
        if subscriber is not None:
            subscriber.poke()

    def close(self) -> None:
        """The server stops: every stream ends."""
        self.closing = True
        for subscriber in self.subscribers:
            subscriber.poke()

    # -- routes -------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """``request`` is a GET under ``/runs`` or ``/live/stream``, authorized."""
        parts = [unquote(p) for p in request.raw_path.partition("?")[0].split("/")[1:]]
        if parts == ["live", "stream"]:
            return await self._stream(request)
        board = self.board
        if parts == ["runs"]:
            entries = sorted(board.entries.values(), key=lambda e: -e.seq)
            return self._ok({"runs": [head(board, e) for e in entries]})
        if len(parts) in (2, 3) and parts[0] == "runs":
            entry = board.get(parts[1])
            if entry is None:
                return error(proto.UNKNOWN_RUN, f"no run {parts[1][:100]!r} here", 404)
            if len(parts) == 2:
                return self._ok({"run": run_json(board, entry)})
            if parts[2] == "tests":
                query = request.query
                return self._ok(listed(entry, query.get("q", "")[:200], query.get("outcome", "")))
        return error(proto.UNKNOWN_OP, f"no such endpoint: {request.path[:100]}", 404)

    @staticmethod
    def _ok(value: dict[str, Any]) -> web.Response:
        return web.Response(body=_dumps({"ok": True, **value}), content_type=_JSON)

    def _followed(self, subscriber: Subscriber) -> Entry | None:
        """The run a subscriber follows: the one it named, else the latest when it first
        had one, then that one (two runs at once must not take turns on its page)."""
        board = self.board
        if subscriber.run_id is not None:
            return board.get(subscriber.run_id)
        latest = max(board.entries.values(), key=lambda e: e.seq, default=None)
        if latest is not None:
            subscriber.run_id = latest.run.run_id
        return latest

    def _update(self, subscriber: Subscriber, kind: str) -> bytes:
        board, since = self.board, subscriber.seen
        entry = self._followed(subscriber)
        heads = [head(board, e) for e in board.changed_since(since)]
        run = None
        if entry is not None and entry.seq > since:
            run = run_json(board, entry, since)
        subscriber.seen = board.seq
        body = _dumps({"seq": board.seq, "runs": heads, "run": run})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), body)

    def _drop(self, request: web.BaseRequest) -> None:
        """Close a subscriber's connection with a reset: what the kernel holds for it
        (megabytes, unread) is freed now, not when it would have read it."""
        self.dropped += 1
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _stream(self, request: web.BaseRequest) -> web.StreamResponse:
        if len(self.subscribers) >= self.max_subscribers:
            self.refused += 1
            return error(
                proto.TOO_MANY_SUBSCRIBERS,
                f"{self.max_subscribers} live streams are open (live_max_subscribers)",
                503,
            )
        run_id = request.query.get("run") or None
        subscriber = Subscriber(self.loop, run_id)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        self.subscribers.add(subscriber)
        self.by_connection[request.protocol] = subscriber
        try:
            await response.prepare(request)
            await response.write(self._update(subscriber, "snapshot"))
            while not self.closing:
                await subscriber.woken()
                transport = request.transport
                if self.closing or transport is None or transport.is_closing():
                    break
                if transport.get_write_buffer_size() > MAX_UNREAD:
                    self._drop(request)
                    break
                if subscriber.seen == self.board.seq:
                    continue
                self.updates += 1
                update = self._update(subscriber, "delta")
                await asyncio.wait_for(response.write(update), WRITE_TIMEOUT)
        except TimeoutError:  # written into a full buffer that did not drain
            self._drop(request)
        except ConnectionError:  # the page was closed
            pass
        finally:
            self.subscribers.discard(subscriber)
            self.by_connection.pop(request.protocol, None)
        return response
