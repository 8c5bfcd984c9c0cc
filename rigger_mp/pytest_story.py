"""What ``finish_test`` tells of one test: built from pytest's phase reports, bounded.

The pytest plugin (:mod:`rigger_mp.pytest_plugin`) keeps every ``TestReport`` a test
produced (setup, call and teardown, for each attempt under pytest-rerunfailures) and
hands them here when the test's protocol ends. :func:`attempts` splits them into one list
per attempt; :func:`story` turns one attempt into the JSON-safe keys its ``finish_test``
adds to ``test_name``, ``test_location`` and ``test_result``. :func:`environment` is what
``start_session`` says of the run; :func:`limits` reads the two bounds below.

Only pytest and the standard library: pytest imports the plugin in every run.

The keys of ``finish_test``:

- ``test_name``, ``test_location``, ``test_result``: ``passed``, ``failed``, ``skipped``
  or ``error``, as JUnit XML counts them: a failure in setup or teardown (a fixture) is
  ``error``, unless the test body itself failed, which is ``failed``; a skip in any phase
  and an expected failure are ``skipped``; an unexpected pass of a non-strict ``xfail``
  is ``passed``, of a strict one ``failed`` (pytest fails it);
- ``outcome``: the same told apart: ``passed``, ``failed``, ``error``, ``skipped``,
  ``xfailed`` or ``xpassed``;
- ``duration``: pytest's own, setup + call + teardown, in seconds;
- ``when``: the phase that failed or errored (``setup``, ``call``, ``teardown``), or null;
- ``longrepr``: the failure text pytest prints (all failed phases), or null; ``crash``:
  ``{"path", "line", "message"}`` where the failure was raised, or null;
- ``sections``: the captured output, ``[{"when", "kind": stdout|stderr|log, "text"}]``;
- ``skip_reason``: why it was skipped, or the ``xfail`` reason (xfailed, xpassed); else null;
- ``worker``: the xdist worker id, or ``main``; ``host``: ``$RIGGER_MP_HOST`` if set, else
  ``socket.gethostname()``; ``markers``: the names of the test's marks;
- ``rerun``: 0; under pytest-rerunfailures each attempt is its own ``finish_test``
  (``rerun`` 0, 1, ...), and the last one's outcome is the test's;
- ``attachments``: ``[{"name", "size"}]``, the files in the test's artifact directory
  when it ended (names relative to it, sorted; at most 1,000, 64 KiB of names), if the
  test used ``rigger_artifacts`` or ``rigger_attach`` and the dispatcher sees its files.

Sizes are measured as the plugin's client sends them (JSON with ``ensure_ascii``, where
a control character or a non-ASCII one takes up to six bytes), so that the limits bound
the message itself: ``longrepr`` (and the crash message, the skip reason) at most
``max_failure_bytes``, all of a test's ``sections`` together at most
``max_capture_bytes``. A text over its limit is cut, and ends with a note saying how
much was cut.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

_SECTION = re.compile(r"Captured (stdout|stderr|log) (setup|call|teardown)")


@dataclass(frozen=True)
class Limits:
    """How many bytes (as sent) of failure text and of captured output one ``finish_test``
    may carry: ``max_failure_bytes`` and ``max_capture_bytes``."""

    failure_bytes: int
    capture_bytes: int


def sent_size(text: str) -> int:
    """Bytes ``text`` takes in the message as the client encodes it (no quotes)."""
    return len(json.dumps(text)) - 2


def cut(text: str, limit: int, what: str) -> str:
    """``text`` if it fits in ``limit`` bytes as sent; else its head and a note naming
    ``what`` (the option that bounds it) and how many bytes were cut."""
    size = sent_size(text)
    if size <= limit:
        return text
    note = "\n[rigger_mp: {} of " + f"{size:,} bytes cut here; {what} is {limit:,}]"
    head = head_within(text, limit - sent_size(note.format(f"{size:,}")))
    return head + note.format(f"{size - sent_size(head):,}")


def head_within(text: str, room: int) -> str:
    """The longest head of ``text`` that takes at most ``room`` bytes as sent."""
    lo, hi = 0, min(len(text), max(0, room))  # a character takes one byte or more
    while lo < hi:  # the size of a head grows with its length: bisect
        mid = (lo + hi + 1) // 2
        if sent_size(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def attempts(reports: Sequence[pytest.TestReport]) -> list[list[pytest.TestReport]]:
    """The reports of each attempt, in order: one list without reruns; under
    pytest-rerunfailures a new attempt begins with each setup report."""
    runs: list[list[pytest.TestReport]] = []
    for report in reports:
        if report.when == "setup" or not runs:
            runs.append([])
        runs[-1].append(report)
    return runs


def failed(report: pytest.TestReport) -> bool:
    """A phase that failed; pytest-rerunfailures marks one it will rerun ``rerun``."""
    return report.outcome in ("failed", "rerun")


def result_of(reports: Sequence[pytest.TestReport]) -> str:
    """``passed``, ``failed``, ``skipped`` or ``error`` from one attempt's phase reports
    (JUnit's counting: an expected failure is ``skipped``)."""
    by_phase = {report.when: report for report in reports}
    call = by_phase.get("call")
    if call is not None and failed(call):
        return "failed"
    if any(failed(report) for report in reports):
        return "error"  # setup or teardown
    if any(report.skipped for report in reports):
        return "skipped"  # a skip, or an xfail that failed as expected
    return "passed" if call is not None else "error"


def detailed_outcome(reports: Sequence[pytest.TestReport]) -> str:
    """``test_result`` with expected failures and unexpected passes told apart:
    ``passed``, ``failed``, ``error``, ``skipped``, ``xfailed`` or ``xpassed``."""
    result = result_of(reports)
    xfail = [report for report in reports if hasattr(report, "wasxfail")]
    if result == "skipped" and any(report.skipped for report in xfail):
        return "xfailed"
    if result == "passed" and any(report.passed for report in xfail):
        return "xpassed"
    return result


def story(reports: Sequence[pytest.TestReport], before: int, limits: Limits) -> dict[str, Any]:
    """The keys one attempt adds to its ``finish_test``, but for ``worker``, ``host``,
    ``markers``, ``rerun`` and ``attachments``, which the plugin knows.

    ``before`` is how many captured sections earlier attempts left in these reports
    (pytest keeps adding to one list per test item).
    """
    outcome = detailed_outcome(reports)
    failures = [report for report in reports if failed(report)]
    when = failures[0].when if failures else None
    longrepr = crash = None
    if failures:
        longrepr = cut(failure_text(failures), limits.failure_bytes, "max_failure_bytes")
        crash = crash_of(failures[0], limits)
    return {
        "duration": sum(report.duration for report in reports),
        "when": when,
        "longrepr": longrepr,
        "crash": crash,
        "sections": sections(reports[-1].sections[before:] if reports else [], limits),
        "outcome": outcome,
        "skip_reason": skip_reason(reports, outcome, limits),
    }


def failure_text(failures: Sequence[pytest.TestReport]) -> str:
    """What pytest prints for the failed phases; each named when there are several."""
    if len(failures) == 1:
        return failures[0].longreprtext
    return "\n\n".join(f"[{report.when}]\n{report.longreprtext}" for report in failures)


def crash_of(report: pytest.TestReport, limits: Limits) -> dict[str, Any] | None:
    """``{"path", "line", "message"}`` where the failure was raised, if pytest knows."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is None:
        return None
    message = cut(str(crash.message), limits.failure_bytes, "max_failure_bytes")
    return {"path": str(crash.path), "line": int(crash.lineno), "message": message}


def skip_reason(reports: Sequence[pytest.TestReport], outcome: str, limits: Limits) -> str | None:
    """Why the test was skipped, or the xfail mark's reason; None otherwise."""
    reason: str | None = None
    if outcome in ("xfailed", "xpassed"):
        reason = next(str(r.wasxfail) for r in reports if hasattr(r, "wasxfail"))
    elif outcome == "skipped":
        skipped = next(report for report in reports if report.skipped)
        if isinstance(skipped.longrepr, tuple):  # (path, line, "Skipped: why")
            reason = str(skipped.longrepr[2]).removeprefix("Skipped: ")
        else:
            reason = skipped.longreprtext
    return None if reason is None else cut(reason, limits.failure_bytes, "max_failure_bytes")


def sections(captured: Iterable[tuple[str, str]], limits: Limits) -> list[dict[str, str]]:
    """pytest's ``Captured <kind> <when>`` sections as ``{"when", "kind", "text"}``, in
    order, all of them together at most ``max_capture_bytes`` as sent. Over it, the
    section that crosses the limit is cut and ends with a note counting what was cut of
    it and of the sections after it, which are left out."""
    found = [
        {"when": match[2], "kind": match[1], "text": text}
        for title, text in captured
        if (match := _SECTION.fullmatch(title))
    ]
    sizes = [sent_size(section["text"]) for section in found]
    limit = limits.capture_bytes
    if sum(sizes) <= limit:
        return found
    note = "\n[rigger_mp: {} bytes of this test's captured output cut here; "
    note += f"max_capture_bytes is {limit:,}]"
    room = limit - sent_size(note.format(f"{sum(sizes):,}"))
    for n, (section, size) in enumerate(zip(found, sizes, strict=True)):
        if size <= room:
            room -= size
            continue
        head = head_within(section["text"], room)
        section["text"] = head + note.format(f"{sum(sizes[n:]) - sent_size(head):,}")
        return found[: n + 1]
    raise AssertionError("unreachable: the sections are over the limit")  # pragma: no cover


def limits(config: pytest.Config, least: int) -> Limits:
    """``max_failure_bytes`` and ``max_capture_bytes``: the options, else the ini options."""
    values = []
    for key in ("failure", "capture"):
        value = config.getoption(f"rigger_max_{key}_bytes")
        text = str(config.getini(f"rigger_max_{key}_bytes")) if value is None else str(value)
        if not text.strip().isdigit() or int(text) < least:
            raise pytest.UsageError(
                f"rigger_mp: max_{key}_bytes must be a whole number of at least {least} "
                f"(--rigger-max-{key}-bytes or the ini option rigger_max_{key}_bytes), "
                f"not {text!r}"
            )
        values.append(int(text))
    return Limits(*values)


def environment(config: pytest.Config, host: str) -> dict[str, Any]:
    """The run's environment, for ``start_session``: versions, the command line, host."""
    plugins = {
        str(dist.project_name): str(dist.version)
        for _, dist in config.pluginmanager.list_plugin_distinfo()
    }
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pytest": pytest.__version__,
        "plugins": dict(sorted(plugins.items())),
        "command_line": [str(arg) for arg in config.invocation_params.args],
        "host": host,
        "worker": "main",
    }
