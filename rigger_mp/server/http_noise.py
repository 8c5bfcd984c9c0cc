"""aiohttp's per-request error records, throttled like the server process's other noise.

aiohttp logs a traceback for every malformed request (2,000 of them wrote over a
megabyte). :class:`Noise` is the logger the front gives aiohttp: each record becomes a
call of a :class:`~.process.Throttled` logger, one record per ``LOG_EVERY`` seconds with
a count of the rest. A malformed request (aiohttp's ``HttpProcessingError``: a bad
request line, header, length, chunk) is the client's fault: a warning without a
traceback. Anything else is a fault on this side: an error with the traceback of the
first of its window. aiohttp's debug records (a premature disconnection, non-HTTP bytes
on the first request) are dropped, as aiohttp means them to be by default.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from .process import Throttled


class Noise(logging.Logger):
    """A logger for aiohttp's request handlers that throttles what they log."""

    def __init__(self) -> None:
        super().__init__("rigger_mp.server.aiohttp", logging.INFO)
        self.malformed = Throttled(
            logging.WARNING, "rigger_mp server: HTTP: a malformed request (%s); closed"
        )
        self.failed = Throttled(logging.ERROR, "rigger_mp server: HTTP: %s")

    def handle(self, record: logging.LogRecord) -> None:
        """Every record a logging call makes reaches here: count it, log one per window."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            self.malformed(f"{exc.code}, {exc.message}"[:300])
        else:
            self.failed(record.getMessage()[:300], exc_info=exc)
