"""The runs' index: ``<root>/index.html`` lists every run written under the root.

Each run's directory holds a small ``run.json`` (:func:`summary`: its id, start and end,
counts by outcome (``missing`` among them), tests expected, sessions, whether it ended by
``run_timeout``, exit status), written with its report. At each run's end the index is
rebuilt from the ``run.json`` files found in the root's directories, so runs of earlier
dispatchers (earlier pytest sessions, a restarted ``serve``) stay listed: newest first,
with their counts and links to their ``report.html`` and ``junit.xml``.

The root is shared: a ``run.json`` is read like any input, from a real directory (no
link followed), bounded, parsed as JSON and checked; the page escapes every value.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from ..safe_paths import open_file, write_atomically
from .run_values import MAX_SHORT, count, text
from .runs import RANK, Snapshot

RUN_FILE: Final = "run.json"
INDEX_NAME: Final = "index.html"
MAX_RUN_FILE: Final = 64 * 1024
"""Largest ``run.json`` read (bytes); a larger one is skipped."""
MAX_LISTED: Final = 1000
"""Runs listed in the index, newest first; older ones are counted."""
MAX_SCANNED: Final = 20_000
"""Directories of the root looked into for a ``run.json``."""
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'"


def summary(snapshot: Snapshot) -> dict[str, Any]:
    """What the index needs of a run, as ``run.json`` holds it."""
    return {
        "run_id": snapshot.run_id,
        "started": snapshot.started,
        "finished": snapshot.finished,
        "exit_status": snapshot.exit_status,
        "counts": dict(snapshot.counts()),
        "flaky": sum(1 for c in snapshot.cases if c.flaky),
        "expected": snapshot.expected,
        "missing": snapshot.missing,
        "sessions": len(snapshot.sessions),
        "shards": snapshot.shards or None,
        "timed_out": snapshot.timed_out,
    }


def write_summary(root: Path, dir_name: str, snapshot: Snapshot) -> Path:
    data = json.dumps(summary(snapshot), sort_keys=True).encode()
    return write_atomically(root, f"{dir_name}/{RUN_FILE}", data)


def _read(root: Path, dir_name: str) -> dict[str, Any] | None:
    """A run's checked summary, or ``None`` (missing, a link, too large, malformed)."""
    try:
        fd = open_file(root, f"{dir_name}/{RUN_FILE}", os.O_RDONLY, make_parents=False)
    except (OSError, ValueError):
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_RUN_FILE + 1)
    if len(data) > MAX_RUN_FILE:
        return None
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, Mapping):
        return None
    counts = raw.get("counts")
    return {
        "dir": dir_name,
        "run_id": text(raw.get("run_id") or dir_name, MAX_SHORT),
        "started": _stamp(raw.get("started")),
        "finished": _stamp(raw.get("finished")),
        "exit_status": count(raw.get("exit_status"), 1 << 16),
        "counts": {
            text(k, 40): n
            for k, n in (list(counts.items())[:32] if isinstance(counts, Mapping) else [])
            if count(n, 1 << 40) is not None
        },
        "flaky": count(raw.get("flaky"), 1 << 40) or 0,
    }


def _stamp(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < 1e11 else None


def runs(root: Path) -> list[dict[str, Any]]:
    """The summaries of the runs under ``root``, newest first."""
    found = []
    try:
        with os.scandir(root) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_SCANNED:
                    break
                if entry.is_dir(follow_symlinks=False):
                    run = _read(root, entry.name)
                    if run is not None:
                        found.append(run)
    except OSError:
        return []
    found.sort(key=lambda r: (r["finished"] or 0.0, r["dir"]), reverse=True)
    return found


_index_lock = threading.Lock()


def write_index(root: Path) -> Path:
    """Rebuild ``<root>/index.html`` from the runs found under ``root``.

    One rebuild at a time in this process (the report and the JUnit file of a run are
    written by threads of their own, each rebuilding the index after its file), so the
    last rebuild has seen every file written before it."""
    with _index_lock:
        page = render(runs(root), root)
        return write_atomically(root, INDEX_NAME, page.encode("utf-8"))


def render(found: list[dict[str, Any]], root: Path) -> str:
    esc = html.escape
    rows = []
    for run in found[:MAX_LISTED]:
        here = quote(run["dir"], safe="")
        links = [f'<a href="./{here}/report.html">report</a>']
        if (root / run["dir"] / "junit.xml").is_file():
            links.append(f'<a href="./{here}/junit.xml">junit.xml</a>')
        counts = run["counts"]
        shown = sorted(counts, key=lambda k: (RANK.get(k, 3), k))
        tally = " · ".join(
            f'<span class="r-{esc(k if k in RANK else "other")}">{counts[k]:,} {esc(k)}</span>'
            for k in shown
        )
        if run["flaky"]:
            tally += f' · <span class="r-flaky">{run["flaky"]:,} flaky</span>'
        took = (
            f"{run['finished'] - run['started']:.1f} s"
            if run["started"] is not None and run["finished"] is not None
            else "\u2014"
        )
        status = "\u2014" if run["exit_status"] is None else str(run["exit_status"])
        rows.append(
            f'<tr><td class="wrap"><a href="./{here}/report.html">{esc(run["run_id"])}</a></td>'
            f"<td class=num>{esc(_clock(run['finished']))}</td><td class=num>{esc(took)}</td>"
            f"<td class=num>{sum(counts.values()):,}</td><td class=tally>{tally}</td>"
            f"<td class=num>{esc(status)}</td><td>{' '.join(links)}</td></tr>"
        )
    more = ""
    if len(found) > MAX_LISTED:
        more = f"<p>{len(found) - MAX_LISTED:,} older runs are not listed.</p>"
    return _PAGE.format(
        csp=CSP,
        rows="\n".join(rows) or '<tr><td colspan="7">no runs yet</td></tr>',
        written=esc(time.strftime("%Y-%m-%d %H:%M:%S %z")),
        more=more,
    )


def _clock(stamp: float | None) -> str:
    if stamp is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>rigger_mp runs</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: .25em .7em; border-bottom: 1px solid #eee; }}
td.wrap {{ overflow-wrap: anywhere; min-width: 10em; }}
td.tally span {{ white-space: nowrap; }}
.num {{ text-align: right; white-space: nowrap; }}
td.num:nth-child(2) {{ text-align: left; }}
.r-failed {{ color: #c62828; }} .r-error, .r-unfinished, .r-missing {{ color: #ad1457; }}
.r-passed {{ color: #2e7d32; }} .r-skipped, .r-xfailed {{ color: #8d6e00; }}
.r-flaky, .r-xpassed {{ color: #6a1b9a; }}
</style>
</head>
<body>
<h1>rigger_mp runs</h1>
<p>Newest first; written {written}.</p>
<table id="runs">
<thead><tr><th>run</th><th>finished</th><th class="num">took</th><th class="num">tests</th>
<th>by outcome</th><th class="num">exit</th><th>files</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{more}
</body>
</html>
"""
