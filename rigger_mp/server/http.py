"""The HTTP front: fire, task status, stats, Prometheus metrics and a live page, served
by aiohttp on the server process's own event loop (the ``http`` extra). The live page's
test runs come from a run board fed by the fires this process accepts (:mod:`.run_board`;
routes in :mod:`.run_view`, the artifacts in :mod:`.file_view`, metrics per run in
:mod:`.run_metrics`).

::

    client ─HTTP─▶ HttpFront._handle ─ proto.parse ─▶ Server.fire / Server.ask_*(HttpCall)
                        ▲                                   │ (the TCP path: tid, ack, pipe)
                        └──── await HttpCall.reply ◀── put(line) ◀── Server.release / deliver

An HTTP request is served by the same machinery as a TCP message: its body is parsed by
:func:`rigger_mp.protocol.parse`, and the :class:`~.router.Server` accepts the fire
(tid, ack once in the pipe) or forwards the request to the main process for an
:class:`HttpCall`, a pseudo-connection whose one reply resolves a future. So the reply
object, the error codes, the token and the bounds are the TCP protocol's; only the
framing differs: one request, one JSON reply, with an HTTP status for its error code.

The listening socket is bound by the main process (:mod:`.supervisor`) and passed as the
fourth fd, so the port survives server restarts. Bounds: a body of at most
``max_message_bytes``; a connection that waits on its client for ``idle_timeout`` (headers
or a body that never end, an idle keep-alive) is closed; ``http_max_connections`` open
at once, past which a new one closes the connection waiting longest on its client, or
gets a 503 ``too_many_connections`` if none does (:mod:`.http_stalls`); POSTs must say
``Content-Type: application/json`` (a browser's form or
``no-cors`` fetch from another site cannot, so a page cannot fire into a dispatcher on
localhost); ``Host`` and ``Origin`` are checked before routing (:mod:`.http_guard`: a page
under a host name rebound to 127.0.0.1 gets ``bad_host``); a token set means
``Authorization: Bearer <token>`` on every data endpoint.

Backpressure, as TCP has it: while the pipe to the main process holds more than
``PIPE_HIGH_WATER`` (:mod:`.channel`), a TCP connection is not read; a request that would
go to the main process (fire, tasks, stats, metrics, terminate) waits likewise, before
its body is read (aiohttp then stops reading that socket), and goes on once the pipe
has drained. A request whose connection closes while it waits is dropped unread: it was
never accepted, and there is no one to answer. So a flood of fires, patient or not,
holds the server's memory to the bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
from collections.abc import Callable
from functools import partial
from hmac import compare_digest
from importlib.resources import files
from typing import Any, Final

from aiohttp import web

from .. import printable
from .. import protocol as proto
from ..plugins.run_state import open_runs
from . import file_view, metrics, run_metrics
from .http_guard import Guard
from .http_noise import Noise
from .http_stalls import Stalls
from .process import main as process_main
from .router import Server, ServerPhase
from .run_board import RESTORE_BYTES, RunBoard
from .run_view import RunView
from .throttle import Throttled

logger = printable.logger("rigger_mp.server")

REFUSE_TIMEOUT: Final = 2.0
"""How long a connection over the limit may take to send its request before it is dropped."""
REFUSE_HEAD_BYTES: Final = 16 * 1024
"""Bytes of a refused connection's request read (for its headers) before it is dropped."""
MAX_TID: Final = 256
"""The longest tid ``GET /tasks/{tid}`` looks up (tids are much shorter)."""

STATUS_OF: Final = {
    proto.BAD_JSON: 400,
    proto.BAD_REQUEST: 400,
    proto.BAD_ID: 400,
    proto.TOO_LARGE: 413,
    proto.UNAUTHORIZED: 401,
    proto.UNKNOWN_OP: 404,
    proto.UNKNOWN_TASK: 404,
    proto.SHUTTING_DOWN: 503,
    proto.TOO_MANY_CONNECTIONS: 503,
    proto.HOOK_FAILED: 500,
    proto.NOT_SERIALIZABLE: 500,
    proto.INTERNAL: 500,
    proto.BAD_HOST: 421,
    proto.BAD_ORIGIN: 403,
    proto.QUOTA_EXCEEDED: 413,
    proto.DISK_FULL: 507,
    proto.TOO_MANY_SUBSCRIBERS: 503,
    proto.UNKNOWN_RUN: 404,
}
"""The HTTP status of a reply by its error code (200 when ``ok``)."""

_ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/live.css": ("live.css", "text/css; charset=utf-8"),
    "/live.js": ("live.js", "text/javascript; charset=utf-8"),
}
_JSON: Final = "application/json"
_OCTETS: Final = "application/octet-stream"
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The live page's Content-Security-Policy: its own script and style, nothing inline."""


def main(argv: list[str]) -> None:
    """The server process with the HTTP front: ``argv`` is the TCP socket, the two pipe
    fds and the HTTP socket."""
    http_sock = socket.socket(fileno=int(argv[3]))
    process_main(argv[:3], on_start=lambda server: HttpFront(server, http_sock).start())


class HttpCall:
    """The :class:`~.reply_target.ReplyTarget` of one HTTP request: the one reply line
    the server puts resolves :attr:`reply` (the handler writes the response)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.rids: set[int] = set()  # the server's bookkeeping of replies owed
        self.reply: asyncio.Future[bytes] = loop.create_future()

    @property
    def lost(self) -> bool:
        return False  # a request whose connection closed still gets its reply, unread

    def put(self, seq: int, line: bytes) -> bool:
        if not self.reply.done():
            self.reply.set_result(line)
        return False  # nothing to flush: the handler writes the response

    def flush(self) -> None:
        pass

    def answered(self, now: float) -> None:
        pass

    def error(self, seq: int, code: str, message: str) -> None:
        """The server could not forward the request: its one reply is this error."""
        self.put(seq, proto.error_line(code, message))


class _HttpError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers or {}
        self.status = status


class _Refuse(asyncio.Protocol):
    """A connection over the limit: read its request head, answer 503, close."""

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.head = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.front.refusing += 1
        if self.front.refusing > self.front.limit:  # a flood: no reply at all
            transport.abort()
            return
        self.timer = self.front.server.loop.call_later(REFUSE_TIMEOUT, transport.abort)

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) > REFUSE_HEAD_BYTES:
            self.answer()

    def eof_received(self) -> bool:
        self.answer()
        return False

    def answer(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = proto.error_line(
            proto.TOO_MANY_CONNECTIONS,
            f"{self.front.limit} HTTP connections are open (http_max_connections); retry later",
        )
        self.transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.refusing -= 1
        if self.timer is not None:
            self.timer.cancel()


class _Counted(web.Server):
    """aiohttp's low-level server, which tells the front when a connection opens (it
    waits on its client for a request) and when it has gone."""

    front: HttpFront

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.front.stalls.waiting(handler)

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        self.front.stalls.busy(handler)
        self.front.connections_open -= 1
        self.front.view.lost(handler)
        gone = self.front.waiting.get(handler)
        if gone is not None and not gone.done():
            gone.set_result(None)


class _Gone(Exception):
    """The connection of a request waiting for the pipe to drain has closed."""


class HttpFront:
    """The HTTP listener of one server process and its counters."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.limit = server.settings.http_max_connections
        self.token = server.settings.token
        self.guard = Guard(server.settings.http_address, server.settings.http_allowed_hosts)
        self.connections_open = 0
        self.connections_total = 0
        self.refusing = 0
        self.refused = 0
        self.requests = 0
        self.errors: dict[str, int] = {}
        self.assets = {
            path: (files(__package__).joinpath("live_assets").joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _ASSETS.items()
        }
        self.http: _Counted | None = None
        self.listener: asyncio.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        """Resolved when the pipe to the main process drains (or the server stops)."""
        self.waiting: dict[web.RequestHandler, asyncio.Future[None]] = {}
        """The connections with a request waiting for the pipe: resolved if one closes."""
        self.backlog_waits = 0
        self.dropped_unread = 0
        self.stalls = Stalls(server.loop, server.settings.idle_timeout)
        server.backlog_listeners.append(self._backlogged)
        self.artifacts_root: str | None = None
        self.root_known = False
        """The dispatcher's artifacts root (its ``info``), asked once, for report paths."""
        self.board = RunBoard(
            server.settings.live_max_tests,
            lambda: self.artifacts_root,
            server.settings.live_run_timeout,
            server.loop.call_at,
        )
        self.view = RunView(server.loop, self.board, server.settings.live_max_subscribers)
        self.board_faults = Throttled(logging.ERROR, "live view: a test event not shown")
        server.taps.update({name: self._tap(feed) for name, feed in self.board.taps.items()})
        root, restored = server.settings.artifacts_root, server.settings.restored
        if root is not None:  # a restarted dispatcher: its open runs from the start
            self.artifacts_root = root
            try:
                if restored is None:  # a replaced server process: the files as they are now
                    self.board.restore(open_runs(root, RESTORE_BYTES))
                else:  # as the main process read them, then the journal's replay
                    self.board.restore(restored.found, restored.replayed)
            except Exception as exc:  # the state files are the plugins': show what came
                self.board_faults(exc_info=exc)
            if restored is not None and restored.not_shown:
                logger.warning(
                    "live view: %d event(s) of the journal's replay not shown, past the "
                    "%d bytes it reads back (the reports list them)",
                    restored.not_shown,
                    RESTORE_BYTES,
                )

    def _tap(self, feed: Callable[[Any], None]) -> Callable[[Any], None]:
        """``feed``, whose fault is logged (throttled): the fire it taps is accepted."""

        def tap(data: Any) -> None:
            try:
                feed(data)
            except Exception as exc:
                self.board_faults(exc_info=exc)

        return tap

    def start(self) -> None:
        """Start listening once the loop runs (``Server.run`` connects the pipes first)."""
        self.task = self.server.loop.create_task(self._listen())

    async def _listen(self) -> None:
        http = _Counted(
            self._handle,
            keepalive_timeout=self.server.settings.idle_timeout,
            access_log=None,
            auto_decompress=False,  # a small gzip body must not grow past the bound
            logger=Noise(),  # a malformed request is logged once per LOG_EVERY, counted
        )
        http.front = self
        self.http = http
        self.listener = await self.server.loop.create_server(
            self._protocol, sock=self.sock, backlog=1024  # the socket listens already
        )
        self.server.finished.add_done_callback(lambda _: self.close())

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.view.close()
        if self.http is not None:
            self.http.pre_shutdown()
        self._backlogged(False)  # waiters wake, and find the server stopping

    def _backlogged(self, paused: bool) -> None:
        """The pipe to the main process is full (drained): requests wait (go on)."""
        if paused and self.drained is None:
            self.drained = self.server.loop.create_future()
        elif not paused and self.drained is not None:
            self.drained.set_result(None)
            self.drained = None

    def _protocol(self) -> asyncio.BaseProtocol:
        """A request handler, or a refusal once ``http_max_connections`` are open and
        none of them waits on its client (else the one waiting longest makes room)."""
        assert self.http is not None
        if self.connections_open >= self.limit and not self.stalls.evict():
            self.refused += 1
            code = proto.TOO_MANY_CONNECTIONS
            self.errors[code] = self.errors.get(code, 0) + 1
            return _Refuse(self)
        self.connections_open += 1
        self.connections_total += 1
        return self.http()

    def counters(self) -> dict[str, Any]:
        """The ``server.http`` entry of the stats this front serves."""
        return {
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "refused": self.refused,
            "requests": self.requests,
            "errors": dict(self.errors),
            "backlog_waits": self.backlog_waits,
            "dropped_unread": self.dropped_unread,
            "timed_out": self.stalls.timed_out,
            "evicted": self.stalls.evicted,
            "live": self.view.counters(),
        }

    # -- requests --------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        self.stalls.busy(request.protocol)
        try:
            return await self._route(request)
        except _Gone:
            self.dropped_unread += 1
            return web.Response(status=499)  # written nowhere: the connection is closed
        except _HttpError as exc:
            self.errors[exc.code] = self.errors.get(exc.code, 0) + 1
            body = proto.error_line(exc.code, exc.message)
            response = self._json(body, exc.headers, exc.status)
            if exc.code == proto.TOO_LARGE:
                response.force_close()  # the rest of the body is not read
            return response
        finally:  # the response is the client's to read, then the next request
            if request.transport is not None:
                self.stalls.waiting(request.protocol)

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
        method, path = request.method, request.path
        refused = self.guard.refusal(method, request.headers)
        if refused is not None:  # before the token: a rebound page learns nothing more
            raise _HttpError(refused[0], refused[1], status=refused[2])
        if path in self.assets:
            self._expect(method, "GET")
            body, kind = self.assets[path]
            return web.Response(
                body=body,
                content_type=kind.split(";")[0],
                charset="utf-8",
                headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"},
            )
        if path in ("/runs", "/live/stream") or path.startswith(("/runs/", "/files/")):
            self._expect(method, "GET")
            self._authorize(request)
            if not self.root_known:
                await self._admit(request)
                info = json.loads(await self._forward(self.server.ask_info)).get("info") or {}
                root = info.get("artifacts_root")
                self.artifacts_root = root if isinstance(root, str) else None
                self.root_known = True
            if path.startswith("/files/"):
                return await file_view.serve(request, self.artifacts_root, self.server.loop)
            return await self.view.handle(request)
        if path == "/fire":
            self._expect(method, "POST")
            self._authorize(request)
            await self._admit(request)
            return self._json(await self._fire(await self._body(request)))
        if path.startswith("/tasks/"):
            self._expect(method, "GET")
            self._authorize(request)
            await self._admit(request)
            return self._json(await self._task(path[len("/tasks/") :]))
        if path == "/stats":
            self._expect(method, "GET")
            self._authorize(request)
            await self._admit(request)
            return self._json(await self._stats_line())
        if path == "/metrics":
            self._expect(method, "GET")
            self._authorize(request)
            await self._admit(request)
            reply = json.loads(await self._stats_line())
            if not reply.get("ok"):
                return self._json(proto.reply_line(reply))
            body = metrics.render(reply["stats"], run_metrics.RunCollector(self.board))
            return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
        if path == "/attach":
            self._expect(method, "PUT")
            self._authorize(request)
            return await self._attach(request)
        if path == "/terminate":
            self._expect(method, "POST")
            self._authorize(request)
            await self._admit(request)
            await self._body(request)  # JSON only, like every POST
            return self._json(await self._terminate())
        raise _HttpError(proto.UNKNOWN_OP, f"no such endpoint: {path[:100]}")

    @staticmethod
    def _expect(method: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            raise _HttpError(
                proto.UNKNOWN_OP,
                f"method {method[:20]} is not served here (use {allowed})",
                {"Allow": allowed},
                405,
            )

    def _authorize(self, request: web.BaseRequest) -> None:
        """With a token set, ``Authorization: Bearer <token>`` (else 401 unauthorized)."""
        token = self.token
        if token is None:
            return
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not compare_digest(value.strip().encode(), token.encode()):
            raise _HttpError(
                proto.UNAUTHORIZED,
                "send 'Authorization: Bearer <server_token>'" if not given else "wrong token",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _admit(self, request: web.BaseRequest) -> None:
        """Wait while the pipe to the main process is over its bound, as a TCP connection
        is not read meanwhile; the body stays unread. :class:`_Gone` if the connection
        closes first."""
        server = self.server
        handler = request.protocol
        while server.main_paused and server.state is not ServerPhase.STOPPING:
            if request.transport is None:
                raise _Gone
            if self.drained is None:  # paused before this front was told: never so
                self.drained = server.loop.create_future()
            self.backlog_waits += 1
            gone: asyncio.Future[None] = server.loop.create_future()
            self.waiting[handler] = gone
            try:
                await asyncio.wait((self.drained, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                del self.waiting[handler]
            if gone.done():
                raise _Gone

    async def _body(self, request: web.BaseRequest) -> bytes:
        """The request body: JSON by its content type, at most ``max_message_bytes``."""
        if request.content_type != _JSON:
            raise _HttpError(
                proto.BAD_REQUEST,
                f"Content-Type must be {_JSON}, not {request.content_type[:60]!r}",
            )
        limit = self.server.max_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise self._too_large(length)
        chunks, size = [], 0
        self.stalls.waiting(request.protocol)  # a body that never ends is closed
        try:
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(size)
                chunks.append(chunk)
        except ConnectionError:  # closed by its client, or for stalling
            raise _Gone from None
        finally:
            self.stalls.busy(request.protocol)
        return b"".join(chunks)

    async def _attach(self, request: web.BaseRequest) -> web.Response:
        """An upload (:mod:`.http_attach`); after an error the connection closes, since
        the rest of the body is never read."""
        from . import http_attach
        from .uploads import Refused

        try:
            if request.content_type != _OCTETS:
                raise proto.ProtocolError(
                    proto.BAD_REQUEST,
                    f"Content-Type must be {_OCTETS}, not {request.content_type[:60]!r}",
                )
            if self.server.state is ServerPhase.STOPPING:
                raise proto.ProtocolError(proto.SHUTTING_DOWN, "the server is stopping")
            msg = http_attach.header(request)
            self.stalls.waiting(request.protocol)  # a body that never ends is closed
            try:
                line = await http_attach.receive(self.server.uploads(), msg, request)
            finally:
                self.stalls.busy(request.protocol)
        except (proto.ProtocolError, Refused) as exc:
            line = proto.error_line(exc.code, exc.message)
        except ConnectionError:  # closed by its client, or for stalling: nothing kept
            raise _Gone from None
        response = self._json(line)
        if response.status != 200:
            code = json.loads(line)["error"]["code"]
            self.errors[code] = self.errors.get(code, 0) + 1
            response.force_close()
        return response

    def _too_large(self, size: int) -> _HttpError:
        return _HttpError(
            proto.TOO_LARGE,
            f"body of {size} bytes or more exceeds max_message_bytes ({self.server.max_bytes})",
        )

    def _serving(self) -> None:
        """Raise shutting_down unless the server process is connected and not stopping."""
        server = self.server
        if server.to_main is None or server.state is ServerPhase.STOPPING:
            raise _HttpError(proto.SHUTTING_DOWN, "the server is stopping")

    async def _fire(self, body: bytes) -> bytes:
        """A fire message, accepted exactly as the TCP server accepts one."""
        try:
            msg = proto.parse(body)
        except proto.ProtocolError as exc:
            raise _HttpError(exc.code, exc.message) from None
        if type(msg) is not proto.Fire:
            raise _HttpError(proto.BAD_REQUEST, "POST /fire takes a fire message (hook_name, data)")
        self._serving()
        server = self.server
        if server.state is not ServerPhase.ACCEPTING:
            raise _HttpError(proto.SHUTTING_DOWN, "the dispatcher is stopping")
        call = HttpCall(server.loop)
        server.fire(call, 0, msg, body)
        server.flush_outbox()
        return await call.reply

    async def _forward(self, ask: Callable[[HttpCall, int], None]) -> bytes:
        """Forward a request with ``ask`` (one of ``Server.ask_*``); its one reply line."""
        self._serving()
        call = HttpCall(self.server.loop)
        ask(call, 0)
        self.server.flush_outbox()
        return await call.reply

    async def _task(self, tid: str) -> bytes:
        if not tid or len(tid) > MAX_TID:
            raise _HttpError(proto.BAD_REQUEST, f"a tid of 1 to {MAX_TID} characters")
        return await self._forward(partial(self.server.ask_status, tid=tid))

    async def _stats_line(self) -> bytes:
        """The stats (at most 100 ms old: :mod:`.stats_snapshot`), with this front's
        counters added."""
        line = await self._forward(self.server.ask_stats)
        reply = json.loads(line)
        stats = reply.get("stats")
        if isinstance(stats, dict) and isinstance(stats.get("server"), dict):
            stats["server"]["http"] = self.counters()
            return proto.reply_line(reply)
        return line

    async def _terminate(self) -> bytes:
        if self.server.state is ServerPhase.STOPPING:
            return proto.OK_LINE
        return await self._forward(self.server.ask_terminate)

    def _json(
        self, line: bytes, headers: dict[str, str] | None = None, status: int | None = None
    ) -> web.Response:
        """A reply line as the response, its status from its error code."""
        if status is None and line.startswith(b'{"ok":true'):
            status = 200
        elif status is None:
            error = json.loads(line).get("error") or {}
            status = STATUS_OF.get(str(error.get("code")), 500)
        return web.Response(body=line, status=status, content_type=_JSON, headers=headers)


if __name__ == "__main__":
    main(sys.argv[1:])
