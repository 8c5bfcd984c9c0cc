"""The wire protocol without sockets: framing, validation, error codes, reply encoding."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import protocol as proto
from rigger_mp.server.channel import FrameReader, pack


def test_newline_and_nul_both_end_a_message() -> None:
    framer = proto.Framer()
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.pending == 4
    assert framer.feed(b':2}\0{"c":3}\n\0') == [b'{"b":2}', b'{"c":3}', b""]
    assert framer.pending == 0


def test_a_message_split_byte_by_byte_is_reassembled() -> None:
    framer = proto.Framer()
    frames: list[bytes] = []
    for byte in b'{"op":"ping"}\n':
        frames += framer.feed(bytes([byte]))
    assert frames == [b'{"op":"ping"}']


def test_unended_rest_is_returned_by_finish() -> None:
    framer = proto.Framer()
    assert framer.feed(b'{"op":"ping"}') == []
    assert framer.finish() == b'{"op":"ping"}'
    assert framer.pending == 0


@pytest.mark.parametrize("frame", [b"", b" ", b"\r", b"\t \r"])
def test_blank_frames_are_not_messages(frame: bytes) -> None:
    assert proto.is_blank(frame)


def test_fire_parses_with_defaults_and_modes() -> None:
    fire = proto.parse(b'{"hook_name": "start_test", "data": {"test_name": "t"}}\r')
    assert fire == proto.Fire("start_test", {"test_name": "t"}, proto.ACK)
    assert proto.parse(b'{"hook_name": "x"}') == proto.Fire("x", {}, proto.ACK)
    grab = proto.parse(b'{"hook_name": "x", "grab_result": true, "wait_for_task": true}')
    assert isinstance(grab, proto.Fire) and grab.mode == proto.GRAB
    wait = proto.parse(b'{"hook_name": "x", "wait_for_task": true, "grab_result": false}')
    assert isinstance(wait, proto.Fire) and wait.mode == proto.WAIT


@pytest.mark.parametrize(
    ("hook_name", "data", "extra", "mode"),
    [
        ("ev", {"x": 1}, {}, proto.ACK),
        ('a\u00e9"b', {"k": [1, {"z": None}], "u": "\u2603"}, {"grab_result": True}, proto.GRAB),
        ("ev", {}, {"wait_for_task": True}, proto.WAIT),
    ],
)
def test_encode_fire_is_one_json_line_that_parses_back(
    hook_name: str, data: dict[str, object], extra: dict[str, bool], mode: int
) -> None:
    line = proto.encode_fire(hook_name, data, extra)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert json.loads(line) == {"hook_name": hook_name, "data": data, **extra}
    assert proto.parse(line[:-1]) == proto.Fire(hook_name, data, mode)


@pytest.mark.parametrize(
    ("hook_name", "data", "words"),
    [
        ("", {}, "hook_name must be a non-empty string, not ''"),
        (3, {}, "hook_name must be a non-empty string, not 3"),
        ("ev", [("x", 1)], "'ev': data must be a mapping, not list"),
        ("ev", {(1, 2): "x"}, "fire_hook('ev'): argument names must be strings, not (1, 2)"),
        ("ev", {"ok": 1, "when": object()}, "fire_hook('ev'): argument key 'when' is not JSON"),
        ("ev", {"ratio": float("nan")}, "fire_hook('ev'): argument key 'ratio' is not JSON"),
    ],
)
def test_encode_fire_refuses_what_cannot_be_a_fire_with_a_type_error(
    hook_name: Any, data: Any, words: str
) -> None:
    with pytest.raises(TypeError) as info:
        proto.encode_fire(hook_name, data, {})
    assert str(info.value).startswith(words)


def test_ops_parse() -> None:
    assert proto.parse(b'{"op": "ping"}') == proto.Op("ping")
    assert proto.parse(b'{"op": "auth", "token": "s"}') == proto.Op("auth", "s")
    assert proto.parse(b'{"op": "task_status", "tid": "7"}') == proto.Op("task_status", "7")
    assert proto.parse(b'{"op": "task_status", "tid": 7}') == proto.Op("task_status", "7")
    assert proto.parse(b'{"op": "stats"}') == proto.Op("stats")
    assert proto.parse(b'{"op": "terminate"}') == proto.Op("terminate")


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (b"{not json", proto.BAD_JSON, "invalid JSON"),
        (b'{"hook_name": "x"} trailing', proto.BAD_JSON, "Extra data"),
        (b"\xff\xfe\x00garbage", proto.BAD_JSON, "not UTF-8"),
        (b'{"hook_name": "x", "data": {"v": NaN}}', proto.BAD_JSON, "NaN"),
        (b"[" * 100_000, proto.BAD_REQUEST, "max_json_depth"),
        (b"[1, 2]", proto.BAD_REQUEST, "an array"),
        (b"42", proto.BAD_REQUEST, "a number"),
        (b'"text"', proto.BAD_REQUEST, "a string"),
        (b"null", proto.BAD_REQUEST, "null"),
        (b'{"data": {}}', proto.BAD_REQUEST, "missing 'hook_name'"),
        (b'{"hook_name": 3}', proto.BAD_REQUEST, "non-empty string"),
        (b'{"hook_name": ""}', proto.BAD_REQUEST, "non-empty string"),
        (b'{"hook_name": "x", "data": [1]}', proto.BAD_REQUEST, "'data' must be an object"),
        (b'{"hook_name": "x", "grab_results": true}', proto.BAD_REQUEST, "grab_results"),
        (b'{"hook_name": "x", "grab_result": 1}', proto.BAD_REQUEST, "true or false"),
        (b'{"op": "fly"}', proto.UNKNOWN_OP, "unknown op"),
        (b'{"op": 1}', proto.BAD_REQUEST, "'op' must be a string"),
        (b'{"op": "ping", "x": 1}', proto.BAD_REQUEST, "'x'"),
        (b'{"op": "auth"}', proto.BAD_REQUEST, "token"),
        (b'{"op": "task_status"}', proto.BAD_REQUEST, "tid"),
    ],
)
def test_bad_messages_get_stable_codes(frame: bytes, code: str, words: str) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse(frame)
    assert info.value.code == code
    assert words in info.value.message
    assert code in proto.ERROR_CODES


def test_ack_line_matches_the_json_encoder() -> None:
    for tid in ("1", "123456", "tcp1-17", 'a"b', "a\\b", "é", "²", "a-\n"):
        assert proto.ack_line(tid) == proto.reply_line({"ok": True, "tid": tid})
        assert json.loads(proto.ack_line(tid)) == {"ok": True, "tid": tid}


def test_error_line_shape_and_message_limit() -> None:
    reply = json.loads(proto.error_line(proto.HOOK_FAILED, "x" * 5000, "9"))
    assert reply["ok"] is False and reply["tid"] == "9"
    assert reply["error"]["code"] == "hook_failed"
    assert len(reply["error"]["message"]) <= proto.ERROR_MESSAGE_LIMIT


def test_output_that_is_not_json_is_an_error_naming_the_key() -> None:
    line = proto.output_line("4", {"fine": 1, "handle": object()})
    reply = json.loads(line)
    assert reply["ok"] is False
    assert reply["error"]["code"] == proto.NOT_SERIALIZABLE
    assert "'handle'" in reply["error"]["message"]
    nan = json.loads(proto.output_line("5", {"x": math.nan}))
    assert nan["error"]["code"] == proto.NOT_SERIALIZABLE and "'x'" in nan["error"]["message"]


def test_output_line_round_trips() -> None:
    reply = json.loads(proto.output_line("4", {"a": [1, {"b": None}], "ü": "ß"}))
    assert reply == {"ok": True, "tid": "4", "output": {"a": [1, {"b": None}], "ü": "ß"}}


def test_decode_reply_rejects_non_replies() -> None:
    assert proto.decode_reply(b'{"ok": true}') == {"ok": True}
    for line in (b"nonsense", b"[1]", b'{"ok": 1}'):
        with pytest.raises(proto.ProtocolError):
            proto.decode_reply(line)


def test_channel_frames_survive_any_split() -> None:
    objs = [[(1, 0, "ev", {"i": i}, 0)] for i in range(50)] + ["stop"]
    stream = b"".join(pack(o) for o in objs)
    for step in (1, 7, 4096, len(stream)):
        reader = FrameReader()
        got = []
        for pos in range(0, len(stream), step):
            got += reader.feed(stream[pos : pos + step])
        assert got == objs


def test_every_error_code_is_in_protocol_and_the_docs() -> None:
    """One place for the codes: each code a client can meet (TCP or HTTP) is in
    ERROR_CODES, and the docs' table of codes lists each of them."""
    page = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `([a-z_]+)` \| ", page, re.MULTILINE))
    assert set(proto.ERROR_CODES) <= table, set(proto.ERROR_CODES) - table
    assert proto.TOO_MANY_CONNECTIONS == "too_many_connections"
    http = pytest.importorskip("rigger_mp.server.http", exc_type=ImportError)
    assert set(http.STATUS_OF) <= set(proto.ERROR_CODES)
