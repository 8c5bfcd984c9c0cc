"""The pipes between the main process and the server process, without a server."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

from rigger_mp.server.channel import HEADER_SIZE, BlockingReader, FrameReader, QueuedWriter, pack
from rigger_mp.server.pipe_messages import Replies

WAIT = 30.0


def read_all(reader: BlockingReader) -> list[Any]:
    """Every object until end-of-file, reply batches flattened to their ``(rid, line)``
    pairs (the writer may join them)."""
    got: list[Any] = []
    while True:
        try:
            objs = reader.recv()
        except EOFError:
            return got
        for obj in objs:
            got += list(zip(obj.rids, obj.lines, strict=True)) if type(obj) is Replies else [obj]


def replies(*rids: int) -> Replies:
    return Replies(list(rids), [b"%d" % rid for rid in rids])


def test_queued_writer_keeps_order_survives_a_bad_object_and_closes_its_pipe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r, w = os.pipe()
    reader, writer = BlockingReader(r), QueuedWriter(w)
    with caplog.at_level(logging.ERROR, logger="rigger_mp"):
        writer.send(replies(1))
        writer.send(replies(2, 3))
        writer.send(("fence", 1, False))
        writer.send(("bad", lambda: None))  # cannot be pickled: dropped, and said so
        writer.send(replies(4))
        writer.close()
        got = read_all(reader)  # end-of-file: the writer closed its end itself
        writer.join(WAIT)
    assert got == [(1, b"1"), (2, b"2"), (3, b"3"), ("fence", 1, False), (4, b"4")]
    assert any("cannot be pickled" in r.getMessage() for r in caplog.records)
    reader.close()
    reader.close()  # a second close does nothing (the number may be reused by then)
    assert not any(t.name == "rigger_mp-replies" for t in threading.enumerate())


def test_queued_writer_never_blocks_its_callers_on_a_full_pipe() -> None:
    r, w = os.pipe()
    reader, writer = BlockingReader(r), QueuedWriter(w)
    big = ["x" * 100_000] * 20  # 2 MB: far more than a pipe holds, nobody reading yet
    for _ in range(5):
        writer.send(big)  # returns at once: the writer thread waits, not us
    writer.close()
    got = read_all(reader)
    writer.join(WAIT)
    reader.close()
    assert got == [big] * 5


def test_reply_batches_join_in_order() -> None:
    joined = Replies.join([replies(1), replies(), replies(2, 3)])
    assert joined == Replies([1, 2, 3], [b"1", b"2", b"3"])


def test_a_frame_that_does_not_unpickle_is_dropped_alone(caplog: pytest.LogCaptureFixture) -> None:
    bad = bytearray(pack(["lost"]))
    bad[HEADER_SIZE:] = b"\xff" * (len(bad) - HEADER_SIZE)  # same length, not a pickle
    stream = pack(["before"]) + bytes(bad) + pack(["after"])
    with caplog.at_level(logging.ERROR, logger="rigger_mp"):
        assert FrameReader().feed(stream) == [["before"], ["after"]]
    assert any("does not unpickle" in r.getMessage() for r in caplog.records)
