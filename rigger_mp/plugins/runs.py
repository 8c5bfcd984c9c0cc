"""A test run's story as the ``report`` and ``junit`` plugins keep it, from its events.

::

    start_session(run_id, environment)   a Run: its start, the environment of the session
    start_test(...)                      a Case: "unfinished", started now
    finish_test(...)                     the Case gets the test's story (outcome, failure
                                         text, captured sections, attachments, ...)
    finish_session(run_id, exit_status)  Runs.finish: the run leaves the open set as a
                                         Snapshot, which nothing changes any more

Every value of an event may come from the network: each is checked, cut to a bound and
kept as plain data (the pages escape it where they show it). Memory is bounded by
:class:`Limits`: at most ``max_tests`` cases (over the open runs and those still being
written), at most ``max_failure_bytes`` of failure text and ``max_capture_bytes`` of
captured output per test, and at most ``max_text_bytes`` of both over all cases; a test
beyond a bound is counted, its text replaced by a note saying which bound cut it.

A test is identified by ``run_id`` + ``test_location`` + ``test_name``, so the events of
many xdist workers and hosts may interleave. A rerun (pytest-rerunfailures) is a
``finish_test`` with ``rerun`` 1, 2, ...: the attempt with the highest number gives the
test's outcome, and the failure text of an earlier attempt is kept when the last has none
(a flaky test shows why it failed).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .. import printable
from ..core.plugin import ConfigKeys
from ..errors import PluginError
from .artifacts import safe_part

logger = printable.logger("rigger_mp")

MAX_TEXT: Final = 1000
"""Longest test name, location, path or reason kept (characters)."""
MAX_SHORT: Final = 200
"""Longest worker id, host name, run id, marker or phase kept (characters)."""
MAX_ITEMS: Final = 64
"""Most markers, sections, attachments and attempts kept per test."""
MAX_RUNS: Final = 64
"""Open runs (run ids without finish_session) kept; the oldest is dropped beyond."""
MAX_NAMES: Final = 256
"""Most distinct hosts and workers named per run."""
SLOWEST: Final = 10
UNFINISHED: Final = "unfinished"
OUTCOMES: Final = frozenset({"passed", "failed", "error", "skipped", "xfailed", "xpassed"})
SECTION_KINDS: Final = frozenset({"stdout", "stderr", "log"})
DEFAULT_MAX_TESTS: Final = 100_000
DEFAULT_MAX_FAILURE_BYTES: Final = 64 * 1024
DEFAULT_MAX_CAPTURE_BYTES: Final = 256 * 1024
DEFAULT_MAX_TEXT_BYTES: Final = 64 * 1024 * 1024
BUCKETS: Final = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
"""Upper bounds (seconds) of the duration chart's bars; the last bar is above 300 s."""
CUT_NOTE: Final = "\n[... cut: {key} ({limit:,} bytes) reached]"
"""Ends a cut text (its bytes are not counted against the bound: at most one a text)."""


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """A client's value as a bounded string."""
    return (value if isinstance(value, str) else str(value))[:limit]


def optional_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A client's string, bounded; ``None`` for anything that is not a string."""
    return value[:limit] if isinstance(value, str) else None


def seconds(value: Any) -> float | None:
    """A duration a client sent, if it is a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def count(value: Any, top: int = 1_000_000) -> int | None:
    """A client's non-negative integer, if it is one (and below ``top``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
        return None
    return value


def cut(value: str, limit: int, key: str) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes (a whole character), with a note."""
    if len(value) * 4 <= limit:
        return value
    data = value.encode("utf-8", "replace")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore") + CUT_NOTE.format(key=key, limit=limit)


def bucket(took: float) -> int:
    """The duration chart's bar of ``took`` seconds (see :data:`BUCKETS`)."""
    return next((i for i, top in enumerate(BUCKETS) if took < top), len(BUCKETS))


def size(value: str) -> int:
    """``value``'s length in UTF-8 bytes."""
    return len(value.encode("utf-8", "replace"))


def made_root(directory: str) -> Path:
    """The configured root (trusted: the operator's), absolute, made if missing; what is
    below it is made with :mod:`rigger_mp.safe_paths`."""
    root = Path(directory).absolute()
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_dir_name(run_id: str) -> str | None:
    """The directory of a run under the artifacts root; ``None`` without a run id."""
    return safe_part(run_id) if run_id else None


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one plugin instance (its config keys)."""

    max_tests: int = DEFAULT_MAX_TESTS
    max_failure_bytes: int = DEFAULT_MAX_FAILURE_BYTES
    max_capture_bytes: int = DEFAULT_MAX_CAPTURE_BYTES
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES


def limits_of(data: Mapping[str, Any], where: str) -> Limits:
    """The bounds an instance's config sets (checked; defaults where unset)."""
    defaults = Limits()
    values = {}
    for key in ("max_tests", "max_failure_bytes", "max_capture_bytes", "max_text_bytes"):
        value = data.get(key, getattr(defaults, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PluginError(f"{where}: {key} must be an integer >= 0")
        values[key] = value
    return Limits(**values)


LIMIT_KEYS: Final[ConfigKeys] = {  # the config keys of the bounds
    "max_tests": int,
    "max_failure_bytes": int,
    "max_capture_bytes": int,
    "max_text_bytes": int,
}


@dataclass(frozen=True, slots=True)
class Crash:
    path: str
    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Section:
    when: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    size: int | None


@dataclass(slots=True)
class Case:
    """One test: what the report and the JUnit file say of it."""

    location: str
    name: str
    result: str = UNFINISHED
    """``test_result``: passed, failed, skipped or error (JUnit's convention)."""
    outcome: str = UNFINISHED
    """passed, failed, error, skipped, xfailed, xpassed (or the result, when not sent)."""
    duration: float | None = None
    started: float | None = None
    artifact_path: str | None = None
    when: str | None = None
    longrepr: str | None = None
    crash: Crash | None = None
    sections: tuple[Section, ...] = ()
    worker: str | None = None
    host: str | None = None
    markers: tuple[str, ...] = ()
    rerun: int = -1
    """The highest attempt seen: -1 before any finish_test, 0 for the first."""
    attempts: tuple[str, ...] = ()
    """The outcome of each attempt, in order of their rerun numbers."""
    attachments: tuple[Attachment, ...] = ()
    skip_reason: str | None = None
    text_bytes: int = 0
    """Bytes of longrepr and sections held, counted against ``max_text_bytes``."""

    @property
    def flaky(self) -> bool:
        """Failed at least once, then passed on a rerun."""
        return self.rerun > 0 and self.outcome == "passed"


@dataclass(frozen=True, slots=True)
class Environment:
    """What ``start_session`` said of the session, each value bounded."""

    python: str | None = None
    platform: str | None = None
    pytest: str | None = None
    plugins: tuple[tuple[str, str], ...] = ()
    command_line: tuple[str, ...] = ()
    host: str | None = None
    worker: str | None = None


def environment(value: Any) -> Environment:
    """An :class:`Environment` from a client's mapping (anything else: an empty one)."""
    if not isinstance(value, Mapping):
        return Environment()
    plugins = value.get("plugins")
    pairs = (
        tuple(
            (text(k, MAX_SHORT), text(v, MAX_SHORT)) for k, v in list(plugins.items())[:MAX_NAMES]
        )
        if isinstance(plugins, Mapping)
        else ()
    )
    args = value.get("command_line")
    return Environment(
        python=optional_text(value.get("python"), MAX_SHORT),
        platform=optional_text(value.get("platform"), MAX_SHORT),
        pytest=optional_text(value.get("pytest"), MAX_SHORT),
        plugins=tuple(sorted(pairs)),
        command_line=tuple(text(a) for a in args[:MAX_ITEMS]) if isinstance(args, list) else (),
        host=optional_text(value.get("host"), MAX_SHORT),
        worker=optional_text(value.get("worker"), MAX_SHORT),
    )


@dataclass
class Run:
    """One run id's tests: cases up to the bound, and counts of those beyond it."""

    run_id: str
    started: float | None = None
    """Wall-clock start (``time.time()``)."""
    finished: float | None = None
    monotonic_start: float | None = None
    session_seconds: float | None = None
    exit_status: int | None = None
    environment: Environment = field(default_factory=Environment)
    cases: dict[tuple[str, str], Case] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)
    workers: set[str] = field(default_factory=set)
    unlisted: Counter[str] = field(default_factory=Counter)
    unlisted_seconds: float = 0.0
    unlisted_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    unlisted_slowest: list[tuple[float, str, str]] = field(default_factory=list)

    def name(self, kind: set[str], value: str | None) -> None:
        if value is not None and len(kind) < MAX_NAMES:
            kind.add(value)

    def count_unlisted(self, location: str, name: str, outcome: str, took: float | None) -> None:
        self.unlisted[outcome] += 1
        if took is None:
            return
        self.unlisted_seconds += took
        self.unlisted_buckets[bucket(took)] += 1
        entry = (took, location, name)
        if len(self.unlisted_slowest) < SLOWEST:
            heapq.heappush(self.unlisted_slowest, entry)
        else:
            heapq.heappushpop(self.unlisted_slowest, entry)


@dataclass(frozen=True)
class Snapshot:
    """A finished run, handed to a writer thread: nothing changes it any more."""

    run_id: str
    started: float | None
    finished: float | None
    session_seconds: float | None
    exit_status: int | None
    environment: Environment
    cases: Collection[Case]
    """The run's own cases, not a copy: copying 100,000 of them would hold up the event
    thread (the garbage collector runs on such an allocation), and nothing changes them."""
    hosts: tuple[str, ...]
    workers: tuple[str, ...]
    unlisted: Mapping[str, int]
    unlisted_seconds: float
    unlisted_buckets: tuple[int, ...]
    unlisted_slowest: tuple[tuple[float, str, str], ...]
    limits: Limits

    @property
    def dir_name(self) -> str | None:
        return run_dir_name(self.run_id)

    def counts(self) -> Counter[str]:
        """Tests by outcome, listed and unlisted."""
        return Counter(c.outcome for c in self.cases) + Counter(self.unlisted)


class Runs:
    """The open runs of one plugin instance, fed on the event thread.

    Cases of finished runs still being written stay counted against the bounds until the
    writer calls :meth:`release` (from its own thread, hence the lock).
    """

    def __init__(self, ident: str, limits: Limits) -> None:
        self.ident = ident
        self.limits = limits
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._cases = 0
        self._text_bytes = 0

    @property
    def held(self) -> tuple[int, int]:
        """Cases and text bytes held now (open runs and runs being written)."""
        with self._lock:
            return self._cases, self._text_bytes

    def release(self, snapshot: Snapshot) -> None:
        """The writer is done with ``snapshot``: its cases leave the bounds."""
        with self._lock:
            self._cases -= len(snapshot.cases)
            self._text_bytes -= sum(c.text_bytes for c in snapshot.cases)

    def _add(self, cases: int, text_bytes: int) -> None:
        with self._lock:
            self._cases += cases
            self._text_bytes += text_bytes

    # -- the events --------------------------------------------------------------------

    def start_session(self, run_id: Any, env: Any) -> None:
        run = self.run(run_id)
        run.started, run.monotonic_start = time.time(), time.monotonic()
        if isinstance(env, Mapping):
            run.environment = environment(env)
            run.name(run.hosts, run.environment.host)
            run.name(run.workers, run.environment.worker)

    def start_test(self, run_id: Any, location: Any, name: Any, artifact_path: Any = None) -> None:
        if name is None:
            return
        run = self.run(run_id)
        case = self._case(run, text(location), text(name))
        if case is not None:
            case.result = case.outcome = UNFINISHED
            case.duration, case.started = None, time.monotonic()
            case.artifact_path = _artifact_path(artifact_path) or case.artifact_path

    def finish_test(self, event: Mapping[str, Any]) -> None:
        """One ``finish_test``: ``event`` holds the names of the contract."""
        if event.get("test_name") is None:
            return
        now = time.monotonic()
        run = self.run(event.get("run_id"))
        location, name = text(event.get("test_location", "")), text(event.get("test_name"))
        result = text(event["test_result"], 40) if event.get("test_result") is not None else ""
        outcome = event.get("outcome")
        if not (isinstance(outcome, str) and outcome in OUTCOMES):  # a list is unhashable
            outcome = result or "unknown"
        took = seconds(event.get("duration"))
        worker = optional_text(event.get("worker"), MAX_SHORT)
        host = optional_text(event.get("host"), MAX_SHORT)
        run.name(run.workers, worker)
        run.name(run.hosts, host)
        case = self._case(run, location, name)
        if case is None:
            run.count_unlisted(location, name, outcome, took)
            return
        rerun = count(event.get("rerun")) or 0
        if rerun < case.rerun:
            return  # an earlier attempt arriving late: the later one stands
        if took is None and case.started is not None:
            took = now - case.started
        attempts = case.attempts if len(case.attempts) < MAX_ITEMS else case.attempts[:-1]
        case.attempts = (*attempts, outcome)
        case.rerun = rerun
        case.result, case.outcome = result or outcome, outcome
        case.duration, case.started = took, None
        case.worker, case.host = worker, host
        case.when = optional_text(event.get("when"), MAX_SHORT)
        case.markers = _markers(event.get("markers"))
        case.attachments = _attachments(event.get("attachments"))
        case.skip_reason = optional_text(event.get("skip_reason"))
        case.artifact_path = _artifact_path(event.get("artifact_path")) or case.artifact_path
        longrepr = optional_text(event.get("longrepr"), 4 * self.limits.max_failure_bytes)
        if longrepr or case.longrepr is None:  # an earlier attempt's stays if this has none
            self._set_text(case, longrepr, _sections(event.get("sections")))
            case.crash = _crash(event.get("crash"))
        else:
            self._set_text(case, case.longrepr, _sections(event.get("sections")))

    def finish(self, run_id: Any, exit_status: Any) -> Snapshot:
        """The run leaves the open set, as a snapshot for the writer."""
        run = self.run(run_id)
        del self._runs[run.run_id]
        run.finished = time.time()
        if run.monotonic_start is not None:
            run.session_seconds = time.monotonic() - run.monotonic_start
        run.exit_status = count(exit_status, 1 << 16)
        return Snapshot(
            run_id=run.run_id,
            started=run.started,
            finished=run.finished,
            session_seconds=run.session_seconds,
            exit_status=run.exit_status,
            environment=run.environment,
            cases=run.cases.values(),
            hosts=tuple(sorted(run.hosts)),
            workers=tuple(sorted(run.workers, key=lambda w: (len(w), w))),
            unlisted=dict(run.unlisted),
            unlisted_seconds=run.unlisted_seconds,
            unlisted_buckets=tuple(run.unlisted_buckets),
            unlisted_slowest=tuple(run.unlisted_slowest),
            limits=self.limits,
        )

    # -- cases -------------------------------------------------------------------------

    def run(self, run_id: Any) -> Run:
        key = "" if run_id is None else text(run_id, MAX_SHORT)
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= MAX_RUNS:
                oldest = next(iter(self._runs.values()))
                logger.warning(
                    "%s: more than %d open runs; dropping run_id %r "
                    "(%d tests) unreported",
                    self.ident,
                    MAX_RUNS,
                    oldest.run_id,
                    len(oldest.cases),
                )
                del self._runs[oldest.run_id]
                self._add(-len(oldest.cases), -sum(c.text_bytes for c in oldest.cases.values()))
            run = self._runs[key] = Run(key)
        return run

    def _case(self, run: Run, location: str, name: str) -> Case | None:
        """The test's case, made if the bound allows; ``None`` once it is reached."""
        case = run.cases.get((location, name))
        if case is None and self.held[0] < self.limits.max_tests:
            case = run.cases[(location, name)] = Case(location, name)
            self._add(1, 0)
        return case

    def _set_text(self, case: Case, longrepr: str | None, sections: list[Section]) -> None:
        """Keep the failure text and sections within the per-test and total bounds."""
        limits = self.limits
        self._add(0, -case.text_bytes)
        case.text_bytes = 0
        room = max(0, limits.max_text_bytes - self.held[1])
        if longrepr:
            limit = min(limits.max_failure_bytes, room)
            longrepr = cut(longrepr, limit, _key(limits, room))
            case.text_bytes += min(size(longrepr), limit)  # the cut note is not counted
        case.longrepr = longrepr or None
        kept, left = [], min(limits.max_capture_bytes, max(0, room - case.text_bytes))
        for section in sections:
            if not section.text or left < 0:
                continue
            body = cut(section.text, left, _key(limits, room, "max_capture_bytes"))
            used = min(size(body), left)
            left -= used
            case.text_bytes += used
            if body is not section.text:  # cut: the note says by what; later ones go
                left = -1
            kept.append(Section(section.when, section.kind, body))
        case.sections = tuple(kept)
        self._add(0, case.text_bytes)


def _key(limits: Limits, room: int, own: str = "max_failure_bytes") -> str:
    """The bound that cuts a text: the total one when it is the tighter."""
    per_test = limits.max_capture_bytes if own == "max_capture_bytes" else limits.max_failure_bytes
    return "max_text_bytes" if room < per_test else own


def _artifact_path(value: Any) -> str | None:
    """A test's artifact directory as an event gave it (checked where it is used)."""
    return value if isinstance(value, str) and 0 < len(value) <= 4096 else None


def _markers(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(text(m, MAX_SHORT) for m in value[:MAX_ITEMS] if isinstance(m, str))


def _attachments(value: Any) -> tuple[Attachment, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value[:MAX_ITEMS]:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
            out.append(Attachment(text(item["name"]), count(item.get("size"), 1 << 62)))
    return tuple(out)


def _sections(value: Any) -> list[Section]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value[:MAX_ITEMS]:
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            kind = item.get("kind")
            out.append(
                Section(
                    text(item.get("when") or "", MAX_SHORT),
                    kind if isinstance(kind, str) and kind in SECTION_KINDS else "other",
                    item["text"][: 4 * DEFAULT_MAX_CAPTURE_BYTES],
                )
            )
    return out


def _crash(value: Any) -> Crash | None:
    if not isinstance(value, Mapping):
        return None
    return Crash(
        text(value.get("path") or ""),
        count(value.get("line"), 1 << 31),
        text(value.get("message") or "", 4 * MAX_TEXT),
    )


def ordered(cases: Iterable[Case]) -> list[Case]:
    """Failures first (see :data:`RANK`), then by location and name."""
    return sorted(cases, key=lambda c: (RANK.get(c.outcome, 3), c.location, c.name))


RANK: Final = {
    "failed": 0,
    "error": 1,
    UNFINISHED: 2,
    "xpassed": 4,
    "xfailed": 5,
    "skipped": 6,
    "passed": 7,
}
"""Listing order by outcome; any other outcome a client sends ranks 3."""
