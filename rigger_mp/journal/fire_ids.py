"""The journal's ``fire_ids`` table: the ids of the fires accepted lately, and their tids.

A fire's row in ``pending`` is deleted once the event is done, but a client may resend a
fire whose reply it lost after that (the dispatcher restarted meanwhile, say); so the ids
live in a table of their own, appended in the same transaction as their fires and cut
back to the last ``dedup_window`` now and then. The server process reads the newest back
into its window when it starts (:class:`rigger_mp.server.dedup.DedupWindow`)::

    fire_ids(n INTEGER PRIMARY KEY, fire_id TEXT, tid TEXT)   n: the order accepted
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

CREATE: Final = (
    "CREATE TABLE IF NOT EXISTS fire_ids (n INTEGER PRIMARY KEY, fire_id TEXT NOT NULL,"
    " tid TEXT NOT NULL)"
)
"""Run for a new file and at an owner open of an older one (schema 4 added it)."""
TRIM_EVERY: Final = 1024
"""Ids appended between two cuts: the table holds at most this many beyond the window."""


def append(db: sqlite3.Connection, ids: Sequence[tuple[str, str]], keep: int) -> None:
    """Append ``(fire_id, tid)`` pairs (inside the caller's transaction); cut the table
    back to the last ``keep`` whenever its numbering passes a multiple of
    :data:`TRIM_EVERY`."""
    if not ids:
        return
    db.executemany("INSERT INTO fire_ids (fire_id, tid) VALUES (?, ?)", ids)
    last = db.execute("SELECT max(n) FROM fire_ids").fetchone()[0]
    if last // TRIM_EVERY != (last - len(ids)) // TRIM_EVERY:
        db.execute("DELETE FROM fire_ids WHERE n <= ?", (last - keep,))


def newest(db: sqlite3.Connection, limit: int) -> list[tuple[str, str]]:
    """The last ``limit`` ``(fire_id, tid)`` pairs appended, oldest first."""
    if limit <= 0:
        return []
    rows = db.execute(
        "SELECT fire_id, tid FROM fire_ids ORDER BY n DESC LIMIT ?", (limit,)
    ).fetchall()
    return [(str(fire_id), str(tid)) for fire_id, tid in reversed(rows)]
