"""Built-in plugin ``junit``: one ``junit.xml`` per test run, every worker and host merged.

::

    start_session / collect_tests / start_test / finish_test
                                                the run's tests (rigger_mp.plugins.runs)
    finish_session(run_id, session_id, exit_status)
                                                when the run ends (its last session, or
                                                run_timeout): <dir>/<run_id>/junit.xml,
                                                written off the event thread
                                                (<dir>/junit.xml without a run id)

CI systems (Jenkins, GitLab, GitHub's test reporters) read JUnit XML. The file follows
the schema pytest validates its own ``--junitxml`` against (``junit-10.xsd``, Jenkins'
flavour of Maven Surefire's)::

    <testsuites name="rigger_mp" tests= failures= errors= time=>
      <testsuite name="RUN [HOST WORKER]" hostname= tests= failures= errors= skipped=
                 time= timestamp=>              one per host and worker that ran tests
        <properties> run_id, host, worker, and the session's python, platform, pytest
        <testcase classname="tests.test_x.TestClass" name="test_y[1]" time=>
          <failure message= type=>the failure text</failure>    failed (xpassed strict)
          <error message= type=>...</error>                     error, missing
          <skipped message= type=/>                             skipped, xfailed
          <flakyFailure>/<rerunFailure> type= message=          each earlier failed attempt
          <system-out> stdout and log sections, <system-err> stderr sections

The schema allows no attributes but ``name``, ``classname``, ``time`` on a test case
and no properties inside one: the worker and host are the enclosing suite's, a rerun is a
``flakyFailure`` (the test passed in the end) or a ``rerunFailure`` (it did not), as
Surefire writes them. Characters XML 1.0 cannot carry are written as ``\\xNN``.

The events run on the event thread, in the main process; ``finish_session`` hands the
run's snapshot to a writer thread, like the report; ``stop()`` waits for it.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final
from xml.sax.saxutils import escape, quoteattr

from .. import printable
from ..core.plugin import ConfigKeys
from ..safe_paths import write_atomically
from .run_index import RUN_FILE, write_index
from .run_keeper import RUN_KEYS
from .run_plugin import RunFilesPlugin
from .runs import MISSING, UNFINISHED, Case, Snapshot, made_root, ordered

logger = printable.logger("rigger_mp")

JUNIT_NAME: Final = "junit.xml"
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` with every character XML 1.0 cannot hold written as ``\\xNN``."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def class_and_name(location: str, name: str) -> tuple[str, str]:
    """pytest's ``classname`` and ``name``: ``tests/test_x.py`` + ``TestC.test_y[a.b]``
    give ``tests.test_x.TestC`` and ``test_y[a.b]``."""
    module = location[:-3] if location.endswith(".py") else location
    module = module.replace("\\", "/").strip("/").replace("/", ".")
    head, bracket, params = name.partition("[")
    owner, _, function = head.rpartition(".")
    classname = ".".join(p for p in (module, owner) if p)
    return classname, function + bracket + params


def seconds_text(value: float) -> str:
    return f"{value:.3f}"


class JUnitPlugin(RunFilesPlugin):
    """Writes a run's ``junit.xml`` when it ends."""

    label = "junit"
    what = "a JUnit file"
    config_keys: ClassVar[ConfigKeys] = {"dir": str, **RUN_KEYS}

    def write_run(self, snapshot: Snapshot, prepared: Any) -> None:
        self.write(snapshot)

    def write(self, snapshot: Snapshot) -> Path:
        """Write ``snapshot``'s ``junit.xml``; with a run id, list it in the index too."""
        root = made_root(self.dir)
        name = snapshot.dir_name
        relative = JUNIT_NAME if name is None else f"{name}/{JUNIT_NAME}"
        target = write_atomically(root, relative, render(snapshot))
        if name is not None and (root / name / RUN_FILE).is_file():
            write_index(root)  # the report listed the run, maybe before this file existed
        logger.info("junit %r: %s", self.ident, target)
        return target


# -- the XML ------------------------------------------------------------------------------


def render(snapshot: Snapshot) -> bytes:
    """The whole ``junit.xml`` of ``snapshot``.

    Written as strings, not an element tree: 100,000 elements would live until the end
    and make the garbage collector walk the whole heap, holding the interpreter (and so
    the event thread) for hundreds of milliseconds; strings it does not track."""
    suites: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for case in ordered(snapshot.cases):
        suites[(case.host or "", case.worker or "")].append(case)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(snapshot.started or time.time()))
    parts = []
    for (host, worker), cases in sorted(suites.items()):
        suite, counts, took = _suite(snapshot, host, worker, cases, stamp)
        parts.append(suite)
        total_time += took
        for key in totals:  # the schema has no skipped count on <testsuites>
            totals[key] += counts[key]
    top = _attributes({"name": "rigger_mp", **totals, "time": seconds_text(total_time)})
    body = f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites{top}>' + "".join(parts)
    return (body + "</testsuites>\n").encode("utf-8")


def _attributes(attrs: Mapping[str, object]) -> str:
    """`` name="value"`` for each attribute, escaped (quotes, newlines and tabs too)."""
    return "".join(f" {key}={quoteattr(xml_text(str(value)))}" for key, value in attrs.items())


def _element(tag: str, attrs: Mapping[str, object], text: str | None = None) -> str:
    if not text:
        return f"<{tag}{_attributes(attrs)} />"
    return f"<{tag}{_attributes(attrs)}>{escape(xml_text(text))}</{tag}>"


def _suite(
    snapshot: Snapshot, host: str, worker: str, cases: list[Case], stamp: str
) -> tuple[str, dict[str, int], float]:
    label = " ".join(p for p in (host, worker) if p)
    name = (snapshot.run_id or "rigger_mp") + (f" [{label}]" if label else "")
    env = snapshot.environment
    props = "".join(
        _element("property", {"name": key, "value": value})
        for key, value in (
            ("run_id", snapshot.run_id),
            ("host", host),
            ("worker", worker),
            ("python", env.python),
            ("platform", env.platform),
            ("pytest", env.pytest),
            ("unlisted", str(sum(snapshot.unlisted.values())) if snapshot.unlisted else None),
            ("expected", str(snapshot.expected) if snapshot.expected else None),
            ("missing", str(snapshot.missing) if snapshot.missing else None),
            (
                "missing_unlisted",
                str(snapshot.missing_unlisted) if snapshot.missing_unlisted else None,
            ),
            ("timed_out", "true" if snapshot.timed_out else None),
        )
        if value
    )
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    took = 0.0
    body = []
    for case in cases:
        body.append(_case(case, counts))
        took += case.duration or 0.0
    attrs: dict[str, object] = {"name": name, "timestamp": stamp}
    if host:
        attrs["hostname"] = host
    attrs.update(counts)
    attrs["time"] = seconds_text(took)
    suite = f"<testsuite{_attributes(attrs)}><properties>{props}</properties>"
    return suite + "".join(body) + "</testsuite>", counts, took


def _case(case: Case, counts: dict[str, int]) -> str:
    classname, name = class_and_name(case.location, case.name)
    attrs = {"classname": classname, "name": name, "time": seconds_text(case.duration or 0.0)}
    counts["tests"] += 1
    text = case.longrepr or ""
    message = case.crash.message if case.crash is not None else ""
    outcome, kind = case.outcome, verdict(case)
    inner = []
    if kind == "missing":
        counts["errors"] += 1
        message = f"missing: the test never reported: {case.missing_note}"
        inner.append(_element("error", {"message": message, "type": "missing"}))
    elif kind == "error":
        counts["errors"] += 1
        where = f"error in {case.when}" if case.when else "error"
        inner.append(_element("error", {"message": message or where, "type": where}, text))
    elif kind == "failure":
        counts["failures"] += 1
        what = "xpassed (strict)" if outcome == "xpassed" else "failed"
        inner.append(_element("failure", {"message": message or what, "type": what}, text))
    elif kind == "skipped":
        counts["skipped"] += 1
        label = "pytest.xfail" if outcome == "xfailed" else "pytest.skip"
        inner.append(_element("skipped", {"type": label, "message": case.skip_reason or outcome}))
    earlier = [a for a in case.attempts[:-1] if a in ("failed", "error")]
    for n, attempt in enumerate(earlier, 1):
        tag = "flakyFailure" if outcome == "passed" else "rerunFailure"
        # The failure text kept from the attempt that failed, with the last such attempt.
        kept = text if outcome == "passed" and n == len(earlier) else None
        inner.append(_element(tag, {"type": attempt, "message": f"attempt {n} {attempt}"}, kept))
    inner.extend(_output(case))
    return f"<testcase{_attributes(attrs)}>" + "".join(inner) + "</testcase>"


def verdict(case: Case) -> str | None:
    """What JUnit counts the test as: ``failure``, ``error``, ``skipped``, ``missing``
    (an error: it never reported), or ``None`` (it passed). ``test_result`` decides, as
    JUnit's convention is its own (a strict xpass failed, an xfail is skipped); the
    outcome where it was not sent."""
    if case.outcome in (MISSING, UNFINISHED):
        return "missing"
    by_result = {"failed": "failure", "error": "error", "skipped": "skipped", "passed": None}
    if case.result in by_result:
        return by_result[case.result]
    by_outcome = {"failed": "failure", "error": "error", "skipped": "skipped", "xfailed": "skipped"}
    if case.outcome in ("passed", "xpassed"):
        return None
    return by_outcome.get(case.outcome, "error")  # a result no one knows did not pass


def _output(case: Case) -> list[str]:
    """``system-out`` (stdout and log sections) and ``system-err`` (stderr sections)."""
    out: list[str] = []
    err: list[str] = []
    for section in case.sections:
        header = f"----- {section.when} {section.kind} -----\n".replace("  ", " ")
        (err if section.kind == "stderr" else out).append(header + section.text)
    return [
        _element(tag, {}, "\n".join(texts))
        for tag, texts in (("system-out", out), ("system-err", err))
        if texts
    ]
