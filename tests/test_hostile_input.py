"""Hostile input at the parsing layer: deep nesting, long hook names, frames that trickle in."""

from __future__ import annotations

import json
import pickle

import pytest

from rigger_mp import protocol as proto
from rigger_mp.server.channel import FrameReader, pack
from tests._tcp import Raw, make_rigger, port_of


def nested(depth: int) -> bytes:
    """A fire whose data nests ``depth`` levels in all (the message object counts as one)."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return ('{"hook_name":"ev","data":{"x":' + inner + "}}").encode()


def test_nesting_up_to_the_limit_parses_and_pickles() -> None:
    msg = proto.parse(nested(proto.MAX_JSON_DEPTH))
    assert isinstance(msg, proto.Fire)
    pickle.dumps(msg.data)


@pytest.mark.parametrize("depth", [proto.MAX_JSON_DEPTH + 1, 300, 600, 2_000, 100_000])
def test_nesting_past_the_limit_is_bad_request_before_anything_is_pickled(depth: int) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse(nested(depth))
    assert info.value.code == proto.BAD_REQUEST
    assert "max_json_depth" in info.value.message


def test_deep_nesting_inside_an_op_is_refused_too() -> None:
    frame = b'{"op":"ping","x":' + b"[" * 200 + b"]" * 200 + b"}"
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse(frame)
    assert info.value.code == proto.BAD_REQUEST


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    data = {"log": "[" * 10_000 + "{" * 10_000}
    msg = proto.parse(json.dumps({"hook_name": "ev", "data": data}).encode())
    assert isinstance(msg, proto.Fire) and msg.data == data


def test_nested_deeper_walks_wide_structures_without_recursion() -> None:
    wide: list[object] = [[[] for _ in range(1000)] for _ in range(10)]
    assert not proto.nested_deeper({"a": wide}, 4)
    assert proto.nested_deeper({"a": wide}, 3)


def test_a_hook_name_longer_than_the_limit_is_bad_request() -> None:
    ok = json.dumps({"hook_name": "h" * proto.MAX_HOOK_NAME}).encode()
    assert isinstance(proto.parse(ok), proto.Fire)
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse(json.dumps({"hook_name": "h" * (proto.MAX_HOOK_NAME + 1)}).encode())
    assert info.value.code == proto.BAD_REQUEST
    assert "max_hook_name_length" in info.value.message


def test_the_limits_are_parameters() -> None:
    with pytest.raises(proto.ProtocolError):
        proto.parse(b'{"hook_name":"abcd"}', max_hook_name=3)
    with pytest.raises(proto.ProtocolError):
        proto.parse(b'{"hook_name":"a","data":{"x":[[]]}}', max_depth=3)
    assert isinstance(proto.parse(b'{"hook_name":"a","data":{"x":[[]]}}', max_depth=4), proto.Fire)


def test_framer_extends_an_unfinished_message_in_place() -> None:
    """A message trickling in is appended to one buffer (linear), never re-copied per read."""
    framer = proto.Framer()
    framer.feed(b'{"hook_name":')
    buffer = framer._rest  # the test looks inside: identity is the property
    for _ in range(100):
        assert framer.feed(b'"') == []
        assert framer._rest is buffer
    assert framer.pending == len(b'{"hook_name":') + 100


def test_framer_reassembles_across_many_small_reads() -> None:
    framer = proto.Framer()
    stream = b'{"op":"ping"}\n' * 3 + b'{"hook_name":"' + b"x" * 5000 + b'"}\0tail'
    frames: list[bytes] = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert frames == [b'{"op":"ping"}'] * 3 + [b'{"hook_name":"' + b"x" * 5000 + b'"}']
    assert framer.finish() == b"tail"
    assert framer.pending == 0


def test_frame_reader_extends_an_unfinished_frame_in_place() -> None:
    reader = FrameReader()
    payload = b"y" * 100_000
    frame = pack(payload)
    buffer = reader._buf  # identity is the property: no concatenation per read
    cut = len(frame) - 10
    for i in range(0, cut, 1000):
        assert reader.feed(frame[i : min(i + 1000, cut)]) == []
        assert reader._buf is buffer
    assert reader.feed(frame[cut:]) == [payload]
    assert len(reader._buf) == 0


def test_frame_reader_reassembles_frames_split_anywhere() -> None:
    objs = [{"n": n, "pad": "z" * (n * 37 % 3000)} for n in range(50)]
    stream = b"".join(pack(o) for o in objs)
    reader = FrameReader()
    out: list[object] = []
    for size in (1, 3, 4096):
        reader = FrameReader()
        out = []
        for i in range(0, len(stream), size):
            out += reader.feed(stream[i : i + size])
        assert out == objs


def test_deep_nesting_over_tcp_gets_its_own_reply_and_the_rest_of_the_read_theirs() -> None:
    """One read holding a too-deep fire between two good ones: three replies, in order."""
    rigger = make_rigger()
    try:
        with Raw(port_of(rigger)) as raw:
            good = b'{"hook_name":"count","data":{"c":1},"wait_for_task":true}\n'
            raw.send(good + nested(500) + b"\n" + good)
            first, bad, last = raw.reply(), raw.reply(), raw.reply()
            assert first["ok"] and last["ok"]
            assert not bad["ok"] and bad["error"]["code"] == proto.BAD_REQUEST
            assert raw.request({"op": "ping"}) == {"ok": True}
        with Raw(port_of(rigger)) as fresh:
            assert fresh.request({"op": "ping"}) == {"ok": True}
    finally:
        rigger.stop()
