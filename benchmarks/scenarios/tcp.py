"""The TCP intake: request-reply, pipelined fire_many, concurrent clients, grab_result.

Subjects, all on 127.0.0.1:

- ``rigger_mp``: a Rigger with its TCP server (a process of its own) and one trivial hook.
  Throughput is "handled end to end": the clock stops when a final ``wait_for_task``
  event, queued behind all the others, has run.
- ``bare socket server``: the floor. A single-process, single-threaded ``selectors`` server
  in a subprocess that parses each JSON line with ``json.loads`` and answers
  ``{"ok":true,"tid":"0"}`` at once: no dispatcher, no second process, no event. The same
  :class:`~rigger_mp.RiggerClient` drives both, so the difference is the server side.
- ``two-process relay``: the floor of acking only once a second process has taken the
  event (request-reply only; rigger_mp acks in its server process since the requests pipe
  outlives it). The bare server, except that each read's lines, once parsed, go over a
  pipe to a forked child that echoes them back over another pipe before the acks are
  written: the two extra process hops, with no other work.
- ``riggerlib`` 3.1.6's zmq client and server (in the riggerlib peer venv, shimmed):
  request-reply and ``grab_result``, which polls ``task_status`` every 0.1 s.

Clients run in their own processes (the benchmark process hosts the Rigger, so a client
here would share its GIL).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
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
    measured_or_skipped,
)
from benchmarks.peers import riggerlib_peer
from rigger_mp import Rigger, RiggerBasePlugin

BARE: Final = "bare socket server"
RELAY: Final = "two-process relay"
RIGGERLIB: Final = "riggerlib"
US: Final = "\u00b5s"
CLIENT_COUNTS: Final = (1, 4, 16, 64)
ROOT: Final = str(Path(__file__).resolve().parents[2])
TIMEOUT: Final = 300.0

BARE_SERVER: Final = r"""
import json, selectors, socket, sys
sel = selectors.DefaultSelector()
listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
print(listener.getsockname()[1], flush=True)
buf = bytearray(65536)
rest = {}
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is listener:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            rest[conn] = b""
            continue
        try:
            n = sock.recv_into(buf)
        except OSError:
            n = 0
        if not n:
            sel.unregister(sock)
            rest.pop(sock, None)
            sock.close()
            continue
        data = rest[sock] + bytes(buf[:n])
        *lines, rest[sock] = data.split(b"\n")
        out = []
        for line in lines:
            json.loads(line)
            out.append(b'{"ok":true,"tid":"0"}\n')
        sock.sendall(b"".join(out))
"""

RELAY_SERVER: Final = r"""
import json, os, selectors, socket
to_child_r, to_child_w = os.pipe()
to_us_r, to_us_w = os.pipe()
if os.fork() == 0:  # the child: echo each request back; exit when the parent is gone
    os.close(to_child_w)
    os.close(to_us_r)
    while True:
        chunk = os.read(to_child_r, 65536)
        if not chunk:
            os._exit(0)
        os.write(to_us_w, chunk)
os.close(to_child_r)
os.close(to_us_w)
sel = selectors.DefaultSelector()
listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
sel.register(to_us_r, selectors.EVENT_READ)
print(listener.getsockname()[1], flush=True)
buf = bytearray(65536)
rest = {}
conns = {}
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is listener:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ)
            rest[conn] = b""
            conns[conn.fileno()] = conn
            continue
        if sock == to_us_r:  # "fd:count|" records: answer count lines on connection fd
            for record in os.read(to_us_r, 65536).split(b"|")[:-1]:
                fd, count = record.split(b":")
                conn = conns.get(int(fd))
                if conn is not None:
                    conn.sendall(b'{"ok":true,"tid":"0"}\n' * int(count))
            continue
        try:
            n = sock.recv_into(buf)
        except OSError:
            n = 0
        if not n:
            sel.unregister(sock)
            rest.pop(sock, None)
            conns.pop(sock.fileno(), None)
            sock.close()
            continue
        data = rest[sock] + bytes(buf[:n])
        *lines, rest[sock] = data.split(b"\n")
        for line in lines:
            json.loads(line)
        os.write(to_child_w, b"%d:%d|" % (sock.fileno(), len(lines)))
"""

CLIENTS: Final = r"""
import json, sys, threading, time
from rigger_mp import RiggerClient
port, clients, events, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conns = [RiggerClient("127.0.0.1", port, timeout=120) for _ in range(clients)]
for c in conns:
    c.ping()
print("ready", flush=True)
sys.stdin.readline()
out = {}
def run(k, c):
    if mode == "pipelined":
        c.fire_many(("ev", {"x": i}) for i in range(events))
    elif mode == "request":
        for i in range(events):
            c.fire_hook("ev", x=i)
    else:
        each = []
        for i in range(events):
            t = time.perf_counter()
            c.fire_hook("ev", grab_result=(mode == "grab"), x=i)  # mode "timed": an ack
            each.append(time.perf_counter() - t)
        out[k] = each
threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate(conns)]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"seconds": time.perf_counter() - start, "each": out}), flush=True)
"""

RIGGERLIB_TCP: Final = r"""
import json, os, socket, statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import _riggerlib_runner as runner
runner.apply_shims()
from riggerlib import RiggerClient
kind, events, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
calls = [0]
with tempfile.TemporaryDirectory() as tmp:
    rigger = runner.make_rigger(tmp, calls)
    rigger.config["server_enabled"] = True
    rigger.config["server_address"] = "127.0.0.1"
    rigger.config["server_port"] = port
    rigger.start_server()
    client = RiggerClient("127.0.0.1", port)
    client.ready = True
    samples = []
    for _ in range(repeats):
        if kind == "request":
            t = time.perf_counter()
            for i in range(events):
                client.fire_hook("ev", x=i)
            samples.append(events / (time.perf_counter() - t))
        else:
            each = []
            for i in range(events):
                t = time.perf_counter()
                out = client.fire_hook("ev", grab_result=True, x=i)
                each.append((time.perf_counter() - t) * 1e6)
                if out is None:
                    raise SystemExit("riggerlib grab_result returned None")
            samples.append(statistics.median(each))
    print(json.dumps({"samples": samples}), flush=True)
    rigger._zmq_event_handler_shutdown = True
    runner.stop(rigger)
sys.stdout.flush()
os._exit(0)
"""


class TrivialPlugin(RiggerBasePlugin):
    """One hook, ``ev(x)``, doing nothing."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("ev", self.ev)

    def ev(self, x: int) -> None:
        return None


# --------------------------------------------------------------------------- servers


class Servers:
    """rigger_mp, the bare floor and the relay floor, listening for the whole scenario."""

    def __init__(self) -> None:
        self.rigger = Rigger(
            {
                "server_enabled": True,
                "server_port": 0,
                "plugins": {"p": {"plugin": "trivial"}},
            }
        )
        self.rigger.register_plugin(TrivialPlugin, "trivial")
        self.rigger.start()
        self.bare = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER], stdout=subprocess.PIPE, text=True
        )
        assert self.bare.stdout is not None
        self.bare_port = int(self.bare.stdout.readline())
        assert self.rigger.server_port is not None
        self.relay = subprocess.Popen(
            [sys.executable, "-c", RELAY_SERVER], stdout=subprocess.PIPE, text=True
        )
        assert self.relay.stdout is not None
        self.ports = {
            SUBJECT: self.rigger.server_port,
            BARE: self.bare_port,
            RELAY: int(self.relay.stdout.readline()),
        }

    def close(self) -> None:
        self.rigger.stop()
        for proc in (self.bare, self.relay):  # the relay's child exits on end-of-file
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def run_clients(
    port: int, processes: int, per_process: int, events: int, mode: str
) -> dict[str, Any]:
    """Start client processes, release them together; wall seconds and per-call times."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS, str(port), str(per_process), str(events), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark client process failed to connect")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        each: list[float] = []
        for proc in procs:
            assert proc.stdout is not None
            doc = json.loads(proc.stdout.readline())
            for times in doc["each"].values():
                each.extend(times)
        seconds = time.perf_counter() - start
        for proc in procs:
            proc.wait(TIMEOUT)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    return {"seconds": seconds, "each": each}


def throughput(
    servers: Servers, subject: str, clients: int, events: int, mode: str
) -> Callable[[], float]:
    """events/s of ``clients`` connections firing ``events`` each; rigger_mp: until handled."""
    processes = min(clients, 4)
    per_process = clients // processes

    def sample() -> float:
        got = run_clients(servers.ports[subject], processes, per_process, events, mode)
        seconds = float(got["seconds"])
        if subject == SUBJECT:  # until the last one has run: wait on an event queued after
            start = time.perf_counter()
            servers.rigger.fire_hook("ev", x=-1).result(TIMEOUT)
            seconds += time.perf_counter() - start
        return clients * events / seconds

    return sample


def round_trip_us(servers: Servers, subject: str, events: int) -> Callable[[], float]:
    """Median µs of one round trip: rigger_mp with the output, the bare server an ack."""
    mode = "grab" if subject == SUBJECT else "timed"

    def sample() -> float:
        got = run_clients(servers.ports[subject], 1, 1, events, mode)
        each: list[float] = got["each"]
        return statistics.median(each) * 1e6

    return sample


def _riggerlib(kind: str, events: int, repeats: int, ctx: RunContext) -> list[float] | str:
    python = riggerlib_peer.ensure(ctx.log)
    if isinstance(python, str):
        return python
    peers = str(Path(riggerlib_peer.__file__).resolve().parent)
    cmd = [str(python), "-c", RIGGERLIB_TCP, peers, kind, str(events), str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return f"riggerlib TCP {kind} run exceeded 120 s"
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        return f"riggerlib TCP {kind} run failed: {tail}"
    try:
        samples: list[float] = json.loads(proc.stdout.strip().splitlines()[-1])["samples"]
    except (ValueError, IndexError, KeyError) as exc:
        return f"riggerlib TCP {kind} printed no samples: {exc}"
    return samples


# --------------------------------------------------------------------------- scenarios


def request_reply(ctx: RunContext) -> list[Measurement]:
    events = ctx.pick(5_000, 500)
    name, metric, unit = "tcp.request_reply", "one client, fire and wait for each ack", "events/s"
    servers = Servers()
    try:
        got = interleaved(
            {s: throughput(servers, s, 1, events, "request") for s in (SUBJECT, BARE, RELAY)},
            ctx.repeats,
        )
    finally:
        servers.close()
    out = [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            True,
            note=f"{events} events per repeat",
            targets=(Target(">=", 10_000.0), Target(">=", 0.5, peer=BARE)),
        ),
        Measurement(name, metric, BARE, unit, got[BARE], True),
        Measurement(
            name,
            metric,
            RELAY,
            unit,
            got[RELAY],
            True,
            note="bare + a pipe hop each way to a 2nd process, no other work",
        ),
    ]
    rl = _riggerlib("request", ctx.pick(2_000, 200), ctx.repeats, ctx)
    out.append(measured_or_skipped(name, metric, RIGGERLIB, unit, rl, True, "zmq REQ/REP"))
    return out


def pipelined(ctx: RunContext) -> list[Measurement]:
    events = ctx.pick(100_000, 5_000)
    name, metric, unit = "tcp.pipelined", "one client, fire_many, handled end to end", "events/s"
    servers = Servers()
    try:
        got = interleaved(
            {s: throughput(servers, s, 1, events, "pipelined") for s in (SUBJECT, BARE)},
            ctx.repeats,
        )
    finally:
        servers.close()
    return [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            True,
            note=f"{events} events per repeat",
            targets=(Target(">=", 50_000.0),),
        ),
        Measurement(name, metric, BARE, unit, got[BARE], True, note="replies received"),
    ]


def concurrent(ctx: RunContext) -> list[Measurement]:
    total = ctx.pick(64_000, 4_096)
    name, unit = "tcp.concurrent", "events/s"
    servers = Servers()
    out: list[Measurement] = []
    try:
        for clients in CLIENT_COUNTS:
            events = total // clients
            got = interleaved(
                {s: throughput(servers, s, clients, events, "pipelined") for s in (SUBJECT, BARE)},
                ctx.repeats,
            )
            metric = f"{clients} clients, fire_many each, handled end to end"
            targets = (Target(">=", 50_000.0),) if clients == 16 else ()
            for subject in (SUBJECT, BARE):
                out.append(
                    Measurement(
                        name,
                        metric,
                        subject,
                        unit,
                        got[subject],
                        True,
                        note=f"{clients} x {events} events" if subject == SUBJECT else "",
                        targets=targets if subject == SUBJECT else (),
                    )
                )
    finally:
        servers.close()
    return out


def grab_result(ctx: RunContext) -> list[Measurement]:
    events = ctx.pick(2_000, 200)
    name, metric, unit = "tcp.grab_result", "fire with grab_result, median round trip", US
    servers = Servers()
    try:
        got = interleaved(
            {s: round_trip_us(servers, s, events) for s in (SUBJECT, BARE)}, ctx.repeats
        )
    finally:
        servers.close()
    out = [
        Measurement(
            name,
            metric,
            SUBJECT,
            unit,
            got[SUBJECT],
            False,
            note=f"{events} round trips per repeat; the output is the event's namespace",
            targets=(Target("<=", 1000.0),),
        ),
        Measurement(name, metric, BARE, unit, got[BARE], False, note="no event: an ack"),
    ]
    rl = _riggerlib("grab", ctx.pick(20, 5), ctx.repeats, ctx)
    out.append(measured_or_skipped(name, metric, RIGGERLIB, unit, rl, False, "polls 0.1 s"))
    return out


SCENARIOS: list[Scenario] = [
    Scenario("tcp.request_reply", "one client, one event per round trip", request_reply),
    Scenario("tcp.pipelined", "one client, fire_many over one connection", pipelined),
    Scenario("tcp.concurrent", "1 to 64 clients at once, fire_many each", concurrent),
    Scenario("tcp.grab_result", "round trip of an event with its output", grab_result),
]
