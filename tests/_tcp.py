"""Helpers of the TCP tests: a counting plugin, a started Rigger, a raw socket client."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from typing import Any, TypeVar

from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.core.rigger import parts_of
from rigger_mp.server.supervisor import ServerSupervisor

T = TypeVar("T")

HOST = "127.0.0.1"
WAIT = 30.0
"""Upper bound for any single wait in these tests (they never sleep to wait)."""


class Counting(RiggerBasePlugin):
    """Counts every ``count`` event by ``(c, i)``; ``fail`` raises; ``block`` waits."""

    def plugin_initialize(self) -> None:
        self.seen: Counter[tuple[Any, Any]] = Counter()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.register_plugin_hook("count", self.count)
        self.register_plugin_hook("fail", self.fail)
        self.register_plugin_hook("opaque", self.opaque)
        self.register_plugin_hook("block", self.block)

    def count(self, c: Any = None, i: Any = None) -> tuple[dict[str, Any], None]:
        self.seen[(c, i)] += 1
        return {"counted": True}, None

    def fail(self) -> None:
        raise ValueError("boom")

    def opaque(self) -> tuple[dict[str, Any], None]:
        return {"handle": object()}, None

    def block(self) -> None:
        self.entered.set()
        self.release.wait(WAIT)


def make_rigger(**config: Any) -> Rigger:
    """A started Rigger with its TCP server on a free loopback port and one Counting instance."""
    settings: dict[str, Any] = {
        "server_enabled": True,
        "server_address": HOST,
        "server_port": 0,
        "plugins": {"counter": {"plugin": "counting"}},
    }
    settings.update(config)
    rigger = Rigger(settings)
    rigger.register_plugin(Counting, "counting")
    return rigger.start()


def instance(rigger: Rigger, name: str, cls: type[T]) -> T:
    """The plugin instance ``name`` of a started Rigger, checked to be a ``cls``."""
    obj = rigger.get_instance_obj(name)
    assert isinstance(obj, cls)
    return obj


def counter(rigger: Rigger) -> Counting:
    return instance(rigger, "counter", Counting)


def port_of(rigger: Rigger) -> int:
    """The port the Rigger's TCP server listens on."""
    assert rigger.server_port is not None
    return rigger.server_port


def supervisor_of(rigger: Rigger) -> ServerSupervisor:
    """The supervisor of a started Rigger's TCP server."""
    server = parts_of(rigger).server
    assert server is not None
    return server


def server_pid(rigger: Rigger) -> int:
    pid = rigger.stats()["server"]["pid"]
    assert isinstance(pid, int)
    return pid


class Raw:
    """A bare socket speaking the wire protocol by hand, as a non-Python client would."""

    def __init__(self, port: int, timeout: float = WAIT) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.sock.sendall(data)

    def reply(self) -> dict[str, Any]:
        """The next reply line, parsed; AssertionError if the server closed first."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            assert data, f"connection closed; unread: {self.buf[:200]!r}"
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def request(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        self.send(data)
        return self.reply()

    def wait_closed(self) -> bytes:
        """Block until the server closes the connection; return what it sent meanwhile."""
        rest = self.buf
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return rest
            if not data:
                return rest
            rest += data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
