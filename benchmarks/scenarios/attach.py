"""Uploads (``attach``): one big file against a bare socket copy, many small files from
many clients, and what those uploads cost other clients' events.

- ``attach.one_file``: one file (256 MiB; 16 with ``--quick``) uploaded over loopback
  into a dispatcher with a journal (so the file is fsynced before its ``ok``), against a
  bare copy: a Python loopback TCP socket pair, the receiving thread writing the same
  bytes to a file, fsynced at the end. Target: rigger_mp at least 0.5x the bare copy.
- ``attach.many``: 16 clients (threads of one client process, a connection each) upload
  1,000 files of 200 KB each (20 with ``--quick``): the throughput, and each upload's
  latency at p50 and p99.
- ``attach.fires``: TCP ``fire_many`` from 4 other clients (another process) while the
  16 clients upload, against the same fires alone. Target: at least 0.7x.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from benchmarks.harness import (
    SUBJECT,
    Measurement,
    RunContext,
    Scenario,
    Target,
    interleaved,
    percentile,
)
from rigger_mp import Rigger, RiggerClient
from rigger_mp.plugins import artifacts

MIB: Final = 1024 * 1024
CHILD: Final = Path(__file__).resolve().parent / "_attach_child.py"
BARE: Final = "bare socket copy (loopback TCP, fsync at the end)"
ALONE: Final = "the same fires, no uploads"
CLIENTS: Final = 16
FILE_SIZE: Final = 200_000
FIRE_CLIENTS: Final = 4
RECV: Final = 256 * 1024


def _dispatcher(root: Path, journal: bool) -> Rigger:
    config: dict[str, Any] = {"server_enabled": True, "server_port": 0}
    if journal:
        config["journal"] = str(root / "journal.sqlite")
    rigger = Rigger(config)
    artifacts.install(rigger, root / "art")
    (root / "art").mkdir(exist_ok=True)
    return rigger.start()


def _bare_copy(source: Path, target: Path) -> Callable[[], float]:
    """Seconds to send ``source`` over a loopback TCP pair into ``target``, fsynced."""

    def sample() -> float:
        listener = socket.create_server(("127.0.0.1", 0))
        size = source.stat().st_size

        def receive() -> None:
            conn, _ = listener.accept()
            buffer = bytearray(RECV)
            view = memoryview(buffer)
            with conn, open(target, "wb") as out:
                left = size
                while left:
                    n = conn.recv_into(view)
                    if not n:
                        raise ConnectionError("the sender went away")
                    out.write(view[:n])
                    left -= n
                out.flush()
                os.fsync(out.fileno())
                conn.sendall(b"ok\n")

        start = time.perf_counter()
        thread = threading.Thread(target=receive)
        thread.start()
        with socket.create_connection(listener.getsockname()) as sock, open(source, "rb") as f:
            sock.sendfile(f)
            assert sock.recv(3) == b"ok\n"
        thread.join()
        listener.close()
        return time.perf_counter() - start

    return sample


def _upload(client: RiggerClient, source: Path) -> Callable[[], float]:
    def sample() -> float:
        start = time.perf_counter()
        client.attach("bench.py", "one_file", "big.bin", source)
        return time.perf_counter() - start

    return sample


def one_file(ctx: RunContext) -> list[Measurement]:
    name, unit = "attach.one_file", "MB/s"
    size = ctx.pick(256, 16) * MIB
    metric = f"one {size // MIB} MiB file over loopback, on disk and fsynced"
    with tempfile.TemporaryDirectory(prefix="rigger-bench-attach-") as tmp:
        root = Path(tmp)
        source = root / "source.bin"
        with open(source, "wb") as out:
            for _ in range(size // MIB):
                out.write(os.urandom(MIB))
        rigger = _dispatcher(root, journal=True)
        assert rigger.server_port is not None
        client = RiggerClient("127.0.0.1", rigger.server_port, timeout=600)
        try:
            got = interleaved(
                {
                    SUBJECT: _upload(client, source),
                    BARE: _bare_copy(source, root / "bare.bin"),
                },
                ctx.repeats,
            )
        finally:
            client.close()
            rigger.stop()
    rates = {s: [size / 1e6 / t for t in samples] for s, samples in got.items()}
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            rates[SUBJECT],
            True,
            note="RiggerClient.attach of a path (sendfile), journal on",
            targets=(Target(">=", 0.5, BARE),),
        ),
        Measurement(name, metric, BARE, unit, rates[BARE], True),
    ]


class Child:
    """A client process of :mod:`._attach_child`, connected and waiting for ``go``."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the benchmark client {args[0]} did not start")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=1800)
        if self.proc.returncode != 0:
            raise RuntimeError(f"a benchmark client failed (exit {self.proc.returncode})")
        result: dict[str, Any] = json.loads(out)
        return result


def _uploads(port: int, files: int, run_id: str) -> Child:
    return Child("upload", str(port), str(CLIENTS), str(files), str(FILE_SIZE), run_id)


def many(ctx: RunContext) -> list[Measurement]:
    name = "attach.many"
    files = ctx.pick(1_000, 20)
    total = CLIENTS * files
    with tempfile.TemporaryDirectory(prefix="rigger-bench-attach-") as tmp:
        rigger = _dispatcher(Path(tmp), journal=False)
        assert rigger.server_port is not None
        throughput: list[float] = []
        latencies: list[float] = []
        try:
            for r in range(ctx.repeats):
                child = _uploads(rigger.server_port, files, f"many{r}")
                child.go()
                result = child.result()
                assert len(result["latencies"]) == total, "some uploads failed"
                throughput.append(total * FILE_SIZE / 1e6 / result["seconds"])
                latencies.extend(result["latencies"])
                shutil.rmtree(Path(tmp) / "art" / f"many{r}")
        finally:
            rigger.stop()
    note = f"{CLIENTS} clients x {files} files of {FILE_SIZE // 1000} KB, journal off"
    per_upload = f"latency of one {FILE_SIZE // 1000} KB upload, {CLIENTS} clients at once"
    return [
        Measurement(
            name, "throughput of 16 clients uploading", SUBJECT, "MB/s", throughput, True, note=note
        ),
        Measurement(
            name,
            f"{per_upload}, p50",
            SUBJECT,
            "ms",
            [percentile(latencies, 50) * 1e3],
            False,
            note=note,
        ),
        Measurement(
            name,
            f"{per_upload}, p99",
            SUBJECT,
            "ms",
            [percentile(latencies, 99) * 1e3],
            False,
            note=note,
        ),
    ]


def fires(ctx: RunContext) -> list[Measurement]:
    name, unit = "attach.fires", "events/s"
    events = ctx.pick(25_000, 2_000)
    files = ctx.pick(1_000, 50)
    metric = f"TCP fire_many of {FIRE_CLIENTS} clients x {events:,} events"
    with tempfile.TemporaryDirectory(prefix="rigger-bench-attach-") as tmp:
        rigger = _dispatcher(Path(tmp), journal=False)
        port = rigger.server_port
        assert port is not None
        repeat = [0]

        def rate(during: bool) -> Callable[[], float]:
            def sample() -> float:
                firing = Child("fire", str(port), str(FIRE_CLIENTS), str(events))
                uploading = None
                if during:
                    repeat[0] += 1
                    uploading = _uploads(port, files, f"fires{repeat[0]}")
                    uploading.go()
                firing.go()
                seconds = float(firing.result()["seconds"])
                if uploading is not None:
                    uploading.result()
                    shutil.rmtree(Path(tmp) / "art" / f"fires{repeat[0]}")
                assert rigger.wait_background(600)
                return FIRE_CLIENTS * events / seconds

            return sample

        try:
            got = interleaved({SUBJECT: rate(True), ALONE: rate(False)}, ctx.repeats)
        finally:
            rigger.stop()
    during = f"while {CLIENTS} clients upload {files} files of {FILE_SIZE // 1000} KB each"
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            True,
            note=during,
            targets=(Target(">=", 0.7, ALONE),),
        ),
        Measurement(name, metric, ALONE, unit, got[ALONE], True),
    ]


SCENARIOS: list[Scenario] = [
    Scenario("attach.one_file", "one big upload vs a bare loopback socket copy to disk", one_file),
    Scenario("attach.many", "16 clients x 1,000 uploads of 200 KB: throughput, p50/p99", many),
    Scenario("attach.fires", "TCP fire_many of 4 clients during 16 uploads vs alone", fires),
]
