"""``rigger-mp journal``: look into, retry and purge a journal whose dispatcher is not running.

Each command takes the journal's owner lock for its duration (see
:mod:`rigger_mp.journal.locks`), so it refuses, naming the holder's pid, while a
dispatcher runs on the file, and a dispatcher started meanwhile refuses to start.

- ``list``: pending and dead events (seq, tid, hook, age, attempts; dead ones with their
  last error).
- ``show TID``: one event with its data: JSON data as JSON; pickled data (in-process
  events whose arguments are not plain JSON) only as its size, unless ``--unpickle``
  (which runs the pickle's imports, so only for a journal you trust) prints its repr.
- ``retry TID... | --all-dead``: dead events back to pending, attempts reset; they run
  when a dispatcher next starts on the journal.
- ``purge TID... | --dead``: delete these events, pending or dead (a pending poison
  event, say, that would otherwise crash the dispatcher at its next starts), or every
  dead one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..journal import MARSHAL, PICKLE, Entry, JournalError, JournalStore, plain_json
from ..printable import printable
from .status import human_duration


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Register ``journal`` and its commands on the top-level sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-j", "--journal", metavar="PATH", required=True, help="the journal file (SQLite)"
    )
    common.add_argument("--json", action="store_true", help="print JSON")
    journal = sub.add_parser(
        "journal",
        help="list, show, retry or purge the events of a journal (dispatcher stopped)",
        description="Inspect a dispatcher's journal: the events accepted and not finished "
        "(pending) and those that used up journal_max_attempts (dead). The dispatcher must "
        "not be running: the journal is locked while it is.",
    )
    commands = journal.add_subparsers(
        dest="journal_command", metavar="COMMAND", parser_class=parser_class, required=True
    )
    commands.add_parser(
        "list",
        parents=[common],
        help="pending and dead events",
        description="List the journal's pending and dead events, one line each: seq, tid, "
        "hook, age, attempts (runs that started and did not finish) and, for a dead "
        "event, its last error.",
    )
    show = commands.add_parser(
        "show",
        parents=[common],
        help="one event and its data",
        description="Show the journal's event(s) with tid TID: state, seq, hook, age, "
        "attempts and data (JSON data as JSON; pickled data as its size unless --unpickle).",
    )
    show.add_argument("tid", metavar="TID")
    show.add_argument(
        "--unpickle",
        action="store_true",
        help="print pickled data too (runs the pickle's imports: trusted journals only)",
    )
    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="move dead events back to pending",
        description="Move dead events back to pending with their attempts reset; they run "
        "in their accepted order when a dispatcher next starts on the journal.",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("tids", metavar="TID", nargs="*", default=[])
    which.add_argument("--all-dead", action="store_true", help="every dead event")
    purge = commands.add_parser(
        "purge",
        parents=[common],
        help="delete events, pending or dead",
        description="Delete the events with these tids, pending or dead (they never run), "
        "or every dead event (--dead).",
    )
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("tids", metavar="TID", nargs="*", default=[])
    what.add_argument("--dead", action="store_true", help="every dead event")


def _row(entry: Entry, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "state": "dead" if entry.died is not None else "pending",
        "seq": entry.seq,
        "tid": entry.tid,
        "hook": entry.hook,
        "format": entry.fmt,
        "accepted": entry.accepted,
        "age_seconds": round(now - entry.accepted, 3),
        "attempts": entry.attempts,
    }
    if entry.died is not None:
        row["died"] = entry.died
        row["last_error"] = entry.reason
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'state':<8} {'seq':>8}  {'tid':<16} {'hook':<20} {'age':>10} {'attempts':>8}"
        "  last error"
    ]
    for row in rows:
        line = (
            f"{row['state']:<8} {row['seq']:>8}  {printable(row['tid']):<16} "
            f"{printable(row['hook']):<20} "
            f"{human_duration(row['age_seconds']):>10} {row['attempts']:>8}"
        )
        if row["state"] == "dead":
            line += f"  {printable(str(row['last_error']))}"
        lines.append(line)
    return "\n".join(lines)


def _show(entry: Entry, now: float, unpickle: bool) -> dict[str, Any]:
    row = _row(entry, now)
    row["bytes"] = len(entry.blob)
    if entry.fmt == PICKLE and not unpickle:
        row["data"] = None
    else:
        try:
            data = entry.data()
        except Exception as exc:
            row["data"] = None
            row["error"] = f"cannot decode: {type(exc).__name__}: {exc}"
        else:
            # Marshalled data that is not plain JSON (a tuple, bytes, an int key): its repr.
            shown = entry.fmt != PICKLE and (entry.fmt != MARSHAL or plain_json(data))
            row["data"] = data if shown else repr(data)
    return row


def _show_text(row: dict[str, Any]) -> str:
    lines = [printable(f"{key}: {row[key]}") for key in row if key not in ("data", "error")]
    if "error" in row:
        lines.append(printable(f"data: {row['error']}"))
    elif row["format"] == PICKLE and row["data"] is None:
        lines.append(
            f"data: pickle, {row['bytes']} bytes (not unpickled: --unpickle shows it, "
            "running the pickle's imports)"
        )
    elif row["format"] == PICKLE:
        lines.append(printable(f"data (pickle, unpickled): {row['data']}"))
    elif isinstance(row["data"], str):
        lines.append(printable(f"data ({row['format']}, not plain JSON): {row['data']}"))
    else:  # JSON escapes every control character (ensure_ascii) but DEL
        data = json.dumps(row["data"], indent=2, sort_keys=True)
        lines.append("data: " + printable(data, keep_lines=True))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run one ``journal`` command; 0 on success (errors raise :class:`JournalError`)."""
    store = JournalStore.open(args.journal, owner=True, create=False)
    try:
        now = time.time()
        command: str = args.journal_command
        out: Any
        if command == "list":
            rows = [_row(e, now) for e in store.pending() + store.dead()]
            out = {"journal": store.path, "events": rows}
            text = _table(rows) + f"\n{len(rows)} event(s) in {store.path}"
        elif command == "show":
            entries = store.find(args.tid)
            if not entries:
                raise JournalError(
                f"no event with tid {printable(args.tid)} in journal {store.path}"
            )
            shown = [_show(e, now, args.unpickle) for e in entries]
            out = shown
            text = "\n\n".join(_show_text(row) for row in shown)
        elif command == "retry":
            moved = store.retry(None if args.all_dead else args.tids)
            out = {"retried": [e.tid for e in moved]}
            text = (
                f"{len(moved)} event(s) back to pending in {store.path}; they run when a "
                "dispatcher next starts on it"
            )
        elif args.dead:  # purge --dead
            count = store.purge_dead()
            out = {"purged": count}
            text = f"{count} dead event(s) deleted from {store.path}"
        else:  # purge TID...
            gone = store.purge(args.tids)
            out = {"purged": [_row(e, now) for e in gone]}
            text = "\n".join(
                [f"{len(gone)} event(s) deleted from {store.path}:"]
                + [f"  {row['state']} {row['tid']} ({row['hook']})" for row in out["purged"]]
            )
        print(json.dumps(out, indent=2, sort_keys=True) if args.json else text, file=sys.stdout)
        return 0
    finally:
        store.close()
