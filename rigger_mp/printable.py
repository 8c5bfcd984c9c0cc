"""Text from events made safe to show: control characters escaped.

A hook name, a tid or a failure message comes from whoever fired the event. Written raw
to a terminal, an ESC sequence in it retitles the window, clears the screen or hides
what follows; a ``\\r`` or ``\\n`` forges a log line; a raw ESC in a Prometheus label
corrupts the scrape. Everything event-derived that reaches a terminal, a log or a scrape
goes through :func:`printable` (the journal and status commands, ``fire``, the
``rigger_mp`` loggers by way of :class:`EscapeControls`, the ``/metrics`` labels).

The escaping is ``repr``'s, without the quotes: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``,
``\\u202e``; a backslash is doubled so that two different names never show alike.
"""

from __future__ import annotations

import logging
import numbers
import re
import traceback
from collections.abc import Mapping
from typing import Any, Final

_CONTROLS: Final = (
    r"\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (CSI 0x9b acts as ESC [ on some terminals)
    r"\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"  # bidi, zero-width, separators
)
_UNSAFE: Final = re.compile(f"[\\\\{_CONTROLS}]")
_UNSAFE_KEEP_LINES: Final = re.compile(  # the same but \t and \n, and no backslash
    f"[{_CONTROLS}]".replace(r"\x00-\x1f", r"\x00-\x08\x0b-\x1f")
)
_SHORT: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with its control characters (and backslashes) escaped.

    ``keep_lines``: leave ``\\n`` and ``\\t`` (and backslashes) as they are, for text
    whose line breaks are the program's own (a traceback, a log message's template).
    """
    pattern = _UNSAFE_KEEP_LINES if keep_lines else _UNSAFE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


class _Shown:
    """A log argument shown escaped, whatever its ``%s``/``%r`` says."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        # An exception's text may be a traceback (a worker's): its lines are kept, as a
        # traceback's are; any other argument is escaped whole (a name has no lines).
        return printable(str(self.value), keep_lines=isinstance(self.value, BaseException))

    def __repr__(self) -> str:
        shown = repr(self.value)  # a str's repr escapes already: not twice
        return shown if shown.isprintable() else printable(shown)


def _shown(arg: Any) -> Any:
    if isinstance(arg, numbers.Number):  # %d and %.1f still work; nothing to escape
        return arg
    return _Shown(arg)


class EscapeControls(logging.Filter):
    """Escape the control characters a record's arguments, message and traceback carry.

    The arguments are escaped whole (a ``\\n`` in a hook name cannot start a line); the
    message template and the traceback keep their own line breaks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):  # a template of ours: its line breaks are meant
            record.msg = printable(record.msg, keep_lines=True)
        else:  # anything passed alone (an exception, say): escaped whole
            record.msg = printable(str(record.msg))
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: _shown(value) for key, value in args.items()}
        elif args:
            record.args = tuple(_shown(arg) for arg in args)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = _traceback(record.exc_info[1])
        return True


def _traceback(exc: BaseException) -> str:
    """The traceback as ``Formatter.formatException`` writes it, control characters
    escaped but its line breaks (an exception's message may hold a worker's traceback)."""
    parts = []
    for chunk in traceback.TracebackException.from_exception(exc).format():
        body = chunk.removesuffix("\n")
        parts.append(printable(body, keep_lines=True) + chunk[len(body) :])
    return "".join(parts).removesuffix("\n")


_FILTER: Final = EscapeControls()


def logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with :class:`EscapeControls` on it (once): every
    logger of the package is made here."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
