"""The report page of one run: ``render(snapshot, links)`` gives the whole HTML.

The page (``report_assets/``) is plain HTML, CSS and a little JavaScript, all inline: it
opens from disk. The summary and the environment are rendered here (escaped); the test
list is rendered by the script from inline JSON (escaped so that it cannot leave its
``<script>``), with text only (``textContent``), and reads its filter from the URL:
``report.html#result=failed&q=login&open=1``. A strict Content-Security-Policy allows
the page's own script (by hash), inline styles, and images from the page's own origin
(the attachments' thumbnails): nothing a test sent can run.

Each test is one compact JSON list; what only some tests have (failure text, captured
sections, attachments, markers, reruns, a skip reason) is in a last element that is
``0`` for the others. Worker and host names are given once and referred to by index.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import html
import json
import os
import string
import time
from collections import Counter
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..safe_paths import relative_parts
from .run_values import BUCKETS, bucket, text
from .runs import MISSING, RANK, SLOWEST, Case, Snapshot, ordered

if TYPE_CHECKING:
    from .archive import ArchivePlugin

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp"})
"""Attachments shown as thumbnails (an ``<img>`` runs no script, even an SVG's)."""


class Links:
    """Where a test's artifacts, attachments and archive are, as links relative to the
    report's directory.

    Every path (from events, or recorded from them) is checked against the artifacts
    root here, where it is used: anything outside gets no link.
    """

    def __init__(
        self,
        root: Path,
        archives: Mapping[str, Any],
        archiver: ArchivePlugin | None,
        base: Path | None = None,
    ) -> None:
        self.root = root
        self.base = root if base is None else base
        self.archiver = archiver
        # The archive plugin's recent problems, by directory (bounded by its keep_errors).
        self.errors: dict[str, str] = {}
        for record in archives.values():
            if isinstance(record, Mapping):
                for problem in record.get("last_errors", ()):
                    if isinstance(problem, Mapping):
                        self.errors[str(problem.get("path"))] = str(problem.get("error"))

    def href(self, path: str | os.PathLike[str]) -> str | None:
        """``./a/b%5B1%5D`` (or ``../x``) for a path inside the root, else ``None``."""
        try:
            resolved = Path(path).resolve()
            inside = resolved.relative_to(self.root)
        except (ValueError, OSError):
            return None
        if not inside.parts:
            return None
        rel = os.path.relpath(resolved, self.base)
        prefix = "" if rel.startswith("..") else "./"
        return prefix + quote(Path(rel).as_posix(), safe="/")

    def directory(self, artifact_path: str | None) -> str | None:
        """The link to the test's artifact directory, if it exists."""
        if artifact_path is None or not os.path.isdir(artifact_path):
            return None
        return self.href(artifact_path)

    def attachment(self, artifact_path: str | None, name: str) -> str | None:
        """The link to an attachment: ``name`` relative to the test's directory."""
        if artifact_path is None:
            return None
        try:
            parts = relative_parts(name)
        except ValueError:
            return None
        return self.href(Path(artifact_path).joinpath(*parts))

    def archive(self, artifact_path: str | None) -> tuple[str, str | None, str]:
        """``(state, link, note)``: ``present``, ``pending``, ``failed`` or ``none``."""
        if artifact_path is None or self.href(artifact_path) is None:
            return "none", None, ""
        if self.archiver is None:
            return "none", None, ""
        expected = self.archiver.target(os.path.abspath(artifact_path))
        if os.path.isfile(expected):
            return "present", self.href(expected), _size(expected)
        problem = self.errors.get(os.path.realpath(artifact_path))
        if problem is None and not os.path.isdir(artifact_path):
            problem = "missing directory"  # the archiver fails on it: nothing will be made
        if problem is not None:
            return "failed", None, text(problem, 200)
        return "pending", self.href(expected), "being made when the report was written"


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return ""


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>``, ``&``, U+2028/9."""
    return _json(data)


def _json(data: Any) -> str:
    out = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        out = out.replace(char, escape)
    return out


def asset(name: str) -> str:
    """One of the page's files, shipped in ``report_assets/``."""
    package = resources.files(__package__)
    return package.joinpath("report_assets").joinpath(name).read_text("utf-8")


def duration_text(seconds: float | None) -> str:
    """``0.012 s``, ``3.40 s``, ``2 min 05 s``; ``—`` when unknown."""
    if seconds is None:
        return "\u2014"
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def clock(stamp: float | None) -> str:
    """A wall-clock time as ``2026-12-07 18:59:09 +0000``; ``—`` when unknown."""
    if stamp is None:
        return "\u2014"
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(stamp))


def _extra(case: Case, links: Links) -> dict[str, Any] | int:
    """What only some tests have, under one-letter keys; ``0`` when there is nothing."""
    extra: dict[str, Any] = {}
    if case.longrepr:
        extra["f"] = case.longrepr
    if case.crash is not None:
        where = case.crash.path + (f":{case.crash.line}" if case.crash.line is not None else "")
        extra["c"] = f"{where}: {case.crash.message}" if where else case.crash.message
    if case.when and case.outcome in ("failed", "error"):
        extra["w"] = case.when
    if case.sections:
        extra["s"] = [[s.when, s.kind, s.text] for s in case.sections]
    if case.attachments:
        extra["a"] = [
            [
                a.name,
                links.attachment(case.artifact_path, a.name),
                a.size,
                1 if Path(a.name).suffix.lower() in IMAGE_SUFFIXES else 0,
            ]
            for a in case.attachments
        ]
    if case.markers:
        extra["m"] = list(case.markers)
    if case.rerun > 0:
        extra["t"] = list(case.attempts)
    if case.skip_reason and case.outcome in ("skipped", "xfailed"):
        extra["k"] = case.skip_reason
    elif case.outcome == MISSING:
        extra["k"] = case.missing_note
    return extra or 0


def render(snapshot: Snapshot, links: Links) -> str:
    """The whole page for ``snapshot``."""
    cases = ordered(snapshot.cases)
    counts = snapshot.counts()
    durations = [c.duration for c in cases if c.duration is not None]
    buckets = list(snapshot.unlisted_buckets)
    for took in durations:
        buckets[bucket(took)] += 1
    slowest = heapq.nlargest(
        SLOWEST,
        [(c.duration, c.location, c.name) for c in cases if c.duration is not None]
        + list(snapshot.unlisted_slowest),
    )
    names: dict[str | None, int] = {None: -1}
    table: list[str] = []

    def index(name: str | None) -> int:
        if name not in names:
            names[name] = len(table)
            table.append(name or "")
        return names[name]

    # Each test's JSON is made at once and its list dropped: the page of 100,000 tests
    # then keeps strings, which the garbage collector does not track, instead of 100,000
    # lists that would survive into its oldest generation and make it walk the whole heap
    # (holding the interpreter, and so the event thread, for hundreds of milliseconds).
    tests = []
    for c in cases:
        state, archive_href, note = links.archive(c.artifact_path)
        tests.append(
            _json(
                [
                    c.outcome,
                    c.location,
                    c.name,
                    None if c.duration is None else round(c.duration, 6),
                    index(c.worker),
                    index(c.host),
                    links.directory(c.artifact_path),
                    state,
                    archive_href,
                    note,
                    _extra(c, links),
                ]
            )
        )
    results = sorted(counts, key=lambda k: (RANK.get(k, 3), k))
    flaky = sum(1 for c in cases if c.flaky)
    summary = _summary(snapshot, counts, results, flaky, sum(durations) + snapshot.unlisted_seconds)
    summary += "\n" + _chart(buckets) + "\n" + _slowest(slowest) + "\n" + _environment(snapshot)
    summary += _sessions(snapshot)
    title = "rigger_mp report" + (f": run {snapshot.run_id}" if snapshot.run_id else "")
    js = "\n" + asset("report.js") + "\n"
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    head = _json({"results": results, "flaky": flaky, "names": table})
    data = head[:-1] + ',"tests":[' + ",".join(tests) + "]}"
    return string.Template(asset("report.html")).substitute(
        title=html.escape(title),
        css=asset("report.css"),
        js=js,
        script_hash=f"sha256-{digest}",
        summary=summary,
        data=data,
    )


def _summary(
    snapshot: Snapshot,
    counts: Counter[str],
    results: list[str],
    flaky: int,
    total_seconds: float,
) -> str:
    esc = html.escape
    total = sum(counts.values())
    unlisted = sum(snapshot.unlisted.values())
    parts = ['<dl class="counts">', f'<div><dt>tests</dt><dd id="count-all">{total:,}</dd></div>']
    shown = [(r, counts[r]) for r in results] + ([("flaky", flaky)] if flaky else [])
    for result, number in shown:
        anchor = esc("#" + "result=" + quote(result, safe=""))
        parts.append(
            f'<div class="r-{esc(css_class(result))}"><dt><a href="{anchor}">{esc(result)}</a>'
            f'</dt><dd data-result="{esc(result)}">{number:,}</dd></div>'
        )
    parts.append("</dl>")
    facts = [f"total test time {esc(duration_text(total_seconds))}"]
    if snapshot.expected:
        facts.append(f'<span id="expected">{snapshot.expected:,} expected</span>')
    if snapshot.session_seconds is not None:
        facts.append(f"session {esc(duration_text(snapshot.session_seconds))}")
    if snapshot.exit_status is not None:
        facts.append(f"exit status {snapshot.exit_status}")
    facts.append(time.strftime("written %Y-%m-%d %H:%M:%S %z"))
    parts.append(f'<p class="facts">{" · ".join(facts)}</p>')
    if snapshot.timed_out:
        absent, shards = snapshot.shards - len(snapshot.sessions), snapshot.shards
        never = f" {absent:,} of its {shards:,} shards never started." if absent > 0 else ""
        parts.append(
            f'<p class="bound" id="timed-out">The run ended by run_timeout: '
            f"{sum(s.timed_out for s in snapshot.sessions):,} of its sessions never sent "
            f"finish_session; their tests without a finish_test are missing.{never}</p>"
        )
    if snapshot.missing_unlisted:
        parts.append(
            f'<p class="bound" id="missing-unlisted">{snapshot.missing_unlisted:,} missing '
            f"tests beyond max_tests ({snapshot.limits.max_tests:,}) are counted above but "
            "not listed below.</p>"
        )
    if unlisted:
        parts.append(
            f'<p class="bound" id="unlisted">{unlisted:,} tests beyond max_tests '
            f"({snapshot.limits.max_tests:,}) are counted above but not listed below.</p>"
        )
    return "\n".join(parts)


KNOWN_CLASSES = frozenset(RANK) | {"flaky"}


def css_class(result: str) -> str:
    """The class suffix of a result's colour (``other`` for one a client made up)."""
    return result if result in KNOWN_CLASSES else "other"


def _slowest(slowest: list[tuple[float, str, str]]) -> str:
    if not slowest:
        return ""
    esc = html.escape
    parts = ['<h2>Slowest</h2><table class="slowest"><tbody>']
    for took, location, name in slowest:
        parts.append(
            f'<tr><td class="num">{esc(duration_text(took))}</td>'
            f'<td class="location">{esc(location)}</td><td class="name">{esc(name)}</td></tr>'
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def _environment(snapshot: Snapshot) -> str:
    """The environment block: versions, hosts, workers, run id, times, command line."""
    env = snapshot.environment
    rows: list[tuple[str, str]] = [
        ("run id", snapshot.run_id or "\u2014"),
        ("started", clock(snapshot.started)),
        ("finished", clock(snapshot.finished)),
        ("Python", env.python or "\u2014"),
        ("platform", env.platform or "\u2014"),
        ("pytest", env.pytest or "\u2014"),
        ("plugins", ", ".join(f"{n} {v}" for n, v in env.plugins) or "\u2014"),
        ("hosts", ", ".join(snapshot.hosts) or "\u2014"),
        ("workers", ", ".join(snapshot.workers) or "\u2014"),
        ("command line", " ".join(env.command_line) or "\u2014"),
    ]
    esc = html.escape
    body = "".join(
        f'<tr><th scope="row">{esc(k)}</th><td class="wrap">{esc(v)}</td></tr>' for k, v in rows
    )
    return f'<h2>Environment</h2><table id="environment"><tbody>{body}</tbody></table>'


def _sessions(snapshot: Snapshot) -> str:
    """The sessions (shards) of the run: where each ran, when, and how it ended."""
    if not [s for s in snapshot.sessions if s.session_id]:
        return ""
    esc = html.escape
    rows = []
    for session in snapshot.sessions:
        if session.timed_out:
            ended = "timed out (no finish_session)"
        elif session.exit_status is not None:
            ended = f"exit status {session.exit_status}"
        else:
            ended = "\u2014"
        host = session.host or "\u2014"
        rows.append(
            f'<tr><td class="wrap">{esc(session.session_id)}</td>'
            f'<td class="wrap">{esc(host)}</td>'
            f"<td>{esc(clock(session.started))}</td><td>{esc(clock(session.finished))}</td>"
            f"<td>{esc(ended)}</td></tr>"
        )
    head = "<tr><th>session</th><th>host</th><th>started</th><th>finished</th><th>end</th></tr>"
    started, shards = len(snapshot.sessions), snapshot.shards
    of = f" ({started:,} of {shards:,} shards)" if shards > 0 and started <= shards else ""
    return (
        f'\n<h2>Sessions{of}</h2><table id="sessions"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _chart(buckets: list[int]) -> str:
    """An inline SVG bar chart of the tests per duration bucket."""
    labels = ["< 10 ms", "< 100 ms", "< 1 s", "< 10 s", "< 1 min", "< 5 min", "≥ 5 min"]
    assert len(labels) == len(BUCKETS) + 1
    top = max(buckets) or 1
    width, height, bar = 560, 150, 80
    out = [
        f'<h2>Durations</h2><svg class="chart" viewBox="0 0 {width} {height + 40}" '
        f'width="{width}" height="{height + 40}" role="img" '
        'aria-label="tests per duration">'
    ]
    for i, (number, label) in enumerate(zip(buckets, labels, strict=True)):
        h = round(height * number / top)
        x = i * bar
        out.append(
            f'<g><rect x="{x + 8}" y="{height - h + 16}" width="{bar - 16}" height="{h}">'
            f"<title>{number:,} tests {html.escape(label)}</title></rect>"
            f'<text x="{x + bar / 2}" y="{height - h + 12}" class="n">{number:,}</text>'
            f'<text x="{x + bar / 2}" y="{height + 34}">{html.escape(label)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)
