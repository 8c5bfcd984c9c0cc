"""The journal's errors: each names the journal file, so a fault at start() says where."""

from __future__ import annotations

from ..errors import RiggerError


class JournalError(RiggerError):
    """A journal file could not be opened, read or written; the message names the file."""


class JournalLocked(JournalError):
    """Another dispatcher (or ``rigger-mp journal``) holds the journal."""


class JournalCorrupt(JournalError):
    """The file is not a rigger_mp journal SQLite can read (garbage, another app, damage)."""


class JournalFull(JournalError):
    """The disk (or the journal's page cap) is full."""


class JournalCommitError(JournalError):
    """A group commit failed: raised in every waiter whose events were in that group."""


class JournalEncodeError(JournalError, TypeError):
    """An event's data can be neither marshalled nor pickled, so it cannot be journaled."""
