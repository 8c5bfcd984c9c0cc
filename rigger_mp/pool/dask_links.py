"""The connections Dask workers open back to the dispatcher's main process.

Each worker's :class:`~rigger_mp.pool.dask_worker.RiggerWorkerPlugin` connects to the
:class:`Links` listener (``multiprocessing.connection`` over TCP, with a random key) and
says :class:`~rigger_mp.pool.dask_worker.Hello`. One reader thread per connection hands
each message to the pool, and tells it when the connection ends (the worker is gone).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection as mpc
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import printable
from .dask_worker import Hello

logger = printable.logger("rigger_mp")


@dataclass(eq=False)
class Link:
    """One Dask worker's connection back to this process."""

    conn: mpc.Connection
    address: str
    pid: int
    batches: set[int] = field(default_factory=set)
    """The batches it claimed and has not finished (under the pool's lock)."""
    tasks_done: int = 0
    cpu_seconds: float = 0.0
    """CPU time its process had used at its latest result."""

    def __str__(self) -> str:
        return f"Dask worker {self.address} (pid {self.pid})"


def listen_host(scheduler: str) -> str:
    """This host's address on the route to ``scheduler`` (where workers can reach it)."""
    parts = urlsplit(scheduler)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8786
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, port))  # UDP: picks the route, sends nothing
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class Links:
    """The listener, its acceptor thread and one reader thread per worker's connection."""

    def __init__(
        self,
        host: str,
        port: int,
        joined: Callable[[Link], None],
        message: Callable[[Link, Any], None],
        lost: Callable[[Link], None],
    ) -> None:
        self.authkey = secrets.token_bytes(32)
        self._listener = mpc.Listener((host, port), authkey=self.authkey)
        self._joined, self._message, self._lost = joined, message, lost
        self._lock = threading.Lock()
        self._closing = False
        self._links: list[Link] = []
        self._readers: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept, name="rigger_mp-dask-acceptor", daemon=True
        )
        self._acceptor.start()

    @property
    def address(self) -> tuple[str, int]:
        """Where workers connect."""
        address: tuple[str, int] = self._listener.address
        return address

    def close(self) -> None:
        """End every connection and thread, then the listener."""
        with self._lock:
            self._closing = True
            links = list(self._links)
        for link in links:
            _shutdown(link.conn)
        with contextlib.suppress(Exception):  # wake the acceptor
            mpc.Client(self._listener.address, authkey=self.authkey).close()
        self._acceptor.join()
        for thread in self._readers:
            thread.join()
        self._listener.close()

    def _accept(self) -> None:
        """Take each worker's connection and start its reader."""
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                if self._closing:
                    return
                logger.warning("refused a connection to the Dask pool: %s", exc)
                continue
            if self._closing:
                conn.close()
                return
            try:
                hello = conn.recv()
                assert isinstance(hello, Hello)
            except Exception:
                logger.warning("a Dask worker's connection did not say hello")
                conn.close()
                continue
            link = Link(conn, hello.address, hello.pid)
            reader = threading.Thread(
                target=self._read, args=(link,), name="rigger_mp-dask-reader", daemon=True
            )
            with self._lock:
                self._links.append(link)
                self._readers.append(reader)
            self._joined(link)
            reader.start()

    def _read(self, link: Link) -> None:
        """Hand one worker's messages to the pool until its connection ends."""
        try:
            while True:
                self._message(link, link.conn.recv())
        except (EOFError, OSError):
            pass
        except Exception:
            logger.exception("unreadable message from %s", link)
        self._lost(link)
        with self._lock:
            self._links.remove(link)
        link.conn.close()


def _shutdown(conn: mpc.Connection) -> None:
    """Wake a thread blocked reading ``conn``: shut its socket down (end of file)."""
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        with sock:
            sock.shutdown(socket.SHUT_RDWR)
