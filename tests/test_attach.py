"""``attach``: files uploaded over the wire into a test's artifact directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from rigger_mp import Rigger
from rigger_mp.client import RemoteError, RiggerClient
from rigger_mp.plugins import artifacts
from rigger_mp.server.supervisor import _child_env

from ._tcp import HOST, WAIT, Raw, port_of, server_pid

MIB = 1024 * 1024


def serving(root: Path, **config: Any) -> Rigger:
    """A started Rigger whose TCP server takes uploads into ``root``."""
    root.mkdir(exist_ok=True)
    settings: dict[str, Any] = {"server_enabled": True, "server_address": HOST, "server_port": 0}
    settings.update(config)
    rigger = Rigger(settings)
    artifacts.install(rigger, root)
    return rigger.start()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def rigger(root: Path) -> Iterator[Rigger]:
    started = serving(root)
    yield started
    started.stop()


def header(size: int, name: str = "a.bin", **extra: Any) -> dict[str, Any]:
    message = {"op": "attach", "test_location": "t/test_a.py", "test_name": "test_x"}
    return {**message, "name": name, "size": size, **extra}


def files_under(path: Path) -> list[str]:
    """Every entry below ``path`` (temporary files too), relative, sorted."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far (``VmHWM``), in bytes: no sampling needed."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


CLIENT = """
import json, sys
from rigger_mp import RiggerClient
client = RiggerClient("127.0.0.1", int(sys.argv[1]), timeout=120)
reply = client.attach("tests/test_big.py", "test_it[1]", "shots/big.bin", "big.bin", run_id="r1")
print(json.dumps(reply))
"""


def test_a_100_mib_file_from_another_process_arrives_whole_with_memory_flat(
    tmp_path: Path, root: Path, rigger: Rigger
) -> None:
    elsewhere = tmp_path / "elsewhere"  # the client's cwd: it shares no path with the server
    elsewhere.mkdir()
    digest = hashlib.sha256()
    with open(elsewhere / "big.bin", "wb") as out:
        for _ in range(100):
            chunk = os.urandom(MIB)
            digest.update(chunk)
            out.write(chunk)
    server, main = server_pid(rigger), os.getpid()
    server_before, main_before = peak_rss(server), peak_rss(main)
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port_of(rigger))],
        cwd=elsewhere,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    server_growth = peak_rss(server) - server_before
    main_growth = peak_rss(main) - main_before
    reply = json.loads(done.stdout)
    test_dir = artifacts.artifact_dir(root, "tests/test_big.py", "test_it[1]", "r1")
    target = test_dir / "shots" / "big.bin"
    assert reply == {
        "ok": True,
        "path": target.relative_to(root).as_posix(),
        "size": 100 * MIB,
        "sha256": digest.hexdigest(),
    }
    arrived = hashlib.sha256()
    with open(target, "rb") as stream:
        for chunk in iter(lambda: stream.read(MIB), b""):
            arrived.update(chunk)
    assert arrived.hexdigest() == digest.hexdigest()
    assert files_under(test_dir) == ["shots", "shots/big.bin"]  # no temporary file left
    assert server_growth <= 20 * MIB, server_growth
    assert main_growth <= 20 * MIB, main_growth


def test_the_directory_is_the_one_the_tests_events_name(root: Path, rigger: Rigger) -> None:
    client = RiggerClient(HOST, port_of(rigger))
    try:
        reply = client.attach("a/b.py", "test_c[x/y]", "log.txt", b"text", run_id="run 1")
        output = client.fire_hook(
            "start_test",
            test_location="a/b.py",
            test_name="test_c[x/y]",
            run_id="run 1",
            grab_result=True,
        )
    finally:
        client.close()
    assert Path(output["artifact_path"]) / "log.txt" == root / reply["path"]
    assert (root / reply["path"]).read_bytes() == b"text"


@pytest.mark.parametrize("name", ["../escape.txt", "shots/../../escape.txt", "/tmp/abs.txt"])
def test_a_name_that_climbs_out_or_is_absolute_is_refused(
    root: Path, rigger: Rigger, name: str
) -> None:
    with Raw(port_of(rigger)) as raw:
        reply = raw.request(header(4, name))
        assert reply["error"]["code"] == "bad_request", reply
        assert raw.wait_closed() == b""  # the bytes that may follow are never read
    assert files_under(root) == []


def test_a_link_planted_inside_the_root_is_not_followed(
    tmp_path: Path, root: Path, rigger: Rigger
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    test_dir = artifacts.artifact_dir(root, "t/test_a.py", "test_x")
    test_dir.mkdir(parents=True)
    (test_dir / "shots").symlink_to(outside)
    (test_dir / "log.txt").symlink_to(outside / "log.txt")
    client = RiggerClient(HOST, port_of(rigger))
    try:
        for name in ("shots/a.png", "log.txt"):
            with pytest.raises(RemoteError) as refused:
                client.attach("t/test_a.py", "test_x", name, b"data")
            assert refused.value.code == "bad_request"
            assert "symbolic link" in refused.value.message
    finally:
        client.close()
    assert list(outside.iterdir()) == []
    assert files_under(test_dir) == ["log.txt", "shots"]  # the links, and nothing else


def test_a_size_over_the_limit_is_refused_before_the_bytes_are_sent(tmp_path: Path) -> None:
    rigger = serving(tmp_path / "root", max_attach_bytes=1000)
    try:
        with Raw(port_of(rigger)) as raw:
            reply = raw.request(header(1001))  # no byte of the file sent yet
            assert reply["error"]["code"] == "too_large"
            assert "max_attach_bytes (1000)" in reply["error"]["message"]
            with contextlib.suppress(OSError):  # sent anyway: never read, the connection closes
                raw.send(b"x" * 1001)
            assert raw.wait_closed() == b""
        client = RiggerClient(HOST, port_of(rigger))
        try:
            assert client.attach("l", "t", "ok.bin", b"x" * 1000)["size"] == 1000
            with pytest.raises(RemoteError) as refused:
                client.attach("l", "t", "big.bin", b"x" * 5 * MIB)
            assert refused.value.code == "too_large"
            assert client.ping()  # on a new connection
        finally:
            client.close()
    finally:
        rigger.stop()
    assert files_under(tmp_path / "root" / "l" / "t") == ["ok.bin"]


def test_a_run_past_max_run_bytes_is_refused_quota_exceeded(tmp_path: Path) -> None:
    rigger = serving(tmp_path / "root", max_run_bytes=1000)
    client = RiggerClient(HOST, port_of(rigger))
    try:
        client.attach("l", "t", "a.bin", b"x" * 600, run_id="r1")
        with pytest.raises(RemoteError) as refused:
            client.attach("l", "t", "b.bin", b"x" * 600, run_id="r1")
        assert refused.value.code == "quota_exceeded"
        assert client.attach("l", "t", "b.bin", b"x" * 600, run_id="r2")["size"] == 600
        assert client.attach("l", "t", "c.bin", b"x" * 400, run_id="r1")["size"] == 400
    finally:
        client.close()
        rigger.stop()
    assert not (tmp_path / "root" / "r1" / "l" / "t" / "b.bin").exists()


def test_an_upload_that_would_pass_the_free_disk_floor_is_refused_disk_full(
    tmp_path: Path,
) -> None:
    # A floor above any disk's size: the space free, shared with others, changes meanwhile.
    rigger = serving(tmp_path / "root", min_free_disk_bytes=2**62)
    client = RiggerClient(HOST, port_of(rigger))
    try:
        with pytest.raises(RemoteError) as refused:
            client.attach("l", "t", "a.bin", b"x")
        assert refused.value.code == "disk_full"
    finally:
        client.close()
        rigger.stop()
    assert files_under(tmp_path / "root") == []


def test_a_disk_that_fills_while_writing_is_disk_full_and_keeps_nothing(
    tiny_disk: Path,
) -> None:
    rigger = serving(tiny_disk / "root", min_free_disk_bytes=0)
    free = psutil.disk_usage(str(tiny_disk)).free
    codes = []
    try:
        # Each upload passes the free-space check alone; together they do not fit.
        with Raw(port_of(rigger)) as first, RiggerClient(HOST, port_of(rigger)) as second:
            first.send(json.dumps(header(free, "first.bin")).encode() + b"\n" + b"x" * (free // 2))
            try:
                second.attach("t/test_a.py", "test_x", "second.bin", b"y" * free)
            except RemoteError as exc:
                codes.append(exc.code)
            with contextlib.suppress(OSError):  # closed once refused
                first.send(b"x" * (free - free // 2))
            reply = first.reply()
            if not reply["ok"]:
                codes.append(reply["error"]["code"])
    finally:
        rigger.stop()
    assert codes and set(codes) == {"disk_full"}  # one, or both if their writes interleaved
    kept = files_under(tiny_disk / "root" / "t" / "test_a.py" / "test_x")
    assert len(kept) == 2 - len(codes) and not [k for k in kept if ".part-" in k]


def test_a_half_closed_upload_is_answered_and_leaves_nothing(root: Path, rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as raw:
        raw.send(json.dumps(header(10 * MIB)).encode() + b"\n" + b"x" * 3 * MIB)
        raw.sock.shutdown(socket.SHUT_WR)
        reply = raw.reply()
        assert reply["error"]["code"] == "bad_request"
        assert "short" in reply["error"]["message"]
    rigger.stop()  # the server process ends once its writer threads have cleaned up
    assert files_under(root / "t" / "test_a.py" / "test_x") == []


def test_a_connection_cut_mid_upload_leaves_no_file_and_no_temporary_file(
    root: Path, rigger: Rigger
) -> None:
    raw = Raw(port_of(rigger))
    raw.send(json.dumps(header(10 * MIB)).encode() + b"\n" + b"x" * 3 * MIB)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # a reset
    raw.close()
    with Raw(port_of(rigger)) as other:  # the server goes on serving
        assert other.request({"op": "ping"}) == {"ok": True}
    rigger.stop()
    assert files_under(root / "t" / "test_a.py" / "test_x") == []


def test_without_the_token_attach_is_refused_and_closed(tmp_path: Path) -> None:
    rigger = serving(tmp_path / "root", server_token="s3cret")
    try:
        with Raw(port_of(rigger)) as raw:
            reply = raw.request(header(4))
            assert reply["error"]["code"] == "unauthorized"
            assert raw.wait_closed() == b""
        with RiggerClient(HOST, port_of(rigger), token="s3cret") as client:
            assert client.attach("l", "t", "a.txt", b"data")["size"] == 4
    finally:
        rigger.stop()
    assert files_under(tmp_path / "root") == ["l", "l/t", "l/t/a.txt"]


def test_an_escaped_attach_with_bytes_framed_after_it_is_refused(
    root: Path, rigger: Rigger
) -> None:
    with Raw(port_of(rigger)) as raw:
        line = b'{"op":"\\u0061ttach","test_name":"t","name":"a","size":4}\nabcd\n'
        reply = raw.request(line)
        assert reply["error"]["code"] == "bad_request"
        assert raw.wait_closed() == b""
    assert files_under(root) == []


def test_messages_after_an_upload_on_one_connection_are_served_in_order(
    root: Path, rigger: Rigger
) -> None:
    body = b'\0\n{"hook_name": "x"}\n\0'  # delimiters inside the file are its bytes
    with Raw(port_of(rigger)) as raw:
        raw.send(
            b'{"op": "ping"}\n'
            + json.dumps(header(len(body), "b.bin")).encode()
            + b"\n"
            + body
            + b'{"op": "ping"}\n'
            + json.dumps(header(3, "c.bin")).encode()
            + b"\nabc"
        )
        assert raw.reply() == {"ok": True}
        assert raw.reply()["size"] == len(body)
        assert raw.reply() == {"ok": True}
        assert raw.reply()["sha256"] == hashlib.sha256(b"abc").hexdigest()
    test_dir = root / "t" / "test_a.py" / "test_x"
    assert (test_dir / "b.bin").read_bytes() == body
    assert (test_dir / "c.bin").read_bytes() == b"abc"


def test_a_header_split_between_reads_still_starts_an_upload(root: Path, rigger: Rigger) -> None:
    line = json.dumps(header(5, "split.bin")).encode()
    with Raw(port_of(rigger)) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.send(line[:12])
        raw.send(line[12:] + b"\n\0\0\n\0\0")
        assert raw.reply()["size"] == 5
    assert (root / "t" / "test_a.py" / "test_x" / "split.bin").read_bytes() == b"\0\0\n\0\0"


def test_other_clients_fire_while_an_upload_waits_for_its_bytes(root: Path, rigger: Rigger) -> None:
    with Raw(port_of(rigger)) as uploading:
        uploading.send(json.dumps(header(10 * MIB)).encode() + b"\n" + b"x" * MIB)
        with RiggerClient(HOST, port_of(rigger)) as client:
            assert client.fire_many([("e", {"i": i}) for i in range(100)])
        uploading.send(b"x" * 9 * MIB)
        assert uploading.reply()["size"] == 10 * MIB


def test_with_a_journal_the_upload_is_fsynced_and_counted(tmp_path: Path) -> None:
    rigger = serving(tmp_path / "root", journal=str(tmp_path / "j.sqlite"))
    try:
        with RiggerClient(HOST, port_of(rigger)) as client:
            reply = client.attach("l", "t", "a.txt", b"durable")
            process = client.stats()["server"]["process"]
        assert (tmp_path / "root" / reply["path"]).read_bytes() == b"durable"
        assert process["uploads"]["completed"] == 1 and process["uploads"]["bytes"] == 7
    finally:
        rigger.stop()


def test_rigger_mp_attach_uploads_a_file(tmp_path: Path, root: Path, rigger: Rigger) -> None:
    (tmp_path / "shot.png").write_bytes(b"png")
    command = [sys.executable, "-m", "rigger_mp", "attach", "shot.png", "--port"]
    done = subprocess.run(
        [
            *command,
            str(port_of(rigger)),
            "--test",
            "tests/a.py::test_b",
            "--name",
            "s/1.png",
            "--run-id",
            "r",
        ],
        cwd=tmp_path,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("r/tests/a.py/test_b/s/1.png 3 bytes sha256 ")
    assert (root / "r" / "tests" / "a.py" / "test_b" / "s" / "1.png").read_bytes() == b"png"
    bad = subprocess.run(
        [*command, str(port_of(rigger)), "--test", "no-separator"],
        cwd=tmp_path,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert bad.returncode == 2 and "LOCATION::NAME" in bad.stderr


class Owner:
    """An :class:`~rigger_mp.server.uploads.UploadOwner` that records what it is told."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.room: asyncio.Future[None] = loop.create_future()
        self.replies: list[bytes] = []

    def upload_room(self) -> None:
        if not self.room.done():
            self.room.set_result(None)

    def upload_done(self, line: bytes, ok: bool) -> None:
        self.replies.append(line)


def test_an_upload_refused_room_among_all_uploads_is_woken_once_there_is(
    tmp_path: Path,
) -> None:
    from rigger_mp.protocol import Attach
    from rigger_mp.server.pipe_messages import ServerSettings
    from rigger_mp.server.uploads import TOTAL_BUFFER, UPLOAD_BUFFER, Uploads

    loop = asyncio.new_event_loop()
    settings = ServerSettings(None, 1 << 20, 60.0, artifacts_root=str(tmp_path))
    uploads = Uploads(loop, replace(settings, min_free_disk_bytes=0))
    uploads.executor = ThreadPoolExecutor(1)
    gate = threading.Event()
    uploads.executor.submit(gate.wait, WAIT)  # the writer is busy: nothing drains
    try:
        first, second = Owner(loop), Owner(loop)
        big = uploads.begin(Attach("l", "t", "big", TOTAL_BUFFER + 1, None), first)
        for _ in range(TOTAL_BUFFER // UPLOAD_BUFFER):
            big.feed(b"x" * UPLOAD_BUFFER)  # past its own room: its owner would have paused
        small = uploads.begin(Attach("l", "t", "small", 10, None), second)
        assert not small.wants  # no room among all uploads, none of it its own
        gate.set()
        loop.run_until_complete(asyncio.wait_for(second.room, WAIT))
        assert small.wants
        big.cut()
        small.feed(b"0123456789")
        loop.run_until_complete(asyncio.wait_for(asyncio.gather(big.settled, small.settled), WAIT))
    finally:
        gate.set()
        uploads.close()
        loop.close()
    assert json.loads(second.replies[0])["size"] == 10 and first.replies == []
    assert files_under(tmp_path / "l" / "t") == ["small"]
