"""The HTTP connections that wait on their client, so that none waits for ever and a
table full of them does not keep new clients out.

A connection waits on its client from the moment it opens until its request's headers
are in, while the front reads a request body, and after each response until the next
request (or until the client reads the response): then the client, not the dispatcher,
is what is slow. The front marks each connection :meth:`Stalls.waiting` or
:meth:`Stalls.busy` as it goes (busy: its request waits for the main process, or is
being answered).

- A connection that waits on its client for ``idle_timeout`` in one go is closed: a
  request whose headers or body never end, an idle keep-alive connection, a response
  never read (one timer per wait, cancelled when the client gets on with it).
- When ``http_max_connections`` are open, a new connection closes the one that has
  waited on its client the longest (:meth:`Stalls.evict`) and takes its place; only if
  every open connection is busy on the dispatcher's side is the new one refused (503
  ``too_many_connections``). So stalled requests can hold the table only until someone
  else needs it, and a request the dispatcher is working on is never dropped for one.
"""

from __future__ import annotations

import asyncio

from aiohttp import web


class Stalls:
    """The connections waiting on their client, longest first, each with its timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._waiting: dict[web.RequestHandler, asyncio.TimerHandle] = {}
        self.timed_out = 0
        """Connections closed after waiting on their client for ``timeout``."""
        self.evicted = 0
        """Connections closed to make room for a new one."""

    def waiting(self, handler: web.RequestHandler) -> None:
        """``handler`` now waits on its client: its timer starts again, at the back."""
        self.busy(handler)
        self._waiting[handler] = self.loop.call_later(self.timeout, self._expire, handler)

    def busy(self, handler: web.RequestHandler) -> None:
        """``handler`` has what it needs from its client for now (or is gone)."""
        timer = self._waiting.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def evict(self) -> bool:
        """Close the connection that has waited on its client the longest; False if none
        does."""
        if not self._waiting:
            return False
        handler = next(iter(self._waiting))
        self.busy(handler)
        self.evicted += 1
        handler.force_close()
        return True

    def _expire(self, handler: web.RequestHandler) -> None:
        self._waiting.pop(handler, None)
        self.timed_out += 1
        handler.force_close()
