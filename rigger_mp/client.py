"""``RiggerClient``: fire events into a Rigger's TCP server from another process or host.

One persistent connection, shared safely between threads (one request at a time holds
it). ``fire_many`` pipelines: it writes while it reads, so a batch of any size never
deadlocks on full socket buffers. Failures raise: :class:`RemoteError` carries the
server's error code; :class:`RiggerConnectionError` says the server could not be reached
or the connection broke.

Every fire carries an ``id`` (the caller's ``fire_id``, else one the client makes: a
random prefix per client and a counter), so a fire whose reply was lost to a broken
connection is resent safely: the server answers a fire whose id it accepted before with
the first tid and does not run it again (its ``dedup_window``). The client resends on a
new connection, with the same id, until ``resend_seconds`` have passed since the first
break (waiting a little longer between attempts each time, from 50 ms to 1 s: a server
being restarted refuses connections meanwhile); then it raises
:class:`RiggerConnectionError`, whose ``fire_ids`` lists the ids of the fires that may
or may not have been accepted (resend them with those ids). ``fire_many`` resends only
the events not yet replied to. A resent ``grab_result``/``wait_for_task`` fire that the
server had accepted gets no output again: :class:`DuplicateFire` names its tid (ask
``task_status``). Other requests are resent once when that is safe: the request was
never completely sent, or it is a read-only one (``ping``, ``task_status``, ``stats``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, BinaryIO, Final

from . import protocol as proto
from .errors import RiggerError

DEFAULT_TIMEOUT: Final = 60.0
RESEND_SECONDS: Final = 10.0
"""Default of ``resend_seconds``: how long a fire whose reply was lost is resent."""
FIRST_PAUSE: Final = 0.05
LAST_PAUSE: Final = 1.0
"""The pauses between two resends: doubled from the first up to the last."""
RECV_SIZE: Final = 64 * 1024  # larger reads cost an mmap each (see rigger_mp.channel)
SEND_CHUNK: Final = 256 * 1024
UPLOAD_CHUNK: Final = 4 * 1024 * 1024
"""Bytes of an upload sent between two looks for an early reply (a refusal)."""


class RemoteError(RiggerError):
    """The server refused a message or the event failed; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str, tid: str | None = None) -> None:
        super().__init__(f"[{code}] {message}" + (f" (tid {tid})" if tid else ""))
        self.code = code
        self.message = message
        self.tid = tid


class RiggerConnectionError(RiggerError, ConnectionError):
    """The server could not be reached, or the connection broke during a request.

    ``fire_ids``: the ids of the fires whose fate is unknown (sent, no reply): resending
    them with these ids cannot run them twice (within the server's ``dedup_window``).
    """

    def __init__(self, message: str, fire_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fire_ids = list(fire_ids)


class DuplicateFire(RiggerError):
    """A ``grab_result``/``wait_for_task`` fire whose id the server had accepted before
    (as ``tid``): it did not run again, and its output is not sent again."""

    def __init__(self, tid: str) -> None:
        super().__init__(
            f"the fire was accepted before as tid {tid} (its reply was lost); it was not run "
            "again: ask task_status for its outcome"
        )
        self.tid = tid


class RiggerTimeout(RiggerError, TimeoutError):
    """No reply within the client's timeout; the connection is closed (replies may be late)."""


class FireManyError(RemoteError):
    """Some events of ``fire_many`` were refused; ``results`` has a tid or error per event."""

    def __init__(self, results: list[str | RemoteError]) -> None:
        errors = [r for r in results if isinstance(r, RemoteError)]
        first = errors[0]
        super().__init__(
            first.code, f"{len(errors)} of {len(results)} events refused; first: {first.message}"
        )
        self.results = results


class RiggerClient:
    """A client of a Rigger's TCP server (see ``docs/protocol.md``).

    ``timeout`` bounds connecting and each wait for a reply (``None``: wait forever).
    ``token`` is sent with ``auth`` on every (re)connection when given.
    ``resend_seconds``: how long fires whose reply was lost are resent (0: never).
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = proto.DEFAULT_PORT,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        resend_seconds: float = RESEND_SECONDS,
    ) -> None:
        self.address = address
        self.port = port
        self.token = token
        self.timeout = timeout
        self.resend_seconds = resend_seconds
        self._id_prefix = secrets.token_hex(8) + "-"
        self._id_numbers = itertools.count(1)  # next() is atomic: threads share it
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._rbuf = b""

    # -- the public calls -----------------------------------------------------------------

    def new_id(self) -> str:
        """A fire id no other client makes: this client's random prefix and a counter."""
        return self._id_prefix + str(next(self._id_numbers))

    def fire_hook(
        self,
        hook_name: str,
        /,
        *,
        grab_result: bool = False,
        wait_for_task: bool = False,
        fire_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Fire an event: the tid; with ``grab_result`` its output; with ``wait_for_task`` True.

        The event's data are keyword arguments (``fire_hook("start_test", test_name="t")``);
        the flags are keyword-only, so a mapping passed by position is a ``TypeError``
        instead of being read as ``grab_result``. ``fire_id``: the fire's ``id`` (else
        :meth:`new_id`); a fire with an id the server accepted lately is not run again.

        A failed event raises :class:`RemoteError` (code ``hook_failed``) when waited on.
        """
        extra: dict[str, Any] = {}
        if grab_result:
            extra["grab_result"] = True
        elif wait_for_task:
            extra["wait_for_task"] = True
        fire_id = self.new_id() if fire_id is None else _checked_id(fire_id)
        line = proto.encode_fire(hook_name, kwargs, extra, fire_id)
        with self._lock:
            reply = self._resending([line], [fire_id])[0]
        if not reply["ok"]:
            raise _remote_error(reply)
        if reply.get("duplicate") and (grab_result or wait_for_task):
            raise DuplicateFire(str(reply["tid"]))
        if grab_result:
            output: dict[str, Any] = reply["output"]
            return output
        if wait_for_task:
            return True
        return str(reply["tid"])

    def fire_many(
        self,
        events: Iterable[tuple[str, Mapping[str, Any]]],
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Fire ``(hook_name, data)`` pairs pipelined over one connection; their tids, in order.

        ``ids``: each event's fire id (else :meth:`new_id` for each). Every event is
        encoded before anything is sent, so a bad argument raises ``TypeError`` (a bad id
        ``ValueError``) with nothing fired. If the connection breaks, the events not yet
        replied to are resent with their ids (see the module's docstring). If some are
        refused, :class:`FireManyError` is raised once all replies are in; its ``results``
        holds each tid or error.
        """
        events = list(events)
        if ids is None:
            fire_ids = [self.new_id() for _ in events]
        else:
            fire_ids = [_checked_id(fire_id) for fire_id in ids]
            if len(fire_ids) != len(events):
                raise ValueError(f"fire_many: {len(fire_ids)} ids for {len(events)} events")
        lines = [
            proto.encode_fire(name, data, {}, fire_id)
            for (name, data), fire_id in zip(events, fire_ids, strict=True)
        ]
        results = self.fire_lines(lines, fire_ids)
        if any(isinstance(r, RemoteError) for r in results):
            raise FireManyError(results)
        return [r for r in results if isinstance(r, str)]

    def fire_lines(
        self, lines: Sequence[bytes], fire_ids: Sequence[str]
    ) -> list[str | RemoteError]:
        """:meth:`fire_many` of fires already encoded (each by
        :func:`rigger_mp.protocol.encode_fire` with its id in ``fire_ids``): each one's
        tid, or the error that refused it (raised only for the connection)."""
        if not lines:
            return []
        with self._lock:
            replies = self._resending(list(lines), list(fire_ids))
        return [str(r["tid"]) if r["ok"] else _remote_error(r) for r in replies]

    def task_status(self, tid: str) -> dict[str, Any]:
        """``{"tid", "status": queued|running|done|failed[, "error"]}`` of a TCP-fired event."""
        reply = self._request(proto.encode_message({"op": "task_status", "tid": str(tid)}), True)
        reply.pop("ok", None)
        return reply

    def ping(self) -> bool:
        """True if the server answers (raises otherwise)."""
        self._request(proto.encode_message({"op": "ping"}), idempotent=True)
        return True

    def stats(self) -> dict[str, Any]:
        """The dispatcher's ``stats()``, with the server process's counters under ``server``."""
        stats: dict[str, Any] = self._request(
            proto.encode_message({"op": "stats"}), idempotent=True
        )["stats"]
        return stats

    def info(self) -> dict[str, Any]:
        """The dispatcher's ``info()``: ``{"host", "pid", "artifacts_root"}``."""
        info: dict[str, Any] = self._request(
            proto.encode_message({"op": "info"}), idempotent=True
        )["info"]
        return info

    def attach(
        self,
        test_location: str,
        test_name: str,
        name: str,
        data: bytes | str | os.PathLike[str],
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Upload ``data`` (bytes, or the path of a file, streamed from disk) as ``name``
        (a relative path) into the artifact directory of the test
        ``test_location::test_name`` on the dispatcher's host; the reply: ``{"ok", "path"
        (relative to the artifacts root), "size", "sha256"}``.

        The server answers a refusal (``too_large``, ``quota_exceeded``, ``disk_full``,
        an unsafe name) before reading a byte and then closes: between chunks the client
        looks for that early reply and stops sending. Raises :class:`RemoteError`.
        """
        with contextlib.ExitStack() as stack:
            if isinstance(data, bytes | bytearray | memoryview):
                raw = bytes(data)
                body: bytes | BinaryIO = raw
                size = len(raw)
            else:
                body = stack.enter_context(open(data, "rb"))
                size = os.fstat(body.fileno()).st_size
            header: dict[str, Any] = {
                "op": "attach",
                "test_location": test_location,
                "test_name": test_name,
                "name": name,
                "size": size,
            }
            if run_id is not None:
                header["run_id"] = str(run_id)
            with self._lock:
                try:
                    reply = self._upload(proto.encode_message(header), body, size)
                except BaseException:
                    self._drop()
                    raise
                if not reply["ok"]:
                    self._drop()  # the server closes after a refused upload
        if not reply["ok"]:
            raise _remote_error(reply)
        return reply

    def _upload(self, header: bytes, body: bytes | BinaryIO, size: int) -> dict[str, Any]:
        """Send an attach header and its body; the reply (an early one is a refusal)."""
        sock = self._connected()
        sent = 0
        try:
            sock.sendall(header)
            view = memoryview(body) if isinstance(body, bytes) else None
            while sent < size:
                if _readable(sock):
                    break  # refused: the reply is there, the rest would not be read
                count = min(UPLOAD_CHUNK, size - sent)
                if view is not None:
                    sock.sendall(view[sent : sent + count])
                else:
                    assert not isinstance(body, bytes)
                    sock.sendfile(body, sent, count)
                sent += count
        except OSError as exc:
            if not _readable(sock):
                raise RiggerConnectionError(
                    f"attach: the connection to {self._where()} broke after {sent} of "
                    f"{size} bytes: {exc}"
                ) from exc
        return self._read_reply(sock)

    def terminate(self) -> bool:
        """Stop the whole dispatcher cleanly; returns once the events accepted have run."""
        self._request(proto.encode_message({"op": "terminate"}), idempotent=False)
        with self._lock:
            self._drop()
        return True

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> RiggerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the connection ---------------------------------------------------------------------

    def _request(self, line: bytes, idempotent: bool) -> dict[str, Any]:
        """Send one message and return its reply; raise RemoteError for an error reply."""
        with self._lock:
            reply = self._exchange(line, idempotent)
            if _closes(reply):
                self._drop()  # the next message goes on a new connection, not into the reset
        if not reply["ok"]:
            raise _remote_error(reply)
        return reply

    def _exchange(self, line: bytes, idempotent: bool) -> dict[str, Any]:
        for attempt in (1, 2):
            sock = self._connected()
            try:
                sock.sendall(line)
            except OSError as exc:
                # Never completely sent: the server cannot have read it. Safe to resend.
                self._drop()
                if attempt == 2:
                    raise RiggerConnectionError(
                        f"sending to {self._where()} failed: {exc}"
                    ) from exc
                continue
            try:
                return self._read_reply(sock)
            except RiggerConnectionError:
                self._drop()
                if attempt == 2 or not idempotent:
                    raise
            except BaseException:
                self._drop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _resending(self, lines: list[bytes], fire_ids: list[str]) -> list[dict[str, Any]]:
        """Send fires (``lines``, pipelined) and read their replies; on a broken connection
        resend those not replied to, on a new one, for up to ``resend_seconds``."""
        replies: list[dict[str, Any]] = []
        deadline: float | None = None
        pause = FIRST_PAUSE
        while True:
            try:
                sock = self._connected()
            except RiggerConnectionError as exc:
                if deadline is None:
                    raise  # no server at all: said at once, as nothing was sent
                broke = exc
            else:
                try:
                    if len(lines) - len(replies) == 1:  # one fire: no selector needed
                        self._send_one(sock, lines[-1], replies)
                    else:
                        self._pipeline(sock, lines[len(replies) :], replies)
                except RiggerConnectionError as exc:
                    broke = exc
                except BaseException:
                    self._drop()
                    raise
                else:
                    if any(_closes(reply) for reply in replies):
                        self._drop()  # the next message goes on a new connection
                    return replies
            self._drop()
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.resend_seconds
            if now + pause > deadline:
                raise RiggerConnectionError(
                    f"{broke}; resent for {self.resend_seconds} s without an answer: "
                    f"{len(lines) - len(replies)} fire(s) may or may not have been "
                    "accepted (resend them with the ids in fire_ids)",
                    fire_ids[len(replies) :],
                ) from broke
            _pause(pause)
            pause = min(2 * pause, LAST_PAUSE)

    def _connected(self) -> socket.socket:
        """The open connection; a new one if there is none or the server closed it."""
        sock = self._sock
        if sock is not None and _closed_by_peer(sock):
            self._drop()
            sock = None
        if sock is None:
            sock = self._connect()
        return sock

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        except OSError as exc:
            raise RiggerConnectionError(f"cannot connect to {self._where()}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        self._sock = sock
        self._rbuf = b""
        if self.token is not None:
            try:
                sock.sendall(proto.encode_message({"op": "auth", "token": self.token}))
                reply = self._read_reply(sock)
            except BaseException:
                self._drop()
                raise
            if not reply["ok"]:
                self._drop()
                raise _remote_error(reply)
        return sock

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._rbuf = b""
        if sock is not None:
            sock.close()

    def _read_reply(self, sock: socket.socket) -> dict[str, Any]:
        """Read one reply line (more may arrive; the rest is kept for the next one)."""
        buf = self._rbuf
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                self._rbuf = buf[end + 1 :]
                return _decode(buf[:end])
            try:
                data = sock.recv(RECV_SIZE)
            except TimeoutError:
                raise RiggerTimeout(
                    f"no reply from {self._where()} within {self.timeout} s"
                ) from None
            except OSError as exc:
                raise RiggerConnectionError(
                    f"the connection to {self._where()} broke: {exc}"
                ) from exc
            if not data:
                raise RiggerConnectionError(
                    f"{self._where()} closed the connection before replying"
                )
            buf += data

    def _send_one(self, sock: socket.socket, line: bytes, replies: list[dict[str, Any]]) -> None:
        """Send one message and append its reply to ``replies``."""
        try:
            sock.sendall(line)
        except OSError as exc:
            raise RiggerConnectionError(f"sending to {self._where()} failed: {exc}") from exc
        replies.append(self._read_reply(sock))

    def _pipeline(
        self, sock: socket.socket, lines: list[bytes], replies: list[dict[str, Any]]
    ) -> None:
        """Write ``lines`` while reading their replies, appended to ``replies`` in order
        (those read before the connection broke stay there)."""
        want = len(lines) + len(replies)
        out = memoryview(b"")
        next_line = 0
        buf = self._rbuf
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        try:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while len(replies) < want:
                ready = sel.select(self.timeout)
                if not ready:
                    raise RiggerTimeout(
                        f"fire_many: no progress with {self._where()} for {self.timeout} s "
                        f"({len(replies)} of {want} replies read)"
                    )
                events = ready[0][1]
                if events & selectors.EVENT_WRITE:
                    if not out:
                        chunk: list[bytes] = []
                        size = 0
                        while next_line < len(lines) and size < SEND_CHUNK:
                            chunk.append(lines[next_line])
                            size += len(lines[next_line])
                            next_line += 1
                        out = memoryview(b"".join(chunk))
                    try:
                        out = out[sock.send(out) :]
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise self._broke_during_many(len(replies), want) from exc
                    if not out and next_line == len(lines):
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        raise self._broke_during_many(len(replies), want) from exc
                    if not data:
                        raise self._broke_during_many(len(replies), want)
                    buf += data
                    if b"\n" in buf:
                        *got, buf = buf.split(b"\n")
                        replies.extend(map(_decode, got))
        finally:
            sel.close()
            self._rbuf = buf
            if self._sock is sock:
                sock.settimeout(self.timeout)
        if len(replies) > want:
            raise RiggerError("the server sent more replies than messages")

    def _broke_during_many(self, got: int, want: int) -> RiggerConnectionError:
        return RiggerConnectionError(
            f"the connection to {self._where()} broke after {got} of {want} replies"
        )

    def _where(self) -> str:
        return f"{self.address}:{self.port}"

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "not connected"
        return f"<RiggerClient {self._where()} {state}>"


_OK_PREFIX: Final = b'{"ok":true,"tid":"'


def _decode(line: bytes) -> dict[str, Any]:
    """A reply line as a dict; the common ack is parsed without the JSON decoder."""
    if line.startswith(_OK_PREFIX) and line.endswith(b'"}') and line.count(b'"') == 6:
        return {"ok": True, "tid": line[len(_OK_PREFIX) : -2].decode("ascii")}
    try:
        return proto.decode_reply(line)
    except proto.ProtocolError as exc:
        raise RiggerConnectionError(f"{exc.message}: {line[:200]!r}") from None


def _pause(seconds: float) -> None:
    """Wait before a resend: nothing signals that a server came back, so the client
    tries again after a pause (doubled each time, bounded by ``resend_seconds``)."""
    time.sleep(seconds)


def _checked_id(fire_id: str) -> str:
    """A caller's fire id, checked as the server checks it (``ValueError`` if bad)."""
    try:
        return proto.check_fire_id(fire_id)
    except proto.ProtocolError as exc:
        raise ValueError(exc.message) from None


def _closes(reply: Mapping[str, Any]) -> bool:
    """Whether the server closes the connection after this reply (``too_large``: the rest
    of the message is never read)."""
    error = reply.get("error")
    return isinstance(error, Mapping) and error.get("code") == proto.TOO_LARGE


def _remote_error(reply: Mapping[str, Any]) -> RemoteError:
    error = reply.get("error")
    if not isinstance(error, Mapping):
        return RemoteError(proto.INTERNAL, f"malformed error reply: {json.dumps(reply)[:200]}")
    tid = reply.get("tid")
    return RemoteError(
        str(error.get("code", proto.INTERNAL)),
        str(error.get("message", "")),
        str(tid) if tid is not None else None,
    )


def _readable(sock: socket.socket) -> bool:
    """Whether something (a reply, an end-of-file) waits to be read, without waiting."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _closed_by_peer(sock: socket.socket) -> bool:
    """True if the server has closed (or reset) this idle connection.

    An idle connection has nothing to read, so readable means end-of-file or a reset.
    (``poll()``, not ``select()``, which fails for descriptors of 1024 and up.)
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
        return not sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return True
