"""Who the HTTP front talks to: the ``Host`` and ``Origin`` checks made before routing.

A page on another site cannot read or change a dispatcher on localhost by its own
origin, but it can by DNS rebinding: its host name (``evil.example``) is made to
resolve to 127.0.0.1, and the browser then treats the dispatcher as that site, Host
header included. So every request must name the front by a host it answers to:

- a loopback name or address (``localhost``, ``127.0.0.0/8``, ``[::1]``);
- the configured ``http_address``;
- one of ``http_allowed_hosts`` (names behind a proxy, say);

with any port (the port is not what an attacker controls). Anything else, or no Host
at all, is ``bad_host`` (HTTP 421), with a token or without.

A request that changes state (any method but GET, HEAD and OPTIONS) that carries an
``Origin`` is refused unless that origin is the front's own, ``http://<Host>``
(``bad_origin``, HTTP 403): a page elsewhere, even one whose name passes the Host check
by way of a proxy, cannot make a browser fire or terminate. A request without
``Origin`` (curl, a script, the project's clients) is not a browser's cross-site one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

from .. import protocol as proto

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that read only: no Origin check."""


def host_name(host: str) -> str:
    """The name part of a ``Host`` header value: no port, no brackets, lower case, no
    trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        name, _, _ = host[1:].partition("]")
    elif host.count(":") == 1:  # name:port (a bare v6 address has several colons)
        name = host.partition(":")[0]
    else:
        name = host
    return name.rstrip(".")


def is_loopback(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """The Host and Origin checks of one front."""

    def __init__(self, http_address: str, allowed_hosts: Iterable[str] = ()) -> None:
        self.names = frozenset(host_name(h) for h in (http_address, *allowed_hosts) if h)

    def host_ok(self, host: str | None) -> bool:
        if not host:
            return False
        name = host_name(host)
        return is_loopback(name) or name in self.names

    def refusal(self, method: str, headers: Mapping[str, str]) -> tuple[str, str, int] | None:
        """``(code, message, HTTP status)`` if the request must be refused, else None."""
        host = headers.get("Host")
        if not self.host_ok(host):
            shown = repr(host[:100]) if host else "none"
            return (
                proto.BAD_HOST,
                f"Host {shown} is not a name this front answers to: a loopback name or "
                "address, http_address, or one of http_allowed_hosts",
                421,
            )
        origin = headers.get("Origin")
        if origin is not None and method not in SAFE_METHODS and not _same(origin, host or ""):
            return (
                proto.BAD_ORIGIN,
                f"Origin {origin[:100]!r} is not this front's own; a page of another "
                "site cannot change state here",
                403,
            )
        return None


def _same(origin: str, host: str) -> bool:
    """``origin`` is ``http://<host>`` (the default port 80 written or not)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.hostname is None or parts.path not in ("", "/"):
        return False
    want = urlsplit("http://" + host.strip())
    try:
        want_port = want.port
    except ValueError:
        return False
    return (parts.hostname.rstrip("."), port or 80) == (
        (want.hostname or "").rstrip("."),
        want_port or 80,
    )
