"""The JSON-lines port refuses HTTP, so that a web page cannot speak to it.

Any page a browser shows, from any site, can make it send a ``text/plain`` POST to
``127.0.0.1:21212`` (``fetch`` with ``mode: "no-cors"`` needs no permission). Read line by
line, the request's header lines would only be refused as bad JSON, but its body lines
(``{"op": "terminate"}``, a fire) would be obeyed. So the first bytes of a connection are
looked at before any line of it is handled: an HTTP request line (``POST / HTTP/1.1``)
or a header line (``Host: ...``) gets one ``bad_request`` reply naming the HTTP port's
option, and the connection is closed. A JSON message never starts with a letter, so no
client of this port is refused; the answer needs at most :data:`MAX_HEAD` bytes.
"""

from __future__ import annotations

from typing import Final

MAX_HEAD: Final = 64
"""Bytes of a connection's start looked at: a method or header name longer than this
is not one HTTP clients send (and a JSON message is known at its first byte)."""

REFUSAL: Final = (
    "this port speaks JSON lines, not HTTP: it closes a connection that starts with an "
    "HTTP request; for HTTP, set http_port in the config and use that port"
)
"""The message of the one ``bad_request`` reply an HTTP request gets."""

_LETTERS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_TOKEN: Final = _LETTERS | frozenset(b"0123456789!#$%&'*+-.^_`|~")
"""The characters of an HTTP method or header name (RFC 9110's ``tchar``)."""
_BLANK: Final = frozenset(b"\r\n")
_ENDS: Final = frozenset(b" :")
"""What follows a method (a space) or a header name (a colon)."""


def looks_like_http(head: bytes | bytearray) -> bool | None:
    """Whether ``head``, the first bytes of a connection, starts an HTTP request line
    or header line: a name of token characters starting with a letter, then a space or
    a colon (after any empty lines, which HTTP allows before a request). None while
    ``head`` is too short to tell."""
    start = 0
    end = len(head)
    while start < end and head[start] in _BLANK:
        start += 1
    if start == end:
        return None if end < MAX_HEAD else False
    if head[start] not in _LETTERS:
        return False
    i = start + 1
    while i < end and head[i] in _TOKEN:
        i += 1
    if i - start > MAX_HEAD or (i == end and end >= MAX_HEAD):
        return False
    if i == end:
        return None
    return head[i] in _ENDS
