"""The journal file: an SQLite database in WAL mode holding the accepted, unfinished events.

Tables::

    pending(seq, tid, hook, fmt, data, accepted, attempts)   accepted, not yet done
    dead(seq, tid, hook, fmt, data, accepted, attempts, died, reason)
    fire_ids(n, fire_id, tid)   the ids of fires accepted lately (:mod:`.fire_ids`)
    meta(key, value)      generation: owner opens so far (the boot number, in tids);
                          id: the journal's random id; seq_floor: the highest seq deleted
                          from the top; runs_applied: the last run map counted

``seq`` is the accepted order and the key of done marks: a new row takes one more than
the highest in either table and ``seq_floor``, so a seq names one event for the life of
the file. The floor is written only by a delete that removes the highest row, never by
an append (``AUTOINCREMENT`` would cost each commit a second page, its counter's).
``tid`` is the dispatcher's name for the event: with a journal it begins with the boot
number (:func:`tid_prefix`), so it is unique for the life of the file too.
``attempts`` counts the runs that started and did not finish: the run map of
:mod:`.runs` says which, and is counted at the next owner open (:meth:`JournalStore.open`),
so an append writes 0 and nothing on the hot path writes SQLite to count a run. An event is
done once its row is deleted; deleted pages are reused,
given back by ``incremental_vacuum`` when many are free, and the WAL is checkpointed by
SQLite as it grows and truncated to :data:`WAL_LIMIT`: the files stay the size of what
is pending, whatever has passed through them.

Every write runs under the cross-process writer lock (see :mod:`.locks`), in one
``BEGIN IMMEDIATE`` transaction. A connection object is used by one thread at a time
(``self._lock``), so one store serves its process's committer thread and readers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from .. import printable
from ..errors import UnsafePath
from ..safe_paths import open_no_follow, refuse_link
from . import fire_ids
from .codec import FORMATS, decode
from .errors import JournalCorrupt, JournalError, JournalFull, JournalLocked
from .locks import OwnerLock, WriterLock

log = printable.logger("rigger_mp.journal")

APPLICATION_ID = 0x52474D4A  # "RGMJ": a rigger_mp journal, not just any SQLite file
SCHEMA_VERSION = 4
"""1: ``pending.seq`` was ``AUTOINCREMENT`` (still read and written); 2: a plain rowid;
3: attempts count runs that started (the run map), seqs never repeat (``seq_floor``);
4: the ``fire_ids`` table (:mod:`.fire_ids`). An owner open upgrades an older file."""
BUSY_TIMEOUT_MS = 10_000
"""Backstop only: writers queue on the writer lock, so SQLite's busy handler seldom runs."""
PAGE_SIZE = 8192
"""Bytes per page of a new journal file: rows of a group span fewer pages (INSERT 20% faster
than with 4 KiB); a file made with another size keeps it."""
WAL_AUTOCHECKPOINT = 500  # pages: checkpoint when the WAL passes ~4 MB (SQLite: 1000 4 KiB pages)
WAL_LIMIT = 4 * 1024 * 1024
"""Bytes the WAL file is truncated to after a checkpoint (``journal_size_limit``)."""
MAINTAIN_EVERY = 256
"""Commits between two looks at the free pages."""
FREE_PAGES_TO_VACUUM = 128
"""Free pages (1 MiB of 8 KiB pages) above which, if a quarter of the file, they are given back."""

Sync = Literal["normal", "full"]
SYNC_LEVELS: tuple[Sync, ...] = ("normal", "full")

NewRow = tuple[str, str, str, bytes]
"""``(tid, hook_name, format, data bytes)`` of an event to append (see :mod:`.codec`)."""
IdRows = Sequence[tuple[str, str]]
"""``(fire_id, tid)`` of appended events that came with an id (see :mod:`.fire_ids`)."""

_SCHEMA = (
    "CREATE TABLE pending (seq INTEGER PRIMARY KEY, tid TEXT NOT NULL,"
    " hook TEXT NOT NULL, fmt TEXT NOT NULL, data BLOB NOT NULL, accepted REAL NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE dead (seq INTEGER PRIMARY KEY, tid TEXT NOT NULL, hook TEXT NOT NULL,"
    " fmt TEXT NOT NULL, data BLOB NOT NULL, accepted REAL NOT NULL,"
    " attempts INTEGER NOT NULL, died REAL NOT NULL, reason TEXT NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    fire_ids.CREATE,
    "INSERT INTO meta VALUES ('generation', 0)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_META_DEFAULTS = (
    "INSERT OR IGNORE INTO meta VALUES ('id', randomblob(16))",
    "INSERT OR IGNORE INTO meta VALUES ('runs_applied', 0)",
    "INSERT OR IGNORE INTO meta SELECT 'seq_floor', max(ifnull((SELECT max(seq) FROM pending),"
    " 0), ifnull((SELECT max(seq) FROM dead), 0))",
    fire_ids.CREATE,
)
"""The meta rows of schema 3 and the table of schema 4, added to an older file at its
first owner open."""
_COLUMNS = "seq, tid, hook, fmt, data, accepted, attempts"
_NEXT_SEQ = (
    "SELECT max(ifnull((SELECT max(seq) FROM pending), 0),"
    " ifnull((SELECT max(seq) FROM dead), 0),"
    " ifnull((SELECT value FROM meta WHERE key = 'seq_floor'), 0)) + 1"
)
"""The seq of the next row appended (``max(seq)`` of a rowid table is one b-tree descent)."""
_RAISE_FLOOR = (
    "UPDATE meta SET value = ?1 WHERE key = 'seq_floor' AND value < ?1"
    " AND ?1 > ifnull((SELECT max(seq) FROM pending), 0)"
)
"""After a delete whose highest seq is ``?1``: keep it as the floor if no pending row is
above it (an append's rows are above, so a done mark riding with one writes nothing)."""


def tid_prefix(boot: int) -> str:
    """What every tid made in boot ``boot`` of a journal begins with."""
    return f"b{boot}-"



@dataclass(frozen=True)
class Entry:
    """One journaled event; ``died`` and ``reason`` are set for a dead-lettered one."""

    seq: int
    tid: str
    hook: str
    fmt: str
    blob: bytes
    accepted: float
    attempts: int
    died: float | None = None
    reason: str | None = None

    def data(self) -> dict[str, Any]:
        """The event's data (for ``pickle``, this runs the pickle's imports)."""
        return decode(self.fmt, self.blob)


def _fault(path: str, exc: BaseException, doing: str) -> JournalError:
    """The journal error for an SQLite or OS fault, naming the file and what failed."""
    text = str(exc)
    name = getattr(exc, "sqlite_errorname", "")
    where = f"journal {path}: {doing} failed: {text}"
    if name == "SQLITE_FULL" or "full" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return JournalFull(f"{where} (disk full or journal at its size cap)")
    if name in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in text:
        return JournalLocked(f"{where} (another process holds it)")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in text or (
        "malformed" in text
    ):
        return JournalCorrupt(
            f"{where}: the file is damaged or not a journal; move it aside to start with an "
            "empty one (the events pending in it are lost unless it can be repaired)"
        )
    return JournalError(where)


INSERT_CHUNK = 1024
"""Most rows one INSERT statement appends (4 parameters each, far below SQLite's limit)."""


@functools.cache
def _insert(rows: int) -> str:
    """One ``INSERT`` of ``rows`` rows: SQLite runs it in one step, where ``executemany``
    takes a step (and a release and retake of the GIL) per row.

    Its parameters are the time accepted (``?1``, shared), the first row's seq (``?2``),
    then ``tid, hook, fmt, data`` of each row. The other rows' seq is NULL: SQLite gives a
    rowid one above the highest, so they follow the first. Four values a row instead of
    six: binding is a good part of an INSERT's cost from Python.
    """
    head = "INSERT INTO pending (seq, tid, hook, fmt, data, accepted, attempts) VALUES"
    return head + " (?2, ?3, ?4, ?5, ?6, ?1, 0)" + ", (NULL, ?, ?, ?, ?, ?1, 0)" * (rows - 1)


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """``seqs`` as ``(first, last)`` runs of consecutive integers, in order."""
    runs: list[tuple[int, int]] = []
    first = last = None
    for seq in sorted(set(seqs)):
        if last is not None and seq == last + 1:
            last = seq
            continue
        if first is not None and last is not None:
            runs.append((first, last))
        first = last = seq
    if first is not None and last is not None:
        runs.append((first, last))
    return runs


_SIDE_FILES = ("-wal", "-shm", "-journal")
"""The files SQLite opens beside the journal by name (and creates, following links)."""


def _checked_file(path: str) -> tuple[int, int]:
    """Create the journal file if missing, following no link (a link at ``path``,
    dangling or not, is refused, and so is one at a file SQLite opens beside it); the
    file's (device, inode).

    Python's ``sqlite3`` cannot pass ``SQLITE_OPEN_NOFOLLOW`` (an ``sqlite3_open_v2``
    flag, not a URI parameter), so the journal is created here with ``O_NOFOLLOW`` and
    SQLite opens it with ``mode=rw``, which never creates. SQLite still opens the file
    and its ``-wal``/``-shm`` by name, following links: whoever can write into the
    journal's directory could swap one in between this check and that open. :func:`_still`
    narrows that after the open; a directory only the dispatcher's user may write closes it.
    """
    try:
        for suffix in _SIDE_FILES:
            refuse_link(path + suffix)
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o644)
    except UnsafePath as exc:
        raise JournalError(f"journal {path}: refused: {exc}") from None
    except OSError as exc:
        raise _fault(path, exc, "opening") from exc
    try:  # closed before SQLite opens it: closing it later would drop SQLite's locks
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return info.st_dev, info.st_ino


def _still(path: str, checked: tuple[int, int]) -> None:
    """The journal SQLite opened is still the file checked, and no link stands beside it."""
    try:
        info = os.lstat(path)
        for suffix in _SIDE_FILES:
            refuse_link(path + suffix)
    except UnsafePath as exc:
        raise JournalError(f"journal {path}: refused: {exc}") from None
    except OSError as exc:
        raise _fault(path, exc, "opening") from exc
    if (info.st_dev, info.st_ino) != checked:
        raise JournalError(f"journal {path}: refused: the file was replaced while it was opened")


class JournalStore:
    """An open journal file. Use :meth:`open`; every method may raise :class:`JournalError`."""

    def __init__(
        self,
        path: str,
        db: sqlite3.Connection,
        writer: WriterLock,
        owner: OwnerLock | None,
        sync: Sync,
    ) -> None:
        self.path = path
        self.sync: Sync = sync
        self._db = db
        self._writer = writer
        self._owner = owner
        self._lock = threading.Lock()
        self._current_sync = ""
        self._commits_since_look = 0
        self.generation = 0
        """The boot number: owner opens of the file so far, this one included."""
        self.journal_id = b""
        """The file's random id, so that a run map of another file is not taken for its."""

    # -- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        sync: Sync = "normal",
        owner: bool = True,
        create: bool = True,
        max_pages: int | None = None,
        checkpoints: bool = True,
    ) -> JournalStore:
        """Open (or create) the journal at ``path``, checked to be sound, locked if ``owner``.

        ``owner``: take the dispatcher's lock (the main process, the CLI); the server
        process a dispatcher starts opens with ``owner=False``. ``max_pages`` caps the file
        (SQLite's ``max_page_count``): past it commits fail as on a full disk.
        ``checkpoints=False``: this connection's commits never checkpoint the WAL (the
        server process, whose commits its clients' acks wait on: a checkpoint fsyncs and
        writes pages back, up to milliseconds); the owner's commits do it. Raises
        :class:`JournalLocked`, :class:`JournalCorrupt`, :class:`JournalFull` or
        :class:`JournalError`, each naming the file.
        """
        path = os.fspath(path)
        if sync not in SYNC_LEVELS:
            raise JournalError(f"journal {path}: journal_sync must be normal or full, not {sync!r}")
        if not create and not os.path.exists(path):
            raise JournalError(f"no journal at {path}")
        lock = OwnerLock(path) if owner else None
        writer: WriterLock | None = None
        db: sqlite3.Connection | None = None
        try:
            writer = WriterLock(path)
            checked = _checked_file(path)
            try:
                db = sqlite3.connect(
                    Path(path).absolute().as_uri() + "?mode=rw",  # never creates: done above
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                    uri=True,
                )
            except sqlite3.Error as exc:
                raise _fault(path, exc, "opening") from exc
            store = cls(path, db, writer, lock, sync)
            store._prepare(max_pages, bump_generation=owner, checkpoints=checkpoints)
            _still(path, checked)
            return store
        except BaseException:
            if db is not None:
                db.close()
            if writer is not None:
                writer.close()
            if lock is not None:
                lock.release()
            raise

    def _prepare(self, max_pages: int | None, bump_generation: bool, checkpoints: bool) -> None:
        """Switch to WAL, create or check the schema, set the pragmas of this connection."""
        db, path = self._db, self.path
        try:
            with self._writer.held():
                app_id = db.execute("PRAGMA application_id").fetchone()[0]
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if app_id == 0 and tables == 0:
                    db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # first: else it stays 4 KiB
                    db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before any table
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise JournalError(f"journal {path}: SQLite refused WAL mode (got {mode!r})")
                if app_id == 0 and tables == 0:
                    db.execute("BEGIN IMMEDIATE")
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute("COMMIT")
                    app_id = APPLICATION_ID
                self._check(app_id)
                if bump_generation:
                    self._begin_boot()
                meta = dict(db.execute("SELECT key, value FROM meta"))
                self.generation = meta["generation"]
                self.journal_id = meta.get("id", b"")
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT if checkpoints else 0}")
            db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            if max_pages is not None:
                db.execute(f"PRAGMA max_page_count = {int(max_pages)}")
            self._set_sync(self.sync)
        except JournalError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise _fault(path, exc, "opening") from exc

    def _check(self, app_id: int) -> None:
        """Refuse another application's database, a newer schema or a damaged file."""
        path, db = self.path, self._db
        if app_id != APPLICATION_ID:
            raise JournalCorrupt(
                f"journal {path} is an SQLite database but not a rigger_mp journal "
                f"(application_id {app_id:#x}); choose another path"
            )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {path} has schema version {version}, newer than this rigger_mp "
                f"reads ({SCHEMA_VERSION})"
            )
        verdict = [row[0] for row in db.execute("PRAGMA quick_check")]
        if verdict != ["ok"]:
            raise JournalCorrupt(f"journal {path} is damaged: {'; '.join(verdict[:5])}")
        bad = db.execute(
            f"SELECT count(*) FROM pending WHERE fmt NOT IN {FORMATS!r}"
        ).fetchone()[0]
        if bad:
            raise JournalCorrupt(f"journal {path}: {bad} pending row(s) of an unknown format")

    def _begin_boot(self) -> None:
        """An owner's open: upgrade an older file, take the next boot number, and count
        what the last run's map says (attempts of events that started and did not finish;
        events that finished, their done marks not yet committed, deleted)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _META_DEFAULTS:
                db.execute(statement)
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            meta = dict(db.execute("SELECT key, value FROM meta"))
            from .runs import read_runs  # the owner's alone: the server process never loads it

            runs = read_runs(self.path, meta["id"])
            if runs is not None and runs.boot > meta["runs_applied"]:
                self._count_runs(runs.boot, runs.started, runs.finished)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _count_runs(self, boot: int, started: frozenset[int], finished: frozenset[int]) -> None:
        """Apply run ``boot``'s map (inside the open's transaction)."""
        db = self._db
        counted = []
        for seqs, statement in (
            (started, "UPDATE pending SET attempts = attempts + 1 WHERE seq = ?"),
            (finished, "DELETE FROM pending WHERE seq = ?"),
        ):
            rows = db.executemany(statement, [(seq,) for seq in sorted(seqs)]) if seqs else None
            counted.append(rows.rowcount if rows is not None else 0)
        if finished:
            db.execute(_RAISE_FLOOR, (max(finished),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'runs_applied'", (boot,))
        if any(counted):
            log.info(
                "journal %s: run %d ended with %d event(s) running (one attempt each) and "
                "%d finished whose done marks were not written (deleted)",
                self.path,
                boot,
                *counted,
            )

    def _set_sync(self, level: str) -> None:
        if level != self._current_sync:
            self._db.execute(f"PRAGMA synchronous = {level.upper()}")
            self._current_sync = level

    def close(self) -> None:
        """Give back the free pages, checkpoint the WAL into the file and truncate it, close
        and release the locks: a journal at rest is the size of what it holds."""
        with self._lock:
            try:
                with self._writer.held():
                    self._db.executescript("PRAGMA incremental_vacuum")  # execute() frees one
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, JournalError):
                pass  # the WAL stays beside the file and is read at the next open
            finally:
                self._db.close()
                # The owner removes the lock files, each under its lock (see .locks).
                owner = self._owner is not None
                self._writer.close(remove=owner)
                if self._owner is not None:
                    self._owner.release(remove=True)
                    self._owner = None

    # -- writing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(
        self, doing: str, sync: str | None = None, maintain: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction under both locks: committed if the body returns, rolled
        back if it raises; an SQLite error becomes a :class:`JournalError` naming the file
        and ``doing``. ``maintain``: count the commit and give back free pages now and then.
        """
        with self._lock, self._writer.held():
            db = self._db
            try:
                self._set_sync(self.sync if sync is None else sync)
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                if maintain:
                    self._commits_since_look += 1
                    if self._commits_since_look >= MAINTAIN_EVERY:
                        self._give_back_free_pages()
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, doing) from exc

    def commit(
        self, rows: Sequence[NewRow], done: Iterable[int] = (), ids: IdRows = (), keep_ids: int = 0
    ) -> range:
        """Append ``rows`` and delete the done ``seq``s, in one transaction; the new seqs.

        With rows, it commits with the store's ``sync`` level; done marks alone commit
        with ``NORMAL`` (no fsync: a done mark lost to a power cut only means a replay).
        ``ids``: ``(fire_id, tid)`` of rows that came with one, kept (the last ``keep_ids``).
        """
        done = list(done)
        first = 1
        doing = f"commit of {len(rows)} event(s)"
        with self._transaction(doing, self.sync if rows else "normal", maintain=True) as db:
            if rows:
                first = db.execute(_NEXT_SEQ).fetchone()[0]
                now = time.time()
                done_rows = 0
                while done_rows < len(rows):  # chunks of 2**k rows: few cached statements
                    size = min(INSERT_CHUNK, 1 << ((len(rows) - done_rows).bit_length() - 1))
                    part = rows[done_rows : done_rows + size]
                    db.execute(_insert(size), [now, first + done_rows, *chain.from_iterable(part)])
                    done_rows += size
                fire_ids.append(db, ids, keep_ids)
            if done:  # one DELETE per run of consecutive seqs: events mostly end in order
                runs = _runs(done)
                db.executemany("DELETE FROM pending WHERE seq BETWEEN ? AND ?", runs)
                if not rows:  # rows appended now are above every seq deleted
                    db.execute(_RAISE_FLOOR, (runs[-1][1],))
        return range(first, first + len(rows))

    def _give_back_free_pages(self) -> None:
        """Shrink the file when many pages are free (under the locks of a write)."""
        self._commits_since_look = 0
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        if free >= FREE_PAGES_TO_VACUUM and free * 4 >= pages:
            self._db.executescript("PRAGMA incremental_vacuum")  # execute() frees one page

    def checkpoint(self) -> None:
        """Give back free pages and truncate the WAL now (also done as it goes)."""
        with self._lock, self._writer.held():
            try:
                self._db.executescript("PRAGMA incremental_vacuum")  # execute() frees one page
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, "checkpoint") from exc

    def claim_replay(self, max_attempts: int, now: float | None = None) -> tuple[
        list[Entry], list[Entry]
    ]:
        """At start: the pending events to run again and those moved to ``dead``.

        An event whose runs that started and did not finish number ``max_attempts`` goes
        to ``dead``; the others run again, with their ``attempts`` as they are (an event
        that never started has none). Both lists are in accepted order.
        """
        if max_attempts < 1:
            raise JournalError(f"journal {self.path}: journal_max_attempts must be at least 1")
        reason = (
            f"the dispatcher died or stopped during each of its {max_attempts} run(s) "
            f"(journal_max_attempts {max_attempts})"
        )
        with self._transaction("claiming the events to replay") as db:
            died = time.time() if now is None else now
            spent = "WHERE attempts >= ?", (max_attempts,)
            dead = [replace(e, died=died, reason=reason) for e in self._select(*spent)]
            db.execute(
                f"INSERT INTO dead SELECT {_COLUMNS}, ?, ? FROM pending {spent[0]}",
                (died, reason, *spent[1]),
            )
            db.execute(f"DELETE FROM pending {spent[0]}", spent[1])
            run = self._select()
        return run, dead

    def bury(self, seqs: Sequence[int], reason: str) -> None:
        """Move these pending events to ``dead`` with ``reason`` (their data does not
        decode: they cannot start)."""
        marks = ", ".join("?" * len(seqs))
        with self._transaction("moving events to the dead letters") as db:
            db.execute(
                f"INSERT INTO dead SELECT {_COLUMNS}, ?, ? FROM pending WHERE seq IN ({marks})",
                (time.time(), reason, *seqs),
            )
            db.execute(f"DELETE FROM pending WHERE seq IN ({marks})", seqs)

    def retry(self, tids: Sequence[str] | None = None) -> list[Entry]:
        """Move dead events (these tids, or all) back to pending with no attempts counted.

        They run, in their original order, when a dispatcher next starts on the journal.
        Raises :class:`JournalError` naming any tid that is not dead.
        """
        where, params = self._tid_filter(tids)
        with self._transaction("retry") as db:
            moved = self._select(where, params, "dead")
            missing = sorted(set(tids or ()) - {e.tid for e in moved})
            if missing:
                raise JournalError(
                    f"journal {self.path}: no dead event with tid {', '.join(missing)}"
                )
            db.execute(
                "INSERT INTO pending (seq, tid, hook, fmt, data, accepted, attempts) "
                f"SELECT seq, tid, hook, fmt, data, accepted, 0 FROM dead {where}",
                params,
            )
            db.execute(f"DELETE FROM dead {where}", params)
        return moved

    def purge_dead(self) -> int:
        """Delete every dead event; how many there were."""
        with self._transaction("purge") as db:
            top = db.execute("SELECT max(seq) FROM dead").fetchone()[0]
            count = db.execute("DELETE FROM dead").rowcount
            if top is not None:
                db.execute(_RAISE_FLOOR, (top,))
        return int(count)

    def purge(self, tids: Sequence[str]) -> list[Entry]:
        """Delete the pending and dead events with these tids; those deleted.

        All or nothing: raises :class:`JournalError` naming any tid the journal has not.
        """
        where, params = self._tid_filter(tids)
        with self._transaction("purge") as db:
            gone = self._select(where, params) + self._select(where, params, "dead")
            missing = sorted(set(tids) - {e.tid for e in gone})
            if missing:
                raise JournalError(f"journal {self.path}: no event with tid {', '.join(missing)}")
            for table in ("pending", "dead"):
                db.execute(f"DELETE FROM {table} {where}", params)
            db.execute(_RAISE_FLOOR, (max(e.seq for e in gone),))
        return gone

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _tid_filter(tids: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
        if tids is None:
            return "", ()
        return f"WHERE tid IN ({', '.join('?' * len(tids))})", tuple(tids)

    def _select(
        self, where: str = "", params: Sequence[Any] = (), table: str = "pending"
    ) -> list[Entry]:
        extra = ", died, reason" if table == "dead" else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS}{extra} FROM {table} {where} ORDER BY seq", params
        )
        return [Entry(*row) for row in rows]

    def _read(self, table: str, where: str = "", params: Sequence[Any] = ()) -> list[Entry]:
        with self._lock:
            try:
                return self._select(where, params, table)
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, f"reading {table}") from exc

    def pending(self, after: int = 0) -> list[Entry]:
        """Pending events with ``seq > after``, in accepted order."""
        return self._read("pending", "WHERE seq > ?", (after,))

    def dead(self) -> list[Entry]:
        """Dead-lettered events, in accepted order."""
        return self._read("dead")

    def find(self, tid: str) -> list[Entry]:
        """Every pending or dead event with this tid (one, unless the file was written by
        a version whose tids repeated across runs)."""
        return self._read("pending", "WHERE tid = ?", (tid,)) + self._read(
            "dead", "WHERE tid = ?", (tid,)
        )

    def recent_ids(self, limit: int) -> list[tuple[str, str]]:
        """The last ``limit`` ``(fire_id, tid)`` pairs committed, oldest first."""
        with self._lock:
            try:
                return fire_ids.newest(self._db, limit)
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, "reading the fire ids") from exc

    @property
    def tid_prefix(self) -> str:
        """What the tids of this boot begin with (see :func:`tid_prefix`)."""
        return tid_prefix(self.generation)

    def last_seq(self) -> int:
        """The highest seq given so far (0 for an empty journal)."""
        with self._lock:
            try:
                return int(self._db.execute(_NEXT_SEQ).fetchone()[0]) - 1
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, "reading the last seq") from exc

    def counts(self) -> tuple[int, int]:
        """``(pending, dead)``."""
        with self._lock:
            try:
                pending = self._db.execute("SELECT count(*) FROM pending").fetchone()[0]
                dead = self._db.execute("SELECT count(*) FROM dead").fetchone()[0]
            except sqlite3.Error as exc:
                raise _fault(self.path, exc, "counting") from exc
        return pending, dead

    def size_bytes(self) -> int:
        """Bytes on disk: the file and its WAL (the shared-memory index not counted)."""
        total = 0
        for name in (self.path, self.path + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(name)
        return total
