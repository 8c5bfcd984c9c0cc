"""The journal: accepted events survive a crash of any process.

An SQLite file in WAL mode holds every accepted, unfinished event. A fire is accepted
once its row is committed; commits are grouped (:class:`GroupCommitter`); an event's row
is deleted once it and its backgrounded hooks finished; a memory-mapped run map
(:class:`.runs.RunMap`) says which events started and finished, so that after a crash an
attempt is counted only for an event that was running; ``start()`` replays what is left
(:meth:`JournalStore.claim_replay`), dead-lettering events that used up their attempts.

This package imports only the standard library, :mod:`rigger_mp.errors` and
:mod:`rigger_mp.safe_paths`, so both the main process and the TCP server process can
use it::

    JournalStore.open(path)       the file: schema, locks, validation, reads and writes
    GroupCommitter(store)         its writer (a lone caller, or its thread): append() blocks,
                                  done() does not
    runs.RunMap.start(...)        the events that started and finished (the main process
                                  alone: not imported here, the server process never needs it)
    encode / decode               event data as marshal when exact, else pickle; a fire's line
"""

from __future__ import annotations

from .codec import FIRE_LINE, JSON, MARSHAL, PICKLE, decode, encode, encode_rows, plain_json
from .committer import GroupCommitter
from .errors import (
    JournalCommitError,
    JournalCorrupt,
    JournalEncodeError,
    JournalError,
    JournalFull,
    JournalLocked,
)
from .store import SYNC_LEVELS, Entry, JournalStore, NewRow, Sync, tid_prefix

REPLAY_KEY = "rigger_replay"
"""Event local set to True on an event run again from the journal at start()."""
ATTEMPT_KEY = "rigger_attempt"
"""Event local holding a replayed event's run number: 1 for its first run, and one more
for each earlier run that started and did not finish."""
DEFAULT_MAX_ATTEMPTS = 3


def replay_locals(entry: Entry) -> dict[str, object]:
    """A replayed event's locals: its stored data plus ``rigger_replay``/``rigger_attempt``."""
    data = entry.data()
    data[REPLAY_KEY] = True
    data[ATTEMPT_KEY] = entry.attempts + 1
    return data


__all__ = [
    "ATTEMPT_KEY",
    "DEFAULT_MAX_ATTEMPTS",
    "FIRE_LINE",
    "JSON",
    "MARSHAL",
    "PICKLE",
    "REPLAY_KEY",
    "SYNC_LEVELS",
    "Entry",
    "GroupCommitter",
    "JournalCommitError",
    "JournalCorrupt",
    "JournalEncodeError",
    "JournalError",
    "JournalFull",
    "JournalLocked",
    "JournalStore",
    "NewRow",
    "Sync",
    "decode",
    "encode",
    "encode_rows",
    "plain_json",
    "replay_locals",
    "tid_prefix",
]
