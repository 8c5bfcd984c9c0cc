"""The runs as the live view shows them, kept in the server process from the fires it
accepts.

::

    Server.fire ─ taps[hook_name](data) ─▶ RunBoard.start_session / collect_tests /
                                           start_test / finish_test / finish_session
                                              │ Runs (rigger_mp.plugins.runs): the cases
                                              │ + per run: lanes, last failures, rows
                                              ▼
    GET /runs, /runs/{id} ◀── run_json(entry)       subscribers ◀── delta(since)

    call_at(last event + run_timeout) ─▶ _due: Runs.idle ends the quiet run (timed out),
                                         or the deadline moves to its last event's

The run state is the report plugin's own (:class:`~rigger_mp.plugins.runs.Runs`): one
parser of the test events. What the board adds is what a live view needs and a report
does not: the test each host's worker runs now (a lane), the last failures in the order
they came, and a sequence number on every change, so that a subscriber is sent only the
rows changed since it was last written to.

A run ends when its last open session says ``finish_session``, or, as the report's does,
``run_timeout`` seconds after its last event (a shard that died never says it): the board
keeps one timer per open run on the server's event loop (``call_at``), set at the run's
first event and moved on only when it comes due, so an event costs the clock nothing.

Bounds: ``max_tests`` cases over the runs kept (the Runs' own bound: past it a test is
counted, not listed), :data:`MAX_RUNS` runs (the oldest finished one, else the oldest,
is dropped), :data:`MAX_FAILURES` failures and :data:`RECENT` finished rows per run,
:data:`~rigger_mp.plugins.runs.MAX_NAMES` lanes per run. Nothing here blocks: each call
runs on the server process's event loop.
"""

from __future__ import annotations

import heapq
import os
import pickle
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol
from urllib.parse import quote

from ..plugins.artifacts import artifact_dir
from ..plugins.run_state import Found, open_runs
from ..plugins.run_timeout import DEFAULT_RUN_TIMEOUT
from ..plugins.run_values import MAX_NAMES, MAX_SHORT, optional_text, text
from ..plugins.runs import (
    PENDING,
    SLOWEST,
    UNFINISHED,
    Case,
    Limits,
    Run,
    Runs,
    Snapshot,
    case_key,
    run_dir_name,
    run_key,
)
from .pipe_messages import Restored

MAX_RUNS: Final = 16
"""Runs kept on the board, open or finished."""
MAX_FAILURES: Final = 50
"""Failures kept per run (the last ones), each with its text."""
FAILURE_TEXT: Final = 8 * 1024
"""Characters of a failure's text the view shows (the report has all of it)."""
RECENT: Final = 500
"""Finished tests kept per run as rows a subscriber is sent (older ones: ``/tests``)."""
MAX_LISTED: Final = 1000
"""Rows one ``GET /runs/{id}/tests`` answers with (with the count of all that match)."""
REPORT_NAME: Final = "report.html"
RESTORE_BYTES: Final = 64 * 1024 * 1024
"""The most a restarted dispatcher's live view reads back: the report plugin's state files,
then the run events of the journal's replay (pickled, without their captured output)."""
BOARD_EVENTS: Final = (
    "start_session",
    "collect_tests",
    "start_test",
    "finish_test",
    "finish_session",
)
"""The events the board follows (:attr:`RunBoard.taps`)."""
BOARD_LIMITS: Final = Limits(
    max_failure_bytes=16 * 1024, max_capture_bytes=0, max_text_bytes=16 * 1024 * 1024
)
"""The board keeps no captured output and less failure text than a report does."""


@dataclass(slots=True)
class Lane:
    """One worker of one host: what it runs now and what it has done."""

    host: str
    worker: str
    test: str | None = None
    since: float | None = None
    done: int = 0
    failed: int = 0
    seq: int = 0


class Timer(Protocol):
    """A callback set for later (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


CallAt = Callable[[float, Callable[[], None]], Timer]
"""The server loop's ``call_at``: run a callback at a ``time.monotonic()`` instant."""


@dataclass
class Entry:
    """One run on the board: the Runs' record and what the live view adds."""

    run: Run
    seq: int = 0
    last_event: float | None = None
    finished: bool = False
    snapshot: Snapshot | None = None
    lanes: dict[tuple[str, str], Lane] = field(default_factory=dict)
    failures: deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=MAX_FAILURES)
    )
    recent: deque[tuple[int, Case]] = field(default_factory=lambda: deque(maxlen=RECENT))
    failures_total: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    """Listed tests by outcome, kept as they change (counting 100,000 on every update
    would cost the event loop milliseconds each time)."""
    final: Counter[str] | None = None
    """The ended run's tests by outcome (:meth:`Snapshot.counts`), counted once at its end."""
    timed_out: bool = False
    """It ended by ``run_timeout`` (no event for that long), not by ``finish_session``."""
    timer: Timer | None = None
    """The open run's ``run_timeout`` deadline."""

    def outcome(self, location: Any, name: Any, session_id: Any = None) -> str | None:
        case = self.run.cases.get(case_key(session_id, location, name))
        return None if case is None else case.outcome

    def recount(self, before: str | None, after: str | None) -> None:
        """A case went from ``before`` to ``after``; a pending one (collected, not yet
        started) is counted in ``expected``, not here."""
        if before is not None and before != PENDING:
            self.counts[before] -= 1
        if after is not None and after != PENDING:
            self.counts[after] += 1


def row(case: Case, run_id: str) -> dict[str, Any]:
    """A test as the view lists it; ``artifacts``: its directory under the artifacts root
    (where the pytest plugin puts it) when it has files."""
    return {
        "location": case.location,
        "name": case.name,
        "outcome": case.outcome,
        "duration": case.duration,
        "host": case.host,
        "worker": case.worker,
        "rerun": case.rerun,
        "artifact_path": case.artifact_path,
        "attachments": len(case.attachments),
        "artifacts": artifact_dir("", case.location, case.name, run_id).as_posix()
        if case.attachments
        else None,
    }


class RunBoard:
    """The runs the live view shows; ``listeners`` are called after every change."""

    def __init__(
        self,
        max_tests: int,
        artifacts_root: Callable[[], str | None],
        run_timeout: float = DEFAULT_RUN_TIMEOUT,
        call_at: CallAt | None = None,
    ) -> None:
        """``call_at`` None: no clock (a run then ends only by its ``finish_session``)."""
        self.runs = Runs("live view", replace(BOARD_LIMITS, max_tests=max_tests))
        self.run_timeout = run_timeout
        self.call_at = call_at
        self.entries: dict[str, Entry] = {}
        self.seq = 0
        self.listeners: list[Callable[[], None]] = []
        self.artifacts_root = artifacts_root
        self.taps: dict[str, Callable[[Mapping[str, Any]], None]] = {
            name: getattr(self, name) for name in BOARD_EVENTS
        }
        """What ``Server.fire`` calls, by event name, with the event's data."""

    # -- the events --------------------------------------------------------------------

    def start_session(self, data: Mapping[str, Any]) -> None:
        entry = self._entry(data.get("run_id"))
        self.runs.start_session(
            data.get("run_id"), data.get("environment"), data.get("session_id"), data.get("shards")
        )
        self._touch(entry)

    def collect_tests(self, data: Mapping[str, Any]) -> None:
        entry = self._entry(data.get("run_id"))
        self.runs.collect(data.get("run_id"), data.get("session_id"), data.get("tests"))
        self._touch(entry)

    def start_test(self, data: Mapping[str, Any]) -> None:
        name = data.get("test_name")
        if name is None:
            return
        entry = self._entry(data.get("run_id"))
        location = data.get("test_location", "")
        session = data.get("session_id")
        before = entry.outcome(location, name, session)
        self.runs.start_test(
            data.get("run_id"),
            location,
            name,
            data.get("artifact_path"),
            session,
            data.get("worker"),
            data.get("host"),
        )
        entry.recount(before, entry.outcome(location, name, session))
        lane = self._lane(entry, data)
        if lane is not None:
            lane.test, lane.since = text(name), time.time()
            lane.seq = self._touch(entry)
        else:
            self._touch(entry)

    def finish_test(self, data: Mapping[str, Any]) -> None:
        name = data.get("test_name")
        if name is None:
            return
        entry = self._entry(data.get("run_id"))
        location = data.get("test_location", "")
        before = entry.outcome(location, name, data.get("session_id"))
        self.runs.finish_test(data)
        seq = self._touch(entry)
        case = entry.run.cases.get(case_key(data.get("session_id"), location, name))
        entry.recount(before, None if case is None else case.outcome)
        lane = self._lane(entry, data)
        if lane is not None:
            if lane.test == text(name):
                lane.test = lane.since = None
            lane.done += 1
            lane.failed += case is not None and case.outcome in ("failed", "error")
            lane.seq = seq
        if case is None:
            return
        entry.recent.append((seq, case))
        if case.outcome in ("failed", "error", "xpassed"):
            entry.failures_total += 1
            failure = row(case, entry.run.run_id)
            failure["text"] = (case.longrepr or "")[:FAILURE_TEXT]
            failure["time"] = time.time()
            entry.failures.append((seq, failure))

    def finish_session(self, data: Mapping[str, Any]) -> None:
        """A session (shard) ends; the run ends with its last open session, as the
        report's does, and its tests never finished become ``missing``."""
        entry = self.entries.get(run_key(data.get("run_id")))  # said twice: ended once
        if entry is None:  # a run not held (dropped, or never seen): it ends nothing
            return
        if not entry.finished:
            snapshot = self.runs.finish_session(
                data.get("run_id"), data.get("session_id"), data.get("exit_status")
            )
            if snapshot is not None:
                self._ended(entry, snapshot)
                return
        self._touch(entry)

    def _ended(self, entry: Entry, snapshot: Snapshot, event: bool = True) -> None:
        """The run ended (by an event, else by its clock): its tally, its lanes idle (sent
        with this change), no timer."""
        entry.snapshot, entry.finished = snapshot, True
        entry.final = +snapshot.counts()  # its tally, missing ones included
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        seq = self._touch(entry, event)
        for lane in entry.lanes.values():
            if lane.test is not None:
                lane.test = lane.since = None
                lane.seq = seq

    # -- the clock ----------------------------------------------------------------------

    def _arm(self, entry: Entry, due: float) -> None:
        if self.call_at is not None:
            entry.timer = self.call_at(due, lambda: self._due(entry))

    def _due(self, entry: Entry) -> None:
        """The run's deadline came: it ends if it has been quiet for ``run_timeout`` (its
        open sessions timed out, its unfinished tests missing), else the deadline moves."""
        entry.timer = None
        if entry.finished or self.entries.get(run_key(entry.run.run_id)) is not entry:
            return
        result = self.runs.idle(entry.run.run_id, self.run_timeout)
        if isinstance(result, float):
            self._arm(entry, result)
        elif result is not None:
            entry.timed_out = True
            self._ended(entry, result, event=False)

    def restore(
        self, found: Iterable[Found], replayed: Iterable[tuple[str, Mapping[str, Any]]] = ()
    ) -> int:
        """Replay a restarted dispatcher's open runs (the report plugin's state files,
        :func:`~rigger_mp.plugins.run_state.open_runs`), then the run events of the
        journal's replay, before any fire is tapped, so a page opened after a restart
        shows the run from its start; the events replayed.

        A run's clock counts from its last event before the restart (its file's time),
        as the report plugin's does: one quiet for ``run_timeout`` by now ends at once.
        A run with events in the journal's replay counts from now, as the plugins do,
        which are given them now."""
        count = 0
        quiet: dict[str, float] = {}
        for run in found:
            for name, data in run.events:
                count += self._feed(name, data)
            if run.events:
                key = run_key(run.events[-1][1].get("run_id"))
                quiet[key] = self.run_timeout if run.ended else run.quiet()
        for name, event in replayed:
            count += self._feed(name, event)
            quiet[run_key(event.get("run_id"))] = 0.0
        for key, seconds in quiet.items():
            entry = self.entries.get(key)
            if entry is None or entry.finished:
                continue
            entry.run.last_event = time.monotonic() - seconds
            if entry.timer is not None:
                entry.timer.cancel()
            self._due(entry)
        return count

    def _feed(self, name: str, data: Mapping[str, Any]) -> int:
        """Feed one restored event; 1 if the board follows it, else 0."""
        feed = self.taps.get(name)
        if feed is None:
            return 0
        feed(data)
        return 1

    # -- what the view reads ------------------------------------------------------------

    def get(self, run_id: str) -> Entry | None:
        return self.entries.get(run_id[:MAX_SHORT])

    def report_path(self, entry: Entry) -> str | None:
        """``<root>/<run>/report.html`` once the report plugin has written it for this
        run: after the run's start."""
        root, name = self.artifacts_root(), run_dir_name(entry.run.run_id)
        if root is None or name is None:
            return None
        path = os.path.join(root, name, REPORT_NAME)
        try:
            written = os.stat(path).st_mtime
        except OSError:
            return None
        return path if written >= (entry.run.started or 0.0) else None

    def changed_since(self, seq: int) -> Iterator[Entry]:
        return (e for e in self.entries.values() if e.seq > seq)

    # -- bookkeeping --------------------------------------------------------------------

    def _touch(self, entry: Entry, event: bool = True) -> int:
        """A change of ``entry`` (an ``event`` of it, else its clock's): a new sequence
        number, and the listeners told."""
        self.seq += 1
        entry.seq = self.seq
        if event:
            entry.last_event = time.time()
        if entry.timer is None and not entry.finished:  # its first event: the clock starts
            self._arm(entry, entry.run.last_event + self.run_timeout)
        for listener in self.listeners:
            listener()
        return self.seq

    def _entry(self, run_id: Any) -> Entry:
        """The run's entry; a finished run's id used again starts a new one."""
        key = run_key(run_id)
        entry = self.entries.get(key)
        if entry is not None and not entry.finished:
            return entry
        if entry is not None:  # a finished run's id fires again: a new run under it
            self._drop(key)
        while len(self.entries) >= MAX_RUNS:
            finished = [k for k, e in self.entries.items() if e.finished]
            self._drop(finished[0] if finished else next(iter(self.entries)))
        entry = self.entries[key] = Entry(self.runs.run(run_id))
        return entry

    def _drop(self, key: str) -> None:
        entry = self.entries.pop(key)
        if entry.timer is not None:
            entry.timer.cancel()
        snapshot = entry.snapshot
        if snapshot is None:
            snapshot = self.runs.finish(entry.run.run_id, None)
        self.runs.release(snapshot)

    def _lane(self, entry: Entry, data: Mapping[str, Any]) -> Lane | None:
        env = entry.run.environment
        host = optional_text(data.get("host"), MAX_SHORT) or env.host or ""
        worker = optional_text(data.get("worker"), MAX_SHORT) or env.worker or "main"
        lane = entry.lanes.get((host, worker))
        if lane is None and len(entry.lanes) < MAX_NAMES:
            lane = entry.lanes[(host, worker)] = Lane(host, worker)
        return lane


def restored_runs(root: str, replay: Iterable[tuple[str, str, Mapping[str, Any]]]) -> Restored:
    """What a restarting dispatcher hands its first server process for the live view,
    read before it queues the replay (see :class:`~.pipe_messages.Restored`): the state
    files, then the run events among ``replay`` (``(tid, hook_name, data)``, in order)
    without their captured output, which the board does not keep; at most
    :data:`RESTORE_BYTES` of both (the events past it are counted in ``not_shown``)."""
    found = tuple(open_runs(root, RESTORE_BYTES))
    budget = RESTORE_BYTES - sum(run.size for run in found)
    replayed: list[tuple[str, dict[str, Any]]] = []
    not_shown = 0
    for _tid, name, data in replay:
        if name not in BOARD_EVENTS:
            continue
        shown = {key: value for key, value in data.items() if key != "sections"}
        try:
            size = len(pickle.dumps(shown, pickle.HIGHEST_PROTOCOL))
        except Exception:  # a value only its hooks can use: the board reads plain data
            size = budget + 1
        if size > budget:
            not_shown += 1
            continue
        budget -= size
        replayed.append((name, shown))
    return Restored(found, tuple(replayed), not_shown)


def counts(entry: Entry) -> Counter[str]:
    """Tests by outcome, listed and past the bound."""
    if entry.final is not None:
        return entry.final
    return +(entry.counts + entry.run.unlisted)


def slowest(entry: Entry) -> list[dict[str, Any]]:
    timed = (c for c in entry.run.cases.values() if c.duration is not None)
    return [
        row(c, entry.run.run_id)
        for c in heapq.nlargest(SLOWEST, timed, key=lambda c: c.duration or 0.0)
    ]


def head(board: RunBoard, entry: Entry) -> dict[str, Any]:
    """What the list of runs and every update say of a run: small, whatever its size."""
    run = entry.run
    by_outcome = counts(entry)
    report, name = board.report_path(entry), run_dir_name(run.run_id)
    snapshot = entry.snapshot
    return {
        "run_id": run.run_id,
        "expected": run.expected_count or None,
        "counts": dict(by_outcome),
        "tests": sum(by_outcome.values()),
        "missing": None if snapshot is None else snapshot.missing,
        "sessions": len(run.sessions),
        "shards": run.shards or None,
        "sessions_open": sum(s.finished is None for s in run.sessions.values()),
        "started": run.started,
        "last_event": entry.last_event,
        "finished": entry.finished,
        "timed_out": entry.timed_out,
        "exit_status": run.exit_status,
        "report": report,
        "report_href": None
        if report is None or name is None
        else f"files/{quote(name)}/{REPORT_NAME}",
        "hosts": sorted(run.hosts),
        "failures_total": entry.failures_total,
    }


def lane_json(lane: Lane) -> dict[str, Any]:
    return {
        "host": lane.host,
        "worker": lane.worker,
        "test": lane.test,
        "since": lane.since,
        "done": lane.done,
        "failed": lane.failed,
    }


def run_json(board: RunBoard, entry: Entry, since: int = 0) -> dict[str, Any]:
    """A run as ``GET /runs/{id}`` shows it, or (``since`` > 0) what changed after that
    sequence number: the head, and the lanes, failures and rows newer than it."""
    out = head(board, entry)
    out["lanes"] = [lane_json(lane) for lane in entry.lanes.values() if lane.seq > since]
    out["failures"] = [f for seq, f in entry.failures if seq > since]
    out["recent"] = [row(c, entry.run.run_id) for seq, c in entry.recent if seq > since]
    if since == 0:
        out["slowest"] = slowest(entry)
        env = entry.run.environment
        out["environment"] = {"python": env.python, "platform": env.platform, "pytest": env.pytest}
    return out


def listed(entry: Entry, query: str, outcome: str, limit: int = MAX_LISTED) -> dict[str, Any]:
    """The run's tests whose location or name holds ``query`` (any case) and whose
    outcome is ``outcome`` (any when empty): the first ``limit`` and how many match."""
    q = query.lower()
    found, rows = 0, list[dict[str, Any]]()
    for case in entry.run.cases.values():
        if outcome and case.outcome != outcome:
            continue
        if q and q not in case.name.lower() and q not in case.location.lower():
            continue
        found += 1
        if len(rows) < limit:
            rows.append(row(case, entry.run.run_id))
    return {"run_id": entry.run.run_id, "matched": found, "tests": rows}


__all__ = ["UNFINISHED", "RunBoard", "head", "listed", "run_json"]
