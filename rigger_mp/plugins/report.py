"""Built-in plugin ``report``: one self-contained ``report.html`` per test session.

::

    start_session(run_id)                      a _Session for run_id (its start time)
    start_test(test_name, test_location, ...)  a _Row: "unfinished", started now
    finish_test(..., test_result[, duration])  the row gets its result and duration
    finish_session(run_id, exit_status)        the session is written to <dir>/report.html
    (after stop(): rewrite_reports)            the last report again, archives settled

Everything runs on the event thread, in the main process (the instance refuses
``background: true``): rows live in this instance, not in the global namespace. A test
is identified by ``run_id`` + ``test_location`` + ``test_name``, so events of many xdist
workers and hosts may interleave; rows are listed in an order that does not depend on
that interleaving (failures first, then by location and name). Durations are measured
from ``start_test`` to ``finish_test`` on the dispatcher's clock, unless ``finish_test``
carries a ``duration`` (seconds).

Memory: at most ``max_tests`` rows over the open sessions; tests beyond are counted by
result (durations only when the event carries one) but not listed, and the report says
so. The last report's rows are kept for :func:`rewrite_reports`.

Archives: the last tests' archives are made by backgrounded hooks that may still be
running at ``finish_session``. Each test links the file the ``archive`` instance writes
for it (:meth:`ArchivePlugin.target`): "present" once it exists, "failed" when the
instance's recent problems (``last_errors`` in the ``archives`` global) name the
directory or the directory is gone (the archiver fails on it), else "pending". No
lifecycle hook tells a plugin that the pool has drained, so the hosts (``serve``, the
demo) call :func:`rewrite_reports` after ``stop()`` to mark the settled state.

The page (``report_assets/``) is plain HTML, CSS and a little JavaScript, all inline:
it opens from disk. The summary is rendered here (escaped); the table is rendered by the
script from inline JSON (escaped so it cannot leave its ``<script>``) and reads its
filter from the URL: ``report.html#result=failed&q=login``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import heapq
import html
import json
import math
import os
import string
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from .. import printable
from ..core.plugin import ConfigKeys, RiggerBasePlugin
from ..errors import PluginError
from .archive import ArchivePlugin

logger = printable.logger("rigger_mp")

REPORT_NAME = "report.html"
DEFAULT_DIR = "rigger-artifacts"
"""Where the report goes when no host fills in ``dir``: serve's and pytest's default root."""
DEFAULT_MAX_TESTS = 100_000
MAX_SESSIONS = 64
"""Open sessions (run_ids without finish_session) kept; the oldest is dropped beyond."""
MAX_TEXT = 1000
"""Longest test name or location kept (characters); a longer one is cut."""
SLOWEST = 10
UNFINISHED = "unfinished"
RANK = {"failed": 0, "error": 1, UNFINISHED: 2, "skipped": 4, "passed": 5}
"""Listing order by result; any other result a client sends ranks 3."""
BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
"""Upper bounds (seconds) of the duration chart's bars; the last bar is above 300 s."""


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A client's value as a bounded string."""
    return (value if isinstance(value, str) else str(value))[:limit]


def _seconds(value: Any) -> float | None:
    """A duration a client sent, if it is a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _path(value: Any) -> str | None:
    """An artifact path from an event, if it is a bounded string (checked where used)."""
    return value if isinstance(value, str) and len(value) <= 4096 else None


@dataclass(slots=True)
class _Row:
    """One listed test: what the report shows of it."""

    location: str
    name: str
    result: str = UNFINISHED
    duration: float | None = None
    started: float | None = None
    artifact_path: str | None = None


@dataclass
class _Session:
    """One run_id's tests: rows up to the bound, and counts of those beyond it."""

    run_id: str
    started: float | None = None
    finished: float | None = None
    exit_status: Any = None
    rows: dict[tuple[str, str], _Row] = field(default_factory=dict)
    unlisted: Counter[str] = field(default_factory=Counter)
    unlisted_seconds: float = 0.0
    unlisted_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    unlisted_slowest: list[tuple[float, str, str]] = field(default_factory=list)

    def count_unlisted(self, location: str, name: str, result: str, seconds: float | None) -> None:
        self.unlisted[result] += 1
        if seconds is None:
            return
        self.unlisted_seconds += seconds
        self.unlisted_buckets[_bucket(seconds)] += 1
        entry = (seconds, location, name)
        if len(self.unlisted_slowest) < SLOWEST:
            heapq.heappush(self.unlisted_slowest, entry)
        else:
            heapq.heappushpop(self.unlisted_slowest, entry)


def _bucket(seconds: float) -> int:
    return next((i for i, top in enumerate(BUCKETS) if seconds < top), len(BUCKETS))


class ReportPlugin(RiggerBasePlugin):
    """Writes ``<dir>/report.html`` at each ``finish_session``."""

    config_keys: ClassVar[ConfigKeys] = {
        "dir": str,
        "max_tests": int,
        "archive": (str, type(None)),
    }

    def plugin_initialize(self) -> None:
        data = self.data
        where = f"instance {self.ident!r} (plugin report)"
        self.dir = data.get("dir", DEFAULT_DIR)
        self.max_tests = data.get("max_tests", DEFAULT_MAX_TESTS)
        self.archive = data.get("archive")
        if not isinstance(self.dir, str) or not self.dir:
            raise PluginError(f"{where}: dir must be a directory path")
        if (
            not isinstance(self.max_tests, int)
            or isinstance(self.max_tests, bool)
            or self.max_tests < 0
        ):
            raise PluginError(f"{where}: max_tests must be an integer >= 0")
        if self.archive is not None and not isinstance(self.archive, str):
            raise PluginError(f"{where}: archive must be an instance name or null")
        if data.get("background"):
            raise PluginError(
                f"{where}: the report keeps its rows in the main process; "
                "it cannot run in the worker pool (background: true)"
            )
        self._sessions: dict[str, _Session] = {}
        self._listed = 0
        self._last: _Session | None = None
        for event in ("start_session", "start_test", "finish_test", "finish_session"):
            self.register_plugin_hook(event)

    @property
    def path(self) -> Path:
        """Where the report is written."""
        return Path(self.dir).absolute() / REPORT_NAME

    # -- the events --------------------------------------------------------------------

    def start_session(self, run_id: Any = None) -> None:
        self._session(run_id).started = time.monotonic()

    def start_test(
        self,
        test_name: Any = None,
        test_location: Any = "",
        run_id: Any = None,
        artifact_path: Any = None,
    ) -> None:
        if test_name is None:
            return
        session = self._session(run_id)
        row = self._row(session, _text(test_location), _text(test_name))
        if row is not None:
            row.result, row.duration, row.started = UNFINISHED, None, time.monotonic()
            row.artifact_path = _path(artifact_path)

    def finish_test(
        self,
        test_name: Any = None,
        test_location: Any = "",
        test_result: Any = None,
        run_id: Any = None,
        duration: Any = None,
        artifact_path: Any = None,
    ) -> None:
        if test_name is None:
            return
        now = time.monotonic()
        session = self._session(run_id)
        location, name = _text(test_location), _text(test_name)
        result = _text(test_result, 40) if test_result is not None else "unknown"
        seconds = _seconds(duration)
        row = self._row(session, location, name)
        if row is None:
            session.count_unlisted(location, name, result, seconds)
            return
        if seconds is None and row.started is not None:
            seconds = now - row.started
        row.result, row.duration, row.started = result, seconds, None
        row.artifact_path = _path(artifact_path) or row.artifact_path

    def finish_session(self, run_id: Any = None, exit_status: Any = None) -> None:
        session = self._session(run_id)
        del self._sessions[session.run_id]
        self._listed -= len(session.rows)
        session.finished = time.monotonic()
        session.exit_status = exit_status if isinstance(exit_status, int) else None
        self._last = session
        self.write(session)

    # -- rows --------------------------------------------------------------------------

    def _session(self, run_id: Any) -> _Session:
        key = "" if run_id is None else _text(run_id, 200)
        session = self._sessions.get(key)
        if session is None:
            if len(self._sessions) >= MAX_SESSIONS:
                oldest = next(iter(self._sessions.values()))
                logger.warning(
                    "rigger_mp: report %r: more than %d open sessions; dropping run_id %r "
                    "(%d rows) unreported",
                    self.ident,
                    MAX_SESSIONS,
                    oldest.run_id,
                    len(oldest.rows),
                )
                del self._sessions[oldest.run_id]
                self._listed -= len(oldest.rows)
            session = self._sessions[key] = _Session(key)
        return session

    def _row(self, session: _Session, location: str, name: str) -> _Row | None:
        """The test's row, made if the bound allows; ``None`` once it is reached."""
        row = session.rows.get((location, name))
        if row is None and self._listed < self.max_tests:
            row = session.rows[(location, name)] = _Row(location, name)
            self._listed += 1
        return row

    # -- the page ----------------------------------------------------------------------

    def rewrite(self) -> Path | None:
        """Write the last session's report again (its archives may have been made since)."""
        if self._last is None:
            return None
        return self.write(self._last)

    def write(self, session: _Session) -> Path:
        """Write ``session``'s report, atomically; return its path."""
        target = self.path
        target.parent.mkdir(parents=True, exist_ok=True)
        page = render(session, self._links(), self.max_tests)
        partial = target.with_name(f".{target.name}.part-{os.getpid()}")
        try:
            partial.write_text(page, encoding="utf-8")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        logger.info("rigger_mp: report %r: %s", self.ident, target)
        return target

    def _links(self) -> Links:
        rigger = self._rigger
        archives = getattr(rigger, "global_data", {}).get("archives", {})
        archiver = None
        get = getattr(rigger, "get_instance_obj", None)
        if get is not None:
            if self.archive is not None:
                archiver = get(self.archive)
            else:
                instances: Mapping[str, Any] = getattr(rigger, "instances", {})
                archiver = next(
                    (i.obj for i in instances.values() if isinstance(i.obj, ArchivePlugin)), None
                )
        return Links(
            Path(self.dir).resolve(),
            archives if isinstance(archives, Mapping) else {},
            archiver if isinstance(archiver, ArchivePlugin) else None,
        )


class Links:
    """Where a test's artifacts and archive are, as links relative to the report.

    Every path (from events, or recorded from them) is checked against the artifacts
    root here, where it is used: anything outside gets no link.
    """

    def __init__(
        self, root: Path, archives: Mapping[str, Any], archiver: ArchivePlugin | None
    ) -> None:
        self.root = root
        self.archiver = archiver
        # The archive plugin's recent problems, by directory (bounded by its keep_errors).
        self.errors: dict[str, str] = {}
        for record in archives.values():
            if isinstance(record, Mapping):
                for problem in record.get("last_errors", ()):
                    if isinstance(problem, Mapping):
                        self.errors[str(problem.get("path"))] = str(problem.get("error"))

    def href(self, path: str | os.PathLike[str]) -> str | None:
        """``./a/b%5B1%5D`` for a path inside the root, else ``None``."""
        try:
            rel = Path(path).resolve().relative_to(self.root)
        except (ValueError, OSError):
            return None
        return "./" + quote(rel.as_posix(), safe="/") if rel.parts else None

    def directory(self, artifact_path: str | None) -> str | None:
        """The link to the test's artifact directory, if it exists."""
        if artifact_path is None or not os.path.isdir(artifact_path):
            return None
        return self.href(artifact_path)

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
            return "failed", None, _text(problem, 200)
        return "pending", self.href(expected), "being made when the report was written"


def _size(path: str) -> str:
    try:
        return f"{os.path.getsize(path):,} bytes"
    except OSError:
        return ""


# -- rendering -----------------------------------------------------------------------------


def ordered(rows: Iterable[_Row]) -> list[_Row]:
    """Failures first (see :data:`RANK`), then by location and name."""
    return sorted(rows, key=lambda r: (RANK.get(r.result, 3), r.location, r.name))


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``<``, ``>``, ``&``, U+2028/9."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("report_assets").joinpath(name).read_text("utf-8")


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


def render(session: _Session, links: Links, max_tests: int) -> str:
    """The whole page for ``session``."""
    rows = ordered(session.rows.values())
    counts = Counter(r.result for r in rows) + session.unlisted
    durations = [r.duration for r in rows if r.duration is not None]
    buckets = list(session.unlisted_buckets)
    for seconds in durations:
        buckets[_bucket(seconds)] += 1
    slowest = heapq.nlargest(
        SLOWEST,
        [(r.duration, r.location, r.name) for r in rows if r.duration is not None]
        + session.unlisted_slowest,
    )
    tests = []
    for r in rows:
        state, archive_href, note = links.archive(r.artifact_path)
        tests.append(
            [
                r.result,
                r.location,
                r.name,
                None if r.duration is None else round(r.duration, 6),
                links.directory(r.artifact_path),
                state,
                archive_href,
                note,
            ]
        )
    results = sorted(counts, key=lambda k: (RANK.get(k, 3), k))
    summary = _summary(
        session,
        counts,
        results,
        sum(durations) + session.unlisted_seconds,
        slowest,
        buckets,
        max_tests,
    )
    title = "rigger_mp report" + (f": run {session.run_id}" if session.run_id else "")
    js = "\n" + _asset("report.js") + "\n"
    digest = base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()
    return string.Template(_asset("report.html")).substitute(
        title=html.escape(title),
        css=_asset("report.css"),
        js=js,
        script_hash=f"sha256-{digest}",
        summary=summary,
        data=script_json({"results": results, "tests": tests}),
    )


def _summary(
    session: _Session,
    counts: Counter[str],
    results: list[str],
    total_seconds: float,
    slowest: list[tuple[float, str, str]],
    buckets: list[int],
    max_tests: int,
) -> str:
    esc = html.escape
    total = sum(counts.values())
    unlisted = sum(session.unlisted.values())
    parts = ['<dl class="counts">', f'<div><dt>tests</dt><dd id="count-all">{total:,}</dd></div>']
    for result in results:
        anchor = esc("#" + "result=" + quote(result, safe=""))
        parts.append(
            f'<div class="r-{esc(_css_class(result))}"><dt><a href="{anchor}">{esc(result)}</a>'
            f'</dt><dd data-result="{esc(result)}">{counts[result]:,}</dd></div>'
        )
    parts.append("</dl>")
    facts = [f"total test time {esc(duration_text(total_seconds))}"]
    if session.started is not None and session.finished is not None:
        facts.append(f"session {esc(duration_text(session.finished - session.started))}")
    if session.exit_status is not None:
        facts.append(f"exit status {session.exit_status}")
    facts.append(time.strftime("written %Y-%m-%d %H:%M:%S %z"))
    parts.append(f'<p class="facts">{" · ".join(facts)}</p>')
    if unlisted:
        parts.append(
            f'<p class="bound" id="unlisted">{unlisted:,} tests beyond max_tests '
            f"({max_tests:,}) are counted above but not listed below.</p>"
        )
    parts.append(_chart(buckets))
    if slowest:
        parts.append('<h2>Slowest</h2><table class="slowest"><tbody>')
        for seconds, location, name in slowest:
            parts.append(
                f'<tr><td class="num">{esc(duration_text(seconds))}</td>'
                f"<td>{esc(location)}</td><td>{esc(name)}</td></tr>"
            )
        parts.append("</tbody></table>")
    return "\n".join(parts)


def _css_class(result: str) -> str:
    return result if result in RANK else "other"


def _chart(buckets: list[int]) -> str:
    """An inline SVG bar chart of the tests per duration bucket."""
    labels = ["< 10 ms", "< 100 ms", "< 1 s", "< 10 s", "< 1 min", "< 5 min", "≥ 5 min"]
    top = max(buckets) or 1
    width, height, bar = 560, 150, 80
    out = [
        f'<h2>Durations</h2><svg class="chart" viewBox="0 0 {width} {height + 40}" '
        f'width="{width}" height="{height + 40}" role="img" '
        'aria-label="tests per duration">'
    ]
    for i, (count, label) in enumerate(zip(buckets, labels, strict=True)):
        h = round(height * count / top)
        x = i * bar
        out.append(
            f'<g><rect x="{x + 8}" y="{height - h + 16}" width="{bar - 16}" height="{h}">'
            f"<title>{count:,} tests {html.escape(label)}</title></rect>"
            f'<text x="{x + bar / 2}" y="{height - h + 12}" class="n">{count:,}</text>'
            f'<text x="{x + bar / 2}" y="{height + 34}">{html.escape(label)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


# -- for the hosts (serve, the demo, pytest --rigger-config) ------------------------------


def with_dir(config: Mapping[str, Any], root: str | os.PathLike[str]) -> dict[str, Any]:
    """A copy of ``config`` whose ``report`` instances without ``dir`` write into ``root``."""
    out = dict(config)
    plugins = out.get("plugins")
    if isinstance(plugins, Mapping):
        out["plugins"] = plugins = copy.deepcopy(dict(plugins))
        for spec in plugins.values():
            if isinstance(spec, dict) and spec.get("plugin") == "report" and "dir" not in spec:
                spec["dir"] = os.fspath(root)
    return out


def rewrite_reports(instances: Mapping[str, Any]) -> list[Path]:
    """After ``stop()``: rewrite each report instance's last report; return the paths.

    ``instances`` is ``rigger.instances``. By then the pool has drained, so every archive
    is made or failed and the report says so.
    """
    written = []
    for instance in instances.values():
        if isinstance(instance.obj, ReportPlugin):
            path = instance.obj.rewrite()
            if path is not None:
                written.append(path)
    return written
