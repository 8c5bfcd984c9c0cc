"""The wire protocol of the TCP intake: framing, parsing, error codes, replies.

Shared by the server process and :class:`~rigger_mp.client.RiggerClient`, so that each
rule lives in one place. Network data is only ever parsed here, and only as JSON.

A message is one UTF-8 JSON object ended by ``\\n``; a ``\\0`` also ends one (riggerlib
1.x framing). Blank frames are ignored (so ``\\r\\n``, ``\\n\\0`` or an empty line from
``nc`` cost nothing). Every message gets exactly one reply line::

    {"ok": true, "tid": "17"}                                 fire
    {"ok": true, "tid": "17", "output": {...}}                fire with grab_result
    {"ok": true, "info": {"host": ..., "pid": ..., "artifacts_root": ...}}   info
    {"ok": true, "path": "run/loc/test/shot.png", "size": 5, "sha256": "..."}   attach
    {"ok": false, "error": {"code": "bad_json", "message": "..."}}

The reference for users is the docs' protocol page (``docs/protocol.md``); the
error codes are listed in ``docs/errors.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, Final, NamedTuple, NoReturn

DEFAULT_PORT: Final = 21212
"""The TCP port of ``rigger-mp serve`` and of clients when none is given."""
TOKEN_ENV: Final = "RIGGER_MP_TOKEN"
"""The environment variable clients (the CLI, the pytest plugin) read the token from."""

# -- error codes (stable: clients may switch on them) -----------------------------

BAD_JSON: Final = "bad_json"
"""The message is not valid UTF-8 JSON."""
BAD_REQUEST: Final = "bad_request"
"""Valid JSON, but not a valid message (not an object, a missing or mistyped key...)."""
TOO_LARGE: Final = "too_large"
"""The message is longer than ``max_message_bytes``; the server closes the connection."""
UNAUTHORIZED: Final = "unauthorized"
"""A token is required and this connection has not sent a valid ``auth``."""
UNKNOWN_OP: Final = "unknown_op"
"""``op`` names no operation."""
HOOK_FAILED: Final = "hook_failed"
"""The event failed (``grab_result``/``wait_for_task``); the message says why."""
NOT_SERIALIZABLE: Final = "not_serializable"
"""The event's output cannot be written as JSON; the message names the key."""
UNKNOWN_TASK: Final = "unknown_task"
"""``task_status`` of a tid the server does not know (never fired over TCP, or too old)."""
SHUTTING_DOWN: Final = "shutting_down"
"""The dispatcher is stopping and accepts no more events."""
INTERNAL: Final = "internal"
"""A fault in rigger_mp itself; the message says what, the log has the traceback."""
JOURNAL_FAILED: Final = "journal_failed"
"""The journal commit of this fire's batch failed (a full disk, say): it was not accepted."""
REPLY_TOO_LARGE: Final = "reply_too_large"
"""The reply (a ``grab_result`` output, the stats) would be longer than ``max_reply_bytes``;
the event ran, the connection stays open."""
BUSY: Final = "busy"
"""The server has ``max_connections`` open: this one gets this line and is closed."""
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
"""The HTTP front has ``http_max_connections`` open: this one is answered 503 and closed
(HTTP's ``busy``)."""
BAD_HOST: Final = "bad_host"
"""The HTTP request's ``Host`` is not loopback, ``http_address`` or one of
``http_allowed_hosts`` (HTTP 421): a page under a rebound host name cannot reach the front."""
BAD_ORIGIN: Final = "bad_origin"
"""A state-changing HTTP request carries an ``Origin`` other than the front's own (HTTP 403)."""
QUOTA_EXCEEDED: Final = "quota_exceeded"
"""An ``attach`` would take its run's uploads past ``max_run_bytes``; nothing is read."""
DISK_FULL: Final = "disk_full"
"""An ``attach`` would leave less than ``min_free_disk_bytes`` free under the artifacts
root (or the disk filled while writing it); nothing is kept."""
TOO_MANY_SUBSCRIBERS: Final = "too_many_subscribers"
"""The HTTP front has ``live_max_subscribers`` live streams open (HTTP 503)."""
UNKNOWN_RUN: Final = "unknown_run"
"""``GET /runs/{run_id}`` of a run the live view does not hold (HTTP 404)."""
BAD_ID: Final = "bad_id"
"""A fire's ``id`` is not a string of 1 to :data:`MAX_FIRE_ID` printable ASCII characters."""

ERROR_CODES: Final = (
    BAD_JSON,
    BAD_REQUEST,
    TOO_LARGE,
    UNAUTHORIZED,
    UNKNOWN_OP,
    HOOK_FAILED,
    NOT_SERIALIZABLE,
    UNKNOWN_TASK,
    SHUTTING_DOWN,
    INTERNAL,
    JOURNAL_FAILED,
    REPLY_TOO_LARGE,
    BUSY,
    TOO_MANY_CONNECTIONS,
    BAD_HOST,
    BAD_ORIGIN,
    QUOTA_EXCEEDED,
    DISK_FULL,
    TOO_MANY_SUBSCRIBERS,
    UNKNOWN_RUN,
    BAD_ID,
)

# -- messages ----------------------------------------------------------------------

FIRE_KEYS: Final = frozenset({"hook_name", "data", "grab_result", "wait_for_task", "id"})
OP_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "ping": frozenset({"op"}),
    "auth": frozenset({"op", "token"}),
    "task_status": frozenset({"op", "tid"}),
    "stats": frozenset({"op"}),
    "info": frozenset({"op"}),
    "terminate": frozenset({"op"}),
    "attach": frozenset({"op", "run_id", "test_location", "test_name", "name", "size"}),
}
"""Every operation and the keys its message may carry."""

# How a fire wants its reply: at once with the tid, with the output, or when done.
ACK: Final = 0
GRAB: Final = 1
WAIT: Final = 2

ERROR_MESSAGE_LIMIT: Final = 300
"""Error messages are cut to this many characters, so replies stay small."""
MAX_JSON_DEPTH: Final = 64
"""Default of ``max_json_depth``: objects and arrays nested deeper are ``bad_request``
(checked at parse time: deeper structures could not be pickled on to the main process)."""
MAX_HOOK_NAME: Final = 256
"""Default of ``max_hook_name_length``: a longer ``hook_name`` is ``bad_request``."""
DEDUP_WINDOW: Final = 100_000
"""Default of ``dedup_window``: fire ids the server keeps to answer a resent fire."""
MAX_DEDUP_WINDOW: Final = 10_000_000
"""The largest ``dedup_window`` (about 2 GiB of ids: see ``docs/operating.md``)."""
MAX_FIRE_ID: Final = 128
"""Characters of a fire's ``id`` at most (printable ASCII): a longer one is ``bad_id``. Each
id the dedup window keeps costs memory (``docs/operating.md``), so ids stay short."""


class ProtocolError(Exception):
    """A message that cannot be served; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Fire(NamedTuple):
    """A parsed fire message.

    A named tuple, not a frozen dataclass: one is built per event, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) cost the server
    process about a tenth of its time under pipelined load.
    """

    hook_name: str
    data: dict[str, Any]
    mode: int  # ACK, GRAB or WAIT
    fire_id: str | None = None
    """The client's ``id`` for it: a fire whose id was accepted lately is not run again."""


class Attach(NamedTuple):
    """A parsed ``attach`` header: ``size`` raw bytes follow it, the file ``name`` (a
    relative path, checked where it is written) of the test ``test_location::test_name``."""

    test_location: str
    test_name: str
    name: str
    size: int
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Op:
    """A parsed ``op`` message; ``arg`` is the token (auth) or the tid (task_status)."""

    op: str
    arg: str | None = None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_decoder: Final = json.JSONDecoder(parse_constant=_reject_constant)
# The C scanner behind JSONDecoder.raw_decode (typeshed types make_scanner oddly).
_scan: Final[Callable[[str, int], tuple[Any, int]]] = make_scanner(_decoder)  # type: ignore[arg-type]


def _decode(text: str) -> Any:
    """``json.JSONDecoder.decode``, minus its two regex passes when they have nothing to do.

    ``decode`` skips whitespace around the document with a regex on each side, then calls
    the C scanner; under pipelined load that wrapper was a sixth of the server process's
    time. A text that neither starts nor ends with whitespace and that the scanner reads
    to its end is exactly what ``decode`` would return; anything else (outer whitespace,
    extra data, errors) goes through ``decode`` itself, so results and error messages
    stay the same.
    """
    if text and not text[0].isspace() and not text[-1].isspace():
        try:
            obj, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end == len(text):
            return obj
    return _decoder.decode(text)
_encode: Final = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


def parse(
    frame: bytes, max_depth: int = MAX_JSON_DEPTH, max_hook_name: int = MAX_HOOK_NAME
) -> Fire | Op | Attach:
    """Parse and validate one frame (without its delimiter); raise :class:`ProtocolError`."""
    try:
        msg = _decode(frame.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(BAD_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:  # deeper than the decoder goes: deeper than any allowed depth
        raise ProtocolError(BAD_REQUEST, _too_deep(max_depth)) from None
    except ValueError as exc:  # json.JSONDecodeError, NaN, too many digits
        raise ProtocolError(BAD_JSON, f"invalid JSON: {exc}") from None
    if type(msg) is not dict:
        raise ProtocolError(BAD_REQUEST, f"a message must be a JSON object, not {_json_type(msg)}")
    # Counting brackets is C-fast and bounds the depth: the walk runs only when it might fail.
    if frame.count(b"[") + frame.count(b"{") > max_depth and nested_deeper(msg, max_depth):
        raise ProtocolError(BAD_REQUEST, _too_deep(max_depth))
    if "op" in msg:
        return _parse_op(msg)
    hook_name = msg.get("hook_name")
    if type(hook_name) is not str or not hook_name:
        if hook_name is None:
            raise ProtocolError(BAD_REQUEST, "missing 'hook_name' (or 'op')")
        raise ProtocolError(
            BAD_REQUEST, f"'hook_name' must be a non-empty string, not {_json_type(hook_name)}"
        )
    if len(hook_name) > max_hook_name:
        raise ProtocolError(
            BAD_REQUEST,
            f"'hook_name' of {len(hook_name)} characters exceeds max_hook_name_length "
            f"({max_hook_name})",
        )
    if not msg.keys() <= FIRE_KEYS:
        raise ProtocolError(BAD_REQUEST, f"unknown key(s) {_unknown(msg, FIRE_KEYS)}")
    data = msg.get("data", {})
    if type(data) is not dict:
        raise ProtocolError(BAD_REQUEST, f"'data' must be an object, not {_json_type(data)}")
    size = len(msg)
    if size == 2 and "data" in msg:
        return Fire(hook_name, data, ACK)
    fire_id = check_fire_id(msg["id"]) if "id" in msg else None
    if size == 3 and fire_id is not None and "data" in msg:  # the common fire with an id
        return Fire(hook_name, data, ACK, fire_id)
    grab = _flag(msg, "grab_result")
    wait = _flag(msg, "wait_for_task")
    return Fire(hook_name, data, GRAB if grab else WAIT if wait else ACK, fire_id)


def check_fire_id(value: Any) -> str:
    """A fire's ``id`` checked: 1 to :data:`MAX_FIRE_ID` printable ASCII characters (no
    control characters, so that it prints safely in logs and ``journal show``)."""
    if type(value) is not str:
        raise ProtocolError(BAD_ID, f"'id' must be a string, not {_json_type(value)}")
    if not 0 < len(value) <= MAX_FIRE_ID or not value.isascii() or not value.isprintable():
        raise ProtocolError(
            BAD_ID, f"'id' must be 1 to {MAX_FIRE_ID} printable ASCII characters"
        )
    return value


def _too_deep(max_depth: int) -> str:
    return f"objects and arrays nest deeper than max_json_depth ({max_depth})"


def nested_deeper(obj: Any, limit: int) -> bool:
    """Whether JSON objects and arrays nest more than ``limit`` levels in ``obj``.

    Iterative, so that no depth of input can raise ``RecursionError`` here.
    """
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if type(value) is dict else value
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _parse_op(msg: dict[str, Any]) -> Op | Attach:
    op = msg["op"]
    if type(op) is not str:
        raise ProtocolError(BAD_REQUEST, f"'op' must be a string, not {_json_type(op)}")
    allowed = OP_KEYS.get(op)
    if allowed is None:
        known = ", ".join(OP_KEYS)
        raise ProtocolError(UNKNOWN_OP, f"unknown op {_clip(op, 40)!r} (known: {known})")
    if not msg.keys() <= allowed:
        raise ProtocolError(BAD_REQUEST, f"op {op!r}: unknown key(s) {_unknown(msg, allowed)}")
    if op == "auth":
        token = msg.get("token")
        if type(token) is not str:
            raise ProtocolError(BAD_REQUEST, "auth: 'token' must be a string")
        return Op(op, token)
    if op == "task_status":
        tid = msg.get("tid")
        if type(tid) is int:
            tid = str(tid)
        if type(tid) is not str or not tid:
            raise ProtocolError(BAD_REQUEST, "task_status: 'tid' must be a non-empty string")
        return Op(op, tid)
    if op == "attach":
        return parse_attach(msg)
    return Op(op)


def parse_attach(msg: Mapping[str, Any]) -> Attach:
    """The ``attach`` header in ``msg`` (the TCP message, or the HTTP query with the
    body's length as ``size``); :class:`ProtocolError` if a field is missing or mistyped."""
    fields = []
    for key in ("test_location", "test_name", "name"):
        value = msg.get(key, "" if key == "test_location" else None)
        if type(value) is not str or (not value and key != "test_location"):
            raise ProtocolError(BAD_REQUEST, f"attach: {key!r} must be a non-empty string")
        fields.append(value)
    size = msg.get("size")
    if type(size) is not int or size < 0:
        raise ProtocolError(BAD_REQUEST, "attach: 'size' must be a whole number of bytes")
    run_id = msg.get("run_id")
    if run_id is not None and type(run_id) not in (str, int):
        raise ProtocolError(BAD_REQUEST, "attach: 'run_id' must be a string or null")
    return Attach(fields[0], fields[1], fields[2], size, None if run_id is None else str(run_id))


def _flag(msg: dict[str, Any], key: str) -> bool:
    value = msg.get(key, False)
    if type(value) is not bool:
        raise ProtocolError(BAD_REQUEST, f"'{key}' must be true or false, not {_json_type(value)}")
    return value


def _unknown(msg: dict[str, Any], allowed: frozenset[str]) -> str:
    return ", ".join(repr(_clip(k, 40)) for k in sorted(msg.keys() - allowed))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = ERROR_MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- framing -------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into frames ended by ``\\n`` or ``\\0``.

    ``feed`` returns the complete frames received so far; the unfinished rest is kept.
    :attr:`pending` is the size of that rest, which the server bounds.
    """

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        # Extended in place: a message trickling in costs O(its size), not O(size²).
        self._rest = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of the message not yet ended."""
        return len(self._rest)

    def feed(self, data: bytes) -> list[bytes]:
        """The frames that ``data`` completes, in order (blank ones included)."""
        if b"\0" in data:
            data = data.replace(b"\0", b"\n")
        rest = self._rest
        if b"\n" not in data:
            rest += data
            return []
        if rest:
            rest += data
            frames = bytes(rest).split(b"\n")
            rest.clear()
        else:
            frames = data.split(b"\n")
        tail = frames.pop()
        if tail:
            rest += tail
        return frames

    def finish(self) -> bytes:
        """The unended rest (at end of stream), emptied."""
        rest = bytes(self._rest)
        self._rest.clear()
        return rest


def is_blank(frame: bytes) -> bool:
    """True for a frame holding only whitespace: not a message, no reply."""
    return not frame or frame.isspace()


# -- replies --------------------------------------------------------------------------

OK_LINE: Final = b'{"ok":true}\n'


def duplicate_line(tid: str) -> bytes:
    """The reply to a fire whose ``id`` was accepted before, as ``tid``: not run again."""
    return reply_line({"ok": True, "tid": tid, "duplicate": True})


def ack_line(tid: str) -> bytes:
    """``{"ok":true,"tid":...}`` for an accepted fire."""
    if tid.isascii() and tid.replace("-", "").isalnum():  # nothing to escape: no encoder
        return b'{"ok":true,"tid":"' + tid.encode() + b'"}\n'
    return reply_line({"ok": True, "tid": tid})


def reply_line(reply: Mapping[str, Any]) -> bytes:
    """Encode a reply as one JSON line; raise ``TypeError``/``ValueError`` if it cannot be."""
    return _encode(reply).encode("ascii") + b"\n"


def error_reply(code: str, message: str, tid: str | None = None) -> dict[str, Any]:
    """The reply object for a failure."""
    reply: dict[str, Any] = {"ok": False}
    if tid is not None:
        reply["tid"] = tid
    reply["error"] = {"code": code, "message": _clip(message)}
    return reply


def error_line(code: str, message: str, tid: str | None = None) -> bytes:
    """:func:`error_reply` encoded as a line."""
    return reply_line(error_reply(code, message, tid))


def output_line(tid: str, output: Mapping[str, Any]) -> bytes:
    """The ``grab_result`` reply, or a ``not_serializable`` error naming the bad key."""
    try:
        return reply_line({"ok": True, "tid": tid, "output": output})
    except (TypeError, ValueError) as exc:
        return error_line(NOT_SERIALIZABLE, f"output {unserializable(output, exc)}", tid)


def unserializable(mapping: Mapping[str, Any], exc: BaseException) -> str:
    """Say which top-level key of ``mapping`` cannot be written as JSON, and why."""
    for key, value in mapping.items():
        try:
            _encode({key: value})
        except (TypeError, ValueError) as err:
            return f"key {key!r} is not JSON-serialisable: {err}"
    return f"is not JSON-serialisable: {exc}"


def encode_message(message: Mapping[str, Any]) -> bytes:
    """A client message as one line, for :class:`~rigger_mp.client.RiggerClient`."""
    return _encode(message).encode("ascii") + b"\n"


def encode_fire(
    hook_name: str, data: Mapping[str, Any], extra: Mapping[str, Any], fire_id: str | None = None
) -> bytes:
    """A fire message as one line; a ``TypeError`` saying what is wrong if it cannot be one.

    The client's checks, so that a bad event fails before anything is sent: the name, the
    data's type, then (only once encoding failed) which key is not a string or not JSON.
    Assembled from the encoded name, data and extra keys: encoding a dict wrapping them
    cost about twice as much (the encoder's per-call setup), once per event of
    ``fire_many``. ``fire_id``: the message's ``id`` (checked by the caller).
    """
    if not isinstance(hook_name, str) or not hook_name:
        raise TypeError(f"hook_name must be a non-empty string, not {hook_name!r}")
    if not isinstance(data, Mapping):
        raise TypeError(f"{hook_name!r}: data must be a mapping, not {type(data).__name__}")
    try:
        line = b'{"hook_name":' + _encode(hook_name).encode("ascii") + b',"data":'
        line += _encode(data).encode("ascii")
        if extra:
            line += b"," + _encode(extra).encode("ascii")[1:-1]
        if fire_id is None:
            pass
        elif fire_id.isascii() and fire_id.replace("-", "").isalnum():  # nothing to escape
            line += b',"id":"' + fire_id.encode("ascii") + b'"'
        else:
            line += b',"id":' + _encode(fire_id).encode("ascii")
    except (TypeError, ValueError) as exc:
        for key in data:
            if not isinstance(key, str):
                raise TypeError(
                    f"fire_hook({hook_name!r}): argument names must be strings, not {key!r}"
                ) from None
        raise TypeError(f"fire_hook({hook_name!r}): argument {unserializable(data, exc)}") from None
    return line + b"}\n"


def decode_reply(line: bytes) -> dict[str, Any]:
    """Parse a reply line (client side); raise :class:`ProtocolError` if it is not one."""
    try:
        reply = _decode(line.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"the server sent a line that is not JSON: {exc}") from None
    if type(reply) is not dict or type(reply.get("ok")) is not bool:
        raise ProtocolError(BAD_REQUEST, "the server sent a reply without a boolean 'ok'")
    return reply
