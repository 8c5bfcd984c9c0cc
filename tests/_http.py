"""Helpers of the HTTP tests: a keep-alive client over http.client, a Rigger with HTTP."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

pytest.importorskip(
    "aiohttp", reason="HTTP TESTS NOT RUN: aiohttp is missing (pip install 'rigger_mp[http]')"
)
pytest.importorskip(
    "prometheus_client",
    reason="HTTP TESTS NOT RUN: prometheus_client is missing (pip install 'rigger_mp[http]')",
)

from rigger_mp import Rigger

from ._tcp import HOST, WAIT, make_rigger


def make_http_rigger(**config: Any) -> Rigger:
    """:func:`make_rigger` with the HTTP front on a free loopback port."""
    return make_rigger(http_address=HOST, http_port=0, **config)


def http_port(rigger: Rigger) -> int:
    port = rigger.stats()["server"]["http_port"]
    assert isinstance(port, int) and port > 0
    return port


class Http:
    """One keep-alive HTTP connection; replies are (status, JSON object or text, headers)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=WAIT)
        self.token = token

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPMessage]:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        self.conn.request(method, path, body=body, headers=sent)
        response = self.conn.getresponse()
        data = response.read()
        if response.will_close:
            self.conn.close()
        return response.status, data, response.headers

    def json(self, method: str, path: str, obj: Any = None, **kw: Any) -> tuple[int, Any]:
        body = None if obj is None else json.dumps(obj).encode()
        status, data, _ = self.raw(method, path, body, **kw)
        return status, json.loads(data)

    def fire(self, hook_name: str, **flags: Any) -> tuple[int, Any]:
        data = flags.pop("data", {})
        return self.json("POST", "/fire", {"hook_name": hook_name, "data": data, **flags})

    def stats(self) -> dict[str, Any]:
        status, reply = self.json("GET", "/stats")
        assert status == 200 and reply["ok"], reply
        stats: dict[str, Any] = reply["stats"]
        return stats
