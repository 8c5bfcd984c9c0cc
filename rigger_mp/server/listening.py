"""The listening socket of the TCP server: bound once, in the main process, and handed to
each server process in turn; and the warning when it is open to other hosts with no token.
"""

from __future__ import annotations

import ipaddress
import socket

from .. import printable
from .incarnation import ServerStartError

logger = printable.logger("rigger_mp")


def bind(address: str, port: int) -> socket.socket:
    """A listening socket on ``address:port`` (0: any free port), or ServerStartError."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ServerStartError(
            f"server_address {address!r}: cannot resolve it: {exc.strerror or exc}"
        ) from exc
    family, _, _, _, sockaddr = infos[0]
    try:
        return socket.create_server(sockaddr, family=family, backlog=1024)
    except OSError as exc:
        raise ServerStartError(
            f"cannot listen on {address}:{port}: {exc.strerror or exc}"
            + (" (is another server using this port?)" if port else "")
        ) from exc


def exposed_without_token(host: str, token: str | None) -> bool:
    """True if ``host`` (a bound IP address) is reachable from other hosts and no token is set."""
    if token is not None:
        return False
    try:
        return not ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return True


def warn_if_exposed(host: str, port: int, token: str | None) -> None:
    """Log that anyone may fire and terminate when ``host`` is reachable without a token."""
    if exposed_without_token(host, token):
        logger.warning(
            "the TCP server listens on %s:%d, which other hosts can reach, "
            "and no server_token is set: anyone who can connect may fire events and "
            "terminate the dispatcher",
            host,
            port,
        )
