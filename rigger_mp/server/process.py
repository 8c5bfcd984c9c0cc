"""The TCP server process: its entry point, which reads its settings and wires its parts.

One asyncio loop serves every connection, no thread per client::

    listening socket ─▶ Acceptor (.acceptor) ─▶ Connection (.connection), one per client:
                                                  parse, validate, answer ping/auth/bad input
                                                      │ fires, requests
                                                      ▼
    requests pipe ◀── PipeWriter (.channel) ◀── Server (.router): tids, acks, rids, bounds
    reply pipe ────▶ PipeReader (.channel) ───▶ Server.deliver ─▶ the connection that asked

Messages are parsed and validated here (see :mod:`rigger_mp.protocol`); what the main
process must see goes to it as batches over a pipe (:mod:`.channel`,
:mod:`.pipe_messages`): everything that one read of a connection produced travels as one
pickled list. A fire is accepted here and acked once its frame is wholly in the pipe:
the read end is the main process's, and what was written into it stays readable after
this process dies, so the main process starts another one on the same listening socket
and loses nothing acknowledged (see :mod:`.supervisor`, and :mod:`.intake` for the
thread that reads the pipe). To learn that it has queued every fire this process acked,
the main process sends a fence request, which comes back down the requests pipe behind
them; at a stop it also makes this process refuse fires from then on. When the main
process dies, the reply pipe reaches end-of-file and this process exits at once: it
never outlives its parent.

The server process never loads the dispatcher: these modules import only each other,
the channel, the pipe messages and the protocol (``tests/test_server_imports.py``).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable

from .acceptor import Acceptor
from .channel import PipeReader, PipeWriter
from .pipe_messages import ServerSettings
from .router import Server


def main(argv: list[str], on_start: Callable[[Server], None] | None = None) -> None:
    """Run the server process: ``argv`` holds the socket, request and reply pipe fds.

    The first object on the reply pipe is the :class:`ServerSettings` (the token is
    never on the command line, where ``ps`` would show it). ``on_start`` gets the
    :class:`Server` before it runs (the HTTP front starts there: :mod:`.http`).
    """
    # Ctrl-C reaches the whole process group; the main process decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock_fd, requests_fd, replies_fd = (int(a) for a in argv)
    sock = socket.socket(fileno=sock_fd)
    settings = _read_settings(replies_fd)
    loop = asyncio.new_event_loop()
    server: Server | None = None
    try:
        server = Server(loop, settings)
        if on_start is not None:
            on_start(server)
        loop.run_until_complete(_serve(server, sock, requests_fd, replies_fd))
    finally:
        try:
            _end_tasks(loop, END_GRACE)
        finally:
            if server is not None and server.upload_side is not None:
                server.upload_side.close()  # its writer threads finish (a cut's clean-up)
            if server is not None and server.journal is not None:
                server.journal.close()
            loop.close()


async def _serve(server: Server, sock: socket.socket, requests_fd: int, replies_fd: int) -> None:
    """Connect the pipes, start listening, tell the main process, serve until told."""
    server.attach(
        PipeWriter(server, requests_fd), PipeReader(server, replies_fd), Acceptor(server, sock)
    )
    await server.finished


END_GRACE = 1.0
"""Seconds the tasks still running at the end (a live page's stream, a request being
answered) have to end once cancelled: the connections had their grace already."""


def _end_tasks(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    """Cancel what still runs and let it end while the loop can still run its clean-up,
    for at most ``grace`` seconds, as ``asyncio.run`` does: closed under them, such tasks
    print "Task was destroyed but it is pending" and "Event loop is closed" as the
    process exits. A task that ended with an error is reported to the loop's handler."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "a task failed as the server process ended",
                    "task": task,
                    "exception": task.exception(),
                }
            )
    loop.run_until_complete(loop.shutdown_asyncgens())


def _read_settings(fd: int) -> ServerSettings:
    """Block for the first frame of the reply pipe: the settings (read byte-exact)."""

    def read_exactly(n: int) -> bytes:
        chunks = []
        while n:
            chunk = os.read(fd, n)
            if not chunk:
                raise SystemExit("rigger_mp server: the main process went away before starting us")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    (size,) = struct.unpack("!I", read_exactly(4))
    settings = pickle.loads(read_exactly(size))
    if not isinstance(settings, ServerSettings):
        raise SystemExit(f"rigger_mp server: expected settings, got {type(settings).__name__}")
    return settings


if __name__ == "__main__":
    main(sys.argv[1:])
