"""A test run's story as the ``report`` and ``junit`` plugins keep it, from its events.

::

    start_session(run_id, session_id, environment, shards)
                                         a Run (its start, the environment of its first
                                         session, how many sessions make it when one
                                         says); the session is open
    collect_tests(run_id, session_id, tests=[[location, name], ...])
                                         the session's expected tests (in chunks)
                                         each a Case: "pending" (not started yet)
    start_test(...)                      a Case: "unfinished", started now
    finish_test(...)                     the Case gets the test's story (outcome, failure
                                         text, captured sections, attachments, ...)
    finish_session(run_id, session_id, exit_status)
                                         the session is finished; once every session of
                                         the run is, Runs.finish: the run leaves the open
                                         set as a Snapshot, which nothing changes any more

A run is made of sessions (pytest processes, perhaps on many hosts, sharing a run id):
it ends when each session that started it has finished (and, when a session said how
many make the run, ``shards``, once that many have), or when its owner ends it after
``run_timeout`` without an event (:meth:`Runs.idle`). At its end each test that
was expected or started and has no ``finish_test`` is ``missing``.

Every value of an event may come from the network: each is checked, cut to a bound and
kept as plain data (the pages escape it where they show it). Memory is bounded by
:class:`Limits`: at most ``max_tests`` cases (over the open runs and those still being
written), at most ``max_failure_bytes`` of failure text and ``max_capture_bytes`` of
captured output per test, and at most ``max_text_bytes`` of both over all cases; a test
beyond a bound is counted, its text replaced by a note saying which bound cut it.

A test is identified by ``run_id`` + ``session_id`` + ``test_location`` + ``test_name``,
so the events of many xdist workers and hosts may interleave, and a test that two
sessions (shards) ran is two cases. Expected ids count against ``max_tests``; those
beyond it are counted, not kept. A rerun (pytest-rerunfailures) is a
``finish_test`` with ``rerun`` 1, 2, ...: the attempt with the highest number gives the
test's outcome, and the failure text of an earlier attempt is kept when the last has none
(a flaky test shows why it failed).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .. import printable
from ..core.plugin import ConfigKeys
from ..errors import PluginError
from .artifacts import safe_part
from .run_values import (
    BUCKETS,
    DEFAULT_MAX_CAPTURE_BYTES,
    MAX_ITEMS,
    MAX_NAMES,
    MAX_SHORT,
    MAX_TEXT,
    Attachment,
    Crash,
    Environment,
    Section,
    artifact_path_of,
    attachments_of,
    bucket,
    count,
    crash_of,
    cut,
    environment,
    markers_of,
    optional_text,
    seconds,
    sections_of,
    size,
    text,
)

logger = printable.logger("rigger_mp")

MAX_RUNS: Final = 64
"""Open runs (run ids without finish_session) kept; the oldest is dropped beyond."""
SLOWEST: Final = 10
PENDING: Final = "pending"
"""A test collected (expected) and not started while its run is open."""
UNFINISHED: Final = "unfinished"
"""A test started and not finished while its run is open."""
MISSING: Final = "missing"
"""A test expected or started and never finished when its run ended."""
MAX_SESSIONS: Final = 1024
"""Sessions (shards) tracked per run; a session beyond starts and ends nothing."""
MAX_COLLECT: Final = 100_000
"""Test ids read from one collect_tests event; the rest of the event is ignored."""
OUTCOMES: Final = frozenset({"passed", "failed", "error", "skipped", "xfailed", "xpassed"})
DEFAULT_MAX_TESTS: Final = 100_000
DEFAULT_MAX_FAILURE_BYTES: Final = 64 * 1024
DEFAULT_MAX_TEXT_BYTES: Final = 64 * 1024 * 1024


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


@dataclass(slots=True)
class Case:
    """One test: what the report and the JUnit file say of it."""

    location: str
    name: str
    session: str = ""
    """The session (shard) that ran it: a test two shards ran is two cases."""
    expected: bool = False
    """Its session's collect_tests listed it."""
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

    @property
    def missing_note(self) -> str:
        """Why a missing test is missing: it started and never ended, or never started."""
        if self.started is not None:
            return "started, never finished (no finish_test)"
        return "collected, never started (no start_test or finish_test)"


@dataclass(slots=True)
class Session:
    """One pytest session (shard) of a run, as its start_session and finish_session say."""

    session_id: str
    host: str | None = None
    started: float | None = None
    """Wall-clock start; ``None`` when only its finish_session or tests were seen."""
    finished: float | None = None
    exit_status: int | None = None
    timed_out: bool = False
    """The run ended (``run_timeout``) before this session's finish_session."""


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
    cases: dict[tuple[str, str, str], Case] = field(default_factory=dict)
    """By (session, location, name)."""
    hosts: set[str] = field(default_factory=set)
    workers: set[str] = field(default_factory=set)
    unlisted: Counter[str] = field(default_factory=Counter)
    unlisted_seconds: float = 0.0
    unlisted_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    unlisted_slowest: list[tuple[float, str, str]] = field(default_factory=list)
    expected_kept: int = 0
    """Expected tests kept as cases (``expected`` true)."""
    expected_unlisted: int = 0
    """Expected test ids beyond ``max_tests``: counted, not kept."""
    open_cases: int = 0
    """Cases pending or unfinished now: the run's end relabels them only when some are."""
    sessions: dict[str, Session] = field(default_factory=dict)
    shards: int = 0
    """Sessions the run is made of, the most any of its sessions said (``--rigger-shards``):
    it ends only once that many have finished (0: unknown, once those that started have)."""
    last_event: float = field(default_factory=time.monotonic)
    """Monotonic time of the run's last event: ``run_timeout`` counts from it."""

    @property
    def expected_count(self) -> int:
        """Test ids the run's sessions said they would run."""
        return self.expected_kept + self.expected_unlisted

    def all_finished(self) -> bool:
        """Every session that started the run has sent its finish_session, and at least
        as many as the run is made of (``shards``)."""
        finished = sum(s.finished is not None for s in self.sessions.values())
        return finished == len(self.sessions) and finished >= self.shards

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
    expected: int = 0
    """Test ids the sessions expected (sent in collect_tests), listed or not."""
    missing: int = 0
    """Tests expected or started and never finished: the listed ``missing`` cases and
    those beyond ``max_tests`` (expected beyond it, less the unlisted that finished)."""
    missing_unlisted: int = 0
    """The part of :attr:`missing` beyond ``max_tests`` (counted, not listed)."""
    sessions: tuple[Session, ...] = ()
    """The run's sessions (shards), in order of their start."""
    shards: int = 0
    """Sessions a session said make the run (0: none said)."""
    timed_out: bool = False
    """The run ended by ``run_timeout``, not by its sessions' finish_session."""

    @property
    def dir_name(self) -> str | None:
        return run_dir_name(self.run_id)

    def counts(self) -> Counter[str]:
        """Tests by outcome, listed and unlisted (``missing`` included)."""
        counts = Counter(c.outcome for c in self.cases) + Counter(self.unlisted)
        if self.missing_unlisted:
            counts[MISSING] += self.missing_unlisted
        return counts


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
        self.on_drop: Callable[[str], None] | None = None
        """Told the key of an open run dropped beyond :data:`MAX_RUNS`."""

    @property
    def held(self) -> tuple[int, int]:
        """Cases (expected tests included) and text bytes held now (open runs and runs
        being written)."""
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

    def open_runs(self) -> list[Run]:
        """The open runs, oldest first (read on the event thread, which changes them)."""
        return list(self._runs.values())

    def is_open(self, run_id: Any) -> bool:
        return run_key(run_id) in self._runs

    # -- the events --------------------------------------------------------------------

    def apply(self, event: str, data: Mapping[str, Any]) -> Snapshot | None:
        """One event of a run, by name, with its data as the event carried it; the
        run's snapshot when the event ended it."""
        run_id, session_id = data.get("run_id"), data.get("session_id")
        if event == "start_session":
            self.start_session(run_id, data.get("environment"), session_id, data.get("shards"))
        elif event == "collect_tests":
            self.collect(run_id, session_id, data.get("tests"))
        elif event == "start_test":
            self.start_test(
                run_id,
                data.get("test_location", ""),
                data.get("test_name"),
                data.get("artifact_path"),
                session_id,
                data.get("worker"),
                data.get("host"),
            )
        elif event == "finish_test":
            self.finish_test(data)
        elif event == "finish_session":
            return self.finish_session(run_id, session_id, data.get("exit_status"))
        return None

    def start_session(
        self, run_id: Any, env: Any, session_id: Any = None, shards: Any = None
    ) -> None:
        run = self.run(run_id)
        run.shards = max(run.shards, count(shards, MAX_SESSIONS + 1) or 0)
        if run.started is None:
            run.started, run.monotonic_start = time.time(), time.monotonic()
        session = self._session(run, session_id)
        if isinstance(env, Mapping):
            kept = environment(env)
            if not run.sessions or len(run.sessions) == 1:  # the first session's
                run.environment = kept
            run.name(run.hosts, kept.host)
            run.name(run.workers, kept.worker)
            if session is not None:
                session.host = kept.host
        if session is not None:
            session.started, session.finished = time.time(), None

    def collect(self, run_id: Any, session_id: Any, tests: Any) -> None:
        """The session expects ``tests`` (``[[location, name], ...]``; one chunk of them)."""
        run = self.run(run_id)
        if not isinstance(tests, list):
            return
        session = _session_key(session_id)
        cases, room, made = run.cases, self.limits.max_tests - self.held[0], 0
        for item in tests[:MAX_COLLECT]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
                continue
            location, name = item
            if not isinstance(location, str) or len(location) > MAX_TEXT:
                location = text(location)
            key = (session, location, name[:MAX_TEXT])
            case = cases.get(key)
            if case is None:
                if made >= room:
                    run.expected_unlisted += 1
                    continue
                case = cases[key] = Case(key[1], key[2], session, result=PENDING, outcome=PENDING)
                made += 1
                run.open_cases += 1
            if not case.expected:  # a chunk sent twice counts once
                case.expected = True
                run.expected_kept += 1
        self._add(made, 0)

    def start_test(
        self,
        run_id: Any,
        location: Any,
        name: Any,
        artifact_path: Any = None,
        session_id: Any = None,
        worker: Any = None,
        host: Any = None,
    ) -> None:
        """The test starts: on ``worker`` of ``host`` when the event says (a missing test
        then says where it was running)."""
        if name is None:
            return
        run = self.run(run_id)
        case = self._case(run, _session_key(session_id), text(location), text(name))
        if case is not None:
            if case.outcome not in (PENDING, UNFINISHED):  # a rerun starts it again
                run.open_cases += 1
            case.result = case.outcome = UNFINISHED
            case.duration, case.started = None, time.monotonic()
            case.artifact_path = artifact_path_of(artifact_path) or case.artifact_path
            case.worker = optional_text(worker, MAX_SHORT) or case.worker
            case.host = optional_text(host, MAX_SHORT) or case.host

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
        case = self._case(run, _session_key(event.get("session_id")), location, name)
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
        if case.outcome in (PENDING, UNFINISHED):
            run.open_cases -= 1
        case.result, case.outcome = result or outcome, outcome
        case.duration, case.started = took, None
        case.worker, case.host = worker, host
        case.when = optional_text(event.get("when"), MAX_SHORT)
        case.markers = markers_of(event.get("markers"))
        case.attachments = attachments_of(event.get("attachments"))
        case.skip_reason = optional_text(event.get("skip_reason"))
        case.artifact_path = artifact_path_of(event.get("artifact_path")) or case.artifact_path
        longrepr = optional_text(event.get("longrepr"), 4 * self.limits.max_failure_bytes)
        if longrepr or case.longrepr is None:  # an earlier attempt's stays if this has none
            self._set_text(case, longrepr, sections_of(event.get("sections")))
            case.crash = crash_of(event.get("crash"))
        else:
            self._set_text(case, case.longrepr, sections_of(event.get("sections")))

    def finish_session(self, run_id: Any, session_id: Any, exit_status: Any) -> Snapshot | None:
        """The session is finished; the run's snapshot if that was its last open session
        (or it had none), else ``None``: the run waits for its other shards. Of a run that
        is not open (it ended by its timeout before this came, or was never seen) it ends
        nothing: a new, empty run would write its files over the ended run's."""
        if not self.is_open(run_id):
            return None
        run = self.run(run_id)
        session = self._session(run, session_id)
        if session is not None:
            session.finished = time.time()
            session.exit_status = count(exit_status, 1 << 16)
        if not run.all_finished():
            return None
        return self.finish(run.run_id, exit_status)

    def idle(self, run_id: str, timeout: float) -> Snapshot | float | None:
        """On the owner's timer: the run's snapshot if ``timeout`` seconds passed since its
        last event (its open sessions then timed out); else when (monotonic) it would.
        ``None`` when the run is no longer open."""
        run = self._runs.get(run_id)
        if run is None:
            return None
        due = run.last_event + timeout
        if time.monotonic() < due:
            return due
        for session in run.sessions.values():
            session.timed_out = session.finished is None
        return self.finish(run.run_id, None, timed_out=True)

    def finish(self, run_id: Any, exit_status: Any, timed_out: bool = False) -> Snapshot:
        """The run leaves the open set, as a snapshot for the writer; each test expected
        or started and not finished is ``missing``. ``exit_status`` is the worst of its
        sessions' when they said one."""
        run = self.run(run_id)
        del self._runs[run.run_id]
        run.finished = time.time()
        if run.monotonic_start is not None:
            run.session_seconds = time.monotonic() - run.monotonic_start
        statuses = [s.exit_status for s in run.sessions.values() if s.exit_status is not None]
        run.exit_status = max(statuses) if statuses else count(exit_status, 1 << 16)
        hosts = {s.session_id: s.host for s in run.sessions.values()}
        listed_missing = 0
        for case in run.cases.values() if run.open_cases else ():
            if case.outcome in (PENDING, UNFINISHED):
                case.result = case.outcome = MISSING
                case.host = case.host or hosts.get(case.session)
                listed_missing += 1
        missing_unlisted = max(0, run.expected_unlisted - sum(run.unlisted.values()))
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
            expected=run.expected_count,
            missing=listed_missing + missing_unlisted,
            missing_unlisted=missing_unlisted,
            sessions=tuple(run.sessions.values()),
            shards=run.shards,
            timed_out=timed_out,
        )

    # -- cases -------------------------------------------------------------------------

    def run(self, run_id: Any) -> Run:
        """The open run of ``run_id`` (made if new); its last event is now."""
        key = run_key(run_id)
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= MAX_RUNS:
                oldest = next(iter(self._runs.values()))
                logger.warning(
                    "%s: more than %d open runs; dropping run_id %r (%d tests) unreported",
                    self.ident,
                    MAX_RUNS,
                    oldest.run_id,
                    len(oldest.cases),
                )
                del self._runs[oldest.run_id]
                self._add(-len(oldest.cases), -sum(c.text_bytes for c in oldest.cases.values()))
                if self.on_drop is not None:
                    self.on_drop(oldest.run_id)
            run = self._runs[key] = Run(key)
        run.last_event = time.monotonic()
        return run

    def _session(self, run: Run, session_id: Any) -> Session | None:
        """The run's session of ``session_id``, made if the bound allows."""
        key = _session_key(session_id)
        session = run.sessions.get(key)
        if session is None and len(run.sessions) < MAX_SESSIONS:
            session = run.sessions[key] = Session(key)
        return session

    def _case(self, run: Run, session: str, location: str, name: str) -> Case | None:
        """The test's case, made if the bound allows; ``None`` beyond it."""
        key = (session, location, name)
        case = run.cases.get(key)
        if case is None and self.held[0] < self.limits.max_tests:
            case = run.cases[key] = Case(location, name, session)  # unfinished
            run.open_cases += 1
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


def run_key(run_id: Any) -> str:
    """The key of a run: its id as a bounded string, ``""`` without one."""
    return "" if run_id is None else text(run_id, MAX_SHORT)


def case_key(session_id: Any, location: Any, name: Any) -> tuple[str, str, str]:
    """The key of a test in :attr:`Run.cases`: (session, location, name), each bounded."""
    return _session_key(session_id), text(location), text(name)


def _session_key(session_id: Any) -> str:
    return "" if session_id is None else text(session_id, MAX_SHORT)


def _key(limits: Limits, room: int, own: str = "max_failure_bytes") -> str:
    """The bound that cuts a text: the total one when it is the tighter."""
    per_test = limits.max_capture_bytes if own == "max_capture_bytes" else limits.max_failure_bytes
    return "max_text_bytes" if room < per_test else own


def ordered(cases: Iterable[Case]) -> list[Case]:
    """Failures first (see :data:`RANK`), then by location and name."""
    return sorted(cases, key=lambda c: (RANK.get(c.outcome, 3), c.location, c.name))


RANK: Final = {
    "failed": 0,
    "error": 1,
    UNFINISHED: 2,
    MISSING: 2,
    PENDING: 2,
    "xpassed": 4,
    "xfailed": 5,
    "skipped": 6,
    "passed": 7,
}
"""Listing order by outcome; any other outcome a client sends ranks 3."""
