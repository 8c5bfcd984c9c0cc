"""The listening socket of the server process, accepted by hand.

Not ``loop.create_server``: past ``max_connections`` a client gets one ``busy`` line and
is closed at once, and running out of file descriptors pauses accepting (one throttled
warning) instead of asyncio's traceback per accept attempt.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING, Final

from .. import protocol as proto
from .connection import Connection
from .throttle import Throttled

if TYPE_CHECKING:
    from .router import Server

ACCEPT_PER_TURN: Final = 64
"""Connections accepted per loop turn. Few enough that clients which connect and leave at
once are noticed gone (a few turns later) before ``max_connections`` counts them all."""
ACCEPT_RETRY: Final = 1.0
"""Out of file descriptors with no connection of ours open to free one: retry after this."""
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """The listening socket, accepted by hand rather than by ``loop.create_server``.

    Past ``max_connections`` (counting those being set up) a client gets one ``busy``
    line and is closed at once. asyncio's accept loop, out of file descriptors, logs a
    traceback per accept attempt (up to its backlog, 1024) and retries each second, for
    as long as it lasts. Here,
    EMFILE (ENFILE, ENOBUFS, ENOMEM) logs one throttled warning and stops accepting until
    one of our connections closes (:meth:`fd_freed`); the clients wait in the backlog.
    """

    def __init__(self, server: Server, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.paused = False
        self.closed = False
        self.pauses = 0
        self.starting: set[asyncio.Task[None]] = set()
        self.opening = 0
        """Connections accepted and not yet made (counted toward ``max_connections``)."""
        self.retry: asyncio.TimerHandle | None = None
        self.busy_line = proto.error_line(
            proto.BUSY,
            f"the server has max_connections ({server.max_connections}) open; try again later",
        )
        self.warn = Throttled(
            logging.WARNING,
            "rigger_mp server: out of file descriptors (%s): accepting no connection until "
            "one closes",
        )
        server.loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        server = self.server
        for _ in range(ACCEPT_PER_TURN):  # the connections of clients get their turns too
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._pause(exc)
                else:
                    self.warn(exc)
                return
            if len(server.conns) + self.opening >= server.max_connections:
                self._busy(conn)
                continue
            conn.setblocking(False)
            self.opening += 1
            task = server.loop.create_task(self._serve(conn))
            self.starting.add(task)
            task.add_done_callback(self.starting.discard)

    def _busy(self, sock: socket.socket) -> None:
        """One ``busy`` line (a few bytes: the socket buffer takes them) and close at once,
        so that a refused client holds no file descriptor."""
        server = self.server
        server.errors[proto.BUSY] += 1
        try:
            sock.setblocking(False)
            sock.send(self.busy_line)
        except OSError:
            pass
        finally:
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self.server.loop.connect_accepted_socket(
                lambda: Connection(self.server), sock=sock
            )
        except OSError as exc:
            self.opened()
            sock.close()
            self.warn(exc)

    def opened(self) -> None:
        """A connection accepted is set up (or failed to be): :attr:`Server.conns` has it."""
        self.opening -= 1

    def _pause(self, exc: OSError) -> None:
        self.paused = True
        self.pauses += 1
        self.server.errors["out_of_fds"] += 1
        self.warn(os.strerror(exc.errno or 0))
        self.server.loop.remove_reader(self.fd)
        if not self.server.conns:  # nothing of ours will close to free one
            self.retry = self.server.loop.call_later(ACCEPT_RETRY, self.fd_freed)

    def fd_freed(self) -> None:
        """A connection closed (its fd is closed right after): accept again."""
        if self.paused and not self.closed:
            self.paused = False
            if self.retry is not None:
                self.retry.cancel()
                self.retry = None
            self.server.loop.add_reader(self.fd, self._ready)

    def close(self) -> None:
        """Accept no more (a stop); the main process keeps its own copy of the socket."""
        if self.closed:
            return
        self.closed = True
        if self.retry is not None:
            self.retry.cancel()
        if not self.paused:
            self.server.loop.remove_reader(self.fd)
        self.sock.close()

    def abort(self) -> None:
        """Close, and drop the connections still being set up (the process exits)."""
        self.close()
        for task in list(self.starting):
            task.cancel()
