"""The pytest plugin: fire a test session's events to a rigger_mp dispatcher.

Registered through the ``pytest11`` entry point, so pytest loads it in every run; it does
nothing unless asked:

- ``--rigger HOST:PORT``: fire to a running dispatcher (``rigger-mp serve``);
- ``--rigger-config FILE``: run a dispatcher from FILE inside the pytest process for the
  session (its TCP server on a free loopback port unless FILE says otherwise, so that
  xdist workers reach it too), stopped and drained at the end.

Events, each carrying ``run_id`` (one per pytest run, ``--rigger-run-id`` to choose it):

- ``start_session(run_id)`` and ``finish_session(run_id, exit_status)``: once per run, by
  the process that owns the session (the xdist controller; pytest itself without xdist);
- ``start_test(test_name, test_location)`` and ``finish_test(test_name, test_location,
  test_result)``: by the process that runs the test (each xdist worker), around it.
  ``test_location`` is the test's file, ``test_name`` the rest of its id
  (``TestClass.test_x[param]``).

``test_result`` is one of ``passed``, ``failed``, ``skipped``, ``error``:

- a failure in setup or teardown (a fixture) is ``error``, unless the test body itself
  failed, which is ``failed``;
- a skip in any phase is ``skipped``; an expected failure (``xfail`` that failed) is
  ``skipped`` too, as JUnit XML counts it; an unexpected pass of a non-strict ``xfail``
  is ``passed``, of a strict one ``failed`` (pytest fails it).

The in-process dispatcher (``--rigger-config``) gets a ``report`` instance unless FILE has
one (enabled or not), writing ``report.html`` into the artifacts root; it is stopped and
drained at the end of the session, before the summary, so the report is settled.

What a user sees, once per run (on the xdist controller, for all the workers):

- a dispatcher the session's process cannot reach at its start is a ``pytest.UsageError``
  (one ``ERROR:`` line naming the address and what to do; nothing runs, exit status 4);
- an xdist worker that cannot reach it (it went down after the controller checked, say)
  raises nothing: its tests run, their events are counted as not fired, and the
  controller prints one line for all such workers;
- every event that could not be fired (a ``RiggerFireWarning`` where it happened, never
  raised, even under ``-W error``) is listed in the ``rigger_mp`` section of the terminal
  summary, at most :data:`MAX_LOST_LISTED` per process, the rest counted; any lost event
  fails the run
  (exit status 1 when it would have been 0);
- the section ends with one line: where the events went and how many were sent, summed
  over the workers.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Only pytest and the standard library at import time: pytest imports this module in
# every run, and the rest of rigger_mp is imported once --rigger or --rigger-config asks.
if TYPE_CHECKING:
    from .client import RiggerClient
    from .core.rigger import Rigger

_PLUGIN_NAME = "rigger_mp_session"
_TOKEN_ENV = "RIGGER_MP_TOKEN"
"""rigger_mp.protocol.TOKEN_ENV, spelled out so as not to import the protocol in every
pytest run; tests/test_pytest_plugin.py checks the two agree."""
_REPORTS = pytest.StashKey[list[pytest.TestReport]]()
_OUTPUT_KEY = "rigger_mp"
"""The key of a worker's figures in xdist's ``workeroutput``."""
_REMEDY = (
    "is it running? Start one (`rigger-mp serve`), give its address with "
    "--rigger HOST:PORT, or run one inside pytest with --rigger-config FILE"
)
MAX_LOST_LISTED = 20
"""Lost events listed per pytest process (each xdist worker, the controller); the rest
are counted."""
MAX_NAME = 120
"""Characters of a test's id kept in a lost event's line."""


class RiggerFireWarning(pytest.PytestWarning):
    """An event could not be fired to the dispatcher."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's options; without --rigger or --rigger-config it stays inert."""
    group = parser.getgroup("rigger_mp", "fire test events to a rigger_mp dispatcher")
    group.addoption(
        "--rigger",
        metavar="HOST:PORT",
        help="fire start_session/start_test/finish_test/finish_session to this dispatcher",
    )
    group.addoption(
        "--rigger-config",
        metavar="FILE",
        help="run a dispatcher from this rigger_mp config for the session",
    )
    group.addoption(
        "--rigger-token",
        metavar="TOKEN",
        help=f"the dispatcher's server_token (default: ${_TOKEN_ENV})",
    )
    group.addoption("--rigger-run-id", metavar="ID", help="run_id of the events (default: random)")
    group.addoption(
        "--rigger-artifacts",
        metavar="DIR",
        default="rigger-artifacts",
        help="artifact root of the --rigger-config dispatcher (default: ./%(default)s)",
    )


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; a bad one is a ``pytest.UsageError``."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise pytest.UsageError(f"--rigger: expected HOST:PORT, got {text!r}")
    return host, int(port)


def pytest_configure(config: pytest.Config) -> None:
    """Attach a :class:`RiggerSession` when asked; check the dispatcher answers."""
    address: str | None = config.getoption("rigger")
    config_file: str | None = config.getoption("rigger_config")
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None and "rigger_address" in workerinput:
        address, config_file = workerinput["rigger_address"], None  # an xdist worker
    if address is None and config_file is None:
        return
    if address is not None and config_file is not None:
        raise pytest.UsageError("give --rigger HOST:PORT or --rigger-config FILE, not both")
    session = RiggerSession(config, workerinput)
    session.connect(address, config_file)
    config.pluginmanager.register(session, _PLUGIN_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the connection; stop and drain an embedded dispatcher."""
    session = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if isinstance(session, RiggerSession):
        config.pluginmanager.unregister(session)
        session.close()


class RiggerSession:
    """One process's part of the run: its client, and the embedded dispatcher if any."""

    def __init__(self, config: pytest.Config, workerinput: dict[str, Any] | None) -> None:
        self.config = config
        self.is_worker = workerinput is not None
        run_id = (workerinput or {}).get("rigger_run_id") or config.getoption("rigger_run_id")
        self.run_id: str = run_id or uuid.uuid4().hex
        token = (workerinput or {}).get("rigger_token") or config.getoption("rigger_token")
        self.token: str | None = token or os.environ.get(_TOKEN_ENV)
        """The server's token: the embedded config's, else the option, else the environment."""
        self.address = ""
        self.client: RiggerClient | None = None
        self.rigger: Rigger | None = None
        self.artifacts_root: Path | None = None
        self.reports: list[Path] = []
        self.sent = 0
        self.lost = Lost()
        self.unreachable: str | None = None
        """Why this worker could not reach the dispatcher at its start (then no client)."""
        self.workers: dict[str, dict[str, Any]] = {}
        """The controller's record of each xdist worker's :meth:`output`, by worker id."""

    def connect(self, address: str | None, config_file: str | None) -> None:
        """Start the embedded dispatcher (``config_file``) or reach ``address``; ping.

        The session's process raises a ``pytest.UsageError`` when the dispatcher does not
        answer; an xdist worker records why (:attr:`unreachable`) for the controller.
        """
        from .client import RiggerClient
        from .errors import RiggerError

        if config_file is not None:
            host, port = self._start_embedded(config_file)
            where = f"the dispatcher of --rigger-config {config_file}"
        else:
            assert address is not None
            host, port = parse_address(address)
            where = f"the dispatcher at --rigger {address}"
        self.address = f"{host}:{port}"
        client = RiggerClient(host, port, token=self.token)
        try:
            client.ping()
        except (RiggerError, OSError) as exc:
            client.close()
            self._stop_embedded()
            if self.is_worker:
                self.unreachable = _reason(exc)
                return
            raise pytest.UsageError(f"rigger_mp: cannot reach {where}: {_reason(exc)}") from None
        self.client = client

    def _start_embedded(self, config_file: str) -> tuple[str, int]:
        from .core.config import load_config
        from .core.loading import check_config_keys
        from .core.rigger import Rigger
        from .errors import ConfigError, PluginError
        from .plugins import artifacts, report

        root = Path(self.config.getoption("rigger_artifacts")).absolute()
        try:
            settings = load_config(config_file)
            check_config_keys(settings)  # here, so that an error names the file and line
            raw = with_report(settings.raw)
            raw["server_enabled"] = True
            raw.setdefault("server_port", 0)
            rigger = Rigger(report.with_dir(raw, root))
            artifacts.install(rigger, root)
            rigger.start()
        except (ConfigError, PluginError) as exc:
            raise pytest.UsageError(f"rigger_mp: --rigger-config {config_file}: {exc}") from None
        self.rigger, self.artifacts_root = rigger, root
        if settings.server_token is not None:  # its own server's, for the workers too:
            self.token = settings.server_token  # not a $RIGGER_MP_TOKEN meant for another
        assert rigger.server_address is not None and rigger.server_port is not None
        return rigger.server_address, rigger.server_port

    def _stop_embedded(self) -> None:
        """Stop (drain) the embedded dispatcher, once; then rewrite its reports, settled."""
        rigger, self.rigger = self.rigger, None
        if rigger is not None:
            from .plugins import report

            rigger.stop()
            self.reports = report.rewrite_reports(rigger.instances)

    def close(self) -> None:
        """Close the client; stop (drain) the embedded dispatcher."""
        if self.client is not None:
            self.client.close()
        self._stop_embedded()

    def fire(self, hook_name: str, what: str = "", /, **data: Any) -> None:
        """Fire one event; a failure is a warning and is listed, never silent.

        ``what`` names the event's subject (the test's id) in the list of lost events.
        """
        from .errors import RiggerError

        if self.client is None:  # a worker that could not reach the dispatcher
            self.lost.count()
            return
        try:
            self.client.fire_hook(hook_name, run_id=self.run_id, **data)
        except (RiggerError, OSError) as exc:
            if len(what) > MAX_NAME:
                what = what[:MAX_NAME] + "..."
            text = f"{hook_name}{' ' if what else ''}{what} not fired to {self.address}: "
            text += _reason(exc, hint=False)
            self.lost.add(text)
            # Under ``-W error`` (``filterwarnings = error``) warn raises: out of a hook
            # that would be an INTERNALERROR with no summary. The event is listed anyway.
            with contextlib.suppress(RiggerFireWarning):
                warnings.warn(RiggerFireWarning(f"rigger_mp: {text}"), stacklevel=2)
        else:
            self.sent += 1

    def output(self) -> dict[str, Any]:
        """What a worker hands the controller at its end (plain data, for execnet)."""
        return {
            "sent": self.sent,
            "lost": list(self.lost.listed),
            "lost_count": self.lost.total,
            "unreachable": self.unreachable,
        }

    # -- xdist: hand the address and run_id to the workers, collect what they did ------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each xdist worker where the dispatcher is and the run's id."""
        node.workerinput["rigger_address"] = self.address
        node.workerinput["rigger_run_id"] = self.run_id
        node.workerinput["rigger_token"] = self.token

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Keep what the worker sent and lost (nothing when it crashed: then it says so)."""
        worker_id = str(node.workerinput.get("workerid", node))
        output = getattr(node, "workeroutput", {}).get(_OUTPUT_KEY)
        if isinstance(output, dict):
            self.workers[worker_id] = output
        elif error is not None:
            self.workers[worker_id] = {"crashed": str(error)}

    # -- session events: by the process that owns the session ----------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """``start_session``, before xdist starts its workers."""
        if not self.is_worker:
            self.fire("start_session")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """``finish_session`` after xdist's workers have all finished; stop (drain) the
        embedded dispatcher, so the summary can name a settled report; a lost event fails
        the run. A worker hands its figures to the controller instead."""
        if self.is_worker:
            workeroutput: dict[str, Any] = getattr(self.config, "workeroutput", {})
            workeroutput[_OUTPUT_KEY] = self.output()
            return
        self.fire("finish_session", exit_status=int(exitstatus))
        self._stop_embedded()
        if self.problems() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def problems(self) -> bool:
        """Whether any event of the run, in any process, was not fired."""
        return self.lost.total > 0 or any(
            w.get("lost_count") or w.get("unreachable") or w.get("crashed")
            for w in self.workers.values()
        )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> Generator[None, None, None]:
        """The ``rigger_mp`` section: what could not be fired, then where the rest went;
        after pytest's own sections (the short test summary too), so that its last line
        is the run's last but for pytest's counts."""
        yield
        if not self.is_worker:
            self.write_summary(terminalreporter)

    def write_summary(self, terminalreporter: Any) -> None:
        """Write the section; red when an event was not fired."""
        lines = self.summary_lines()
        problems = self.problems()
        terminalreporter.write_sep("=", "rigger_mp", red=problems, green=not problems)
        for n, line in enumerate(lines, 1):
            terminalreporter.write_line(line, red=problems and n == len(lines))

    def summary_lines(self) -> list[str]:
        """The lost events by process, the unreachable workers' line, the last line."""
        lines: list[str] = []
        sent, lost = self.sent, self.lost.total
        unreachable: dict[str, list[tuple[str, int]]] = {}
        for worker_id, output in sorted(self.workers.items(), key=_worker_order):
            if "crashed" in output:
                lines.append(f"{worker_id}: crashed ({output['crashed']}); its events unknown")
                continue
            sent += int(output.get("sent", 0))
            lost += int(output.get("lost_count", 0))
            if output.get("unreachable"):
                unreachable.setdefault(str(output["unreachable"]), []).append(
                    (worker_id, int(output.get("lost_count", 0)))
                )
                continue
            lines.extend(_lost_lines(worker_id, output["lost"], int(output["lost_count"])))
        lines[:0] = _lost_lines("", self.lost.listed, self.lost.total)
        for reason, workers in unreachable.items():
            ids = ", ".join(worker_id for worker_id, _ in workers)
            count = sum(n for _, n in workers)
            lines.append(
                f"rigger_mp: {len(workers)} xdist worker{'s' if len(workers) > 1 else ''} "
                f"({ids}) could not reach the dispatcher at {self.address}: {reason}; the "
                f"{count:,} events of their tests were not fired"
            )
        lines.append(self.last_line(sent, lost))
        return lines

    def last_line(self, sent: int, lost: int) -> str:
        """Where the events went and how many: the section's (and the run's) last word."""
        if self.artifacts_root is not None:
            where = f"the in-process dispatcher; artifacts: {self.artifacts_root}"
            where += "".join(f"; report: {path}" for path in self.reports)
        else:
            where = f"the dispatcher at {self.address}"
        text = f"rigger_mp: {sent:,} event{'s' if sent != 1 else ''} sent to {where}"
        if lost:
            text += f"; {lost:,} not fired (listed above): the run fails"
        return text

    # -- test events: by the process that runs the test ----------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        """``start_test`` before the test's setup, ``finish_test`` after its teardown."""
        location, _, name = item.location
        item.stash[_REPORTS] = []
        self.fire("start_test", item.nodeid, test_name=name, test_location=location)
        yield
        reports = item.stash.get(_REPORTS, [])
        self.fire(
            "finish_test",
            item.nodeid,
            test_name=name,
            test_location=location,
            test_result=outcome(reports),
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        """Keep each phase's report for :func:`outcome`."""
        result = yield
        with contextlib.suppress(Exception):
            item.stash.setdefault(_REPORTS, []).append(result.get_result())


class Lost:
    """The events one process could not fire: the first :data:`MAX_LOST_LISTED` described,
    all counted."""

    def __init__(self) -> None:
        self.listed: list[str] = []
        self.total = 0

    def add(self, text: str) -> None:
        self.total += 1
        if len(self.listed) < MAX_LOST_LISTED:
            self.listed.append(text)

    def count(self) -> None:
        """One more lost event, already explained (the worker's unreachable line)."""
        self.total += 1


def _lost_lines(worker_id: str, listed: Sequence[str], total: int) -> list[str]:
    """One line per listed lost event of one process, then how many more there were."""
    prefix = f"{worker_id}: " if worker_id else ""
    lines = [f"{prefix}{text}" for text in listed]
    if total > len(listed):
        lines.append(f"{prefix}... and {total - len(listed):,} more events not fired")
    return lines


def _worker_order(item: tuple[str, Any]) -> tuple[int, str]:
    """gw2 before gw10."""
    return len(item[0]), item[0]


def _reason(exc: BaseException, hint: bool = True) -> str:
    """An exception as the end of an error line: its text (or type), and with ``hint``
    what to do when nothing answered (an answer, ``unauthorized`` say, says it itself)."""
    from .client import RemoteError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, RemoteError) and exc.code == "unauthorized":  # protocol.UNAUTHORIZED
        how = f"give it with --rigger-token or ${_TOKEN_ENV}"
        return f"{text} (the dispatcher has a server_token: {how})"
    return text if isinstance(exc, RemoteError) or not hint else f"{text}; {_REMEDY}"


def with_report(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with a ``report`` and a ``junit`` instance, each unless it has
    one (even disabled: that is how a config says no report); the host fills in ``dir``."""
    out = dict(config)
    plugins = dict(out.get("plugins") or {})
    for plugin in ("report", "junit"):
        if not any(isinstance(s, Mapping) and s.get("plugin") == plugin for s in plugins.values()):
            name = plugin if plugin not in plugins else f"rigger_mp_{plugin}"
            plugins[name] = {"plugin": plugin}
    out["plugins"] = plugins
    return out


def outcome(reports: list[pytest.TestReport]) -> str:
    """``passed``, ``failed``, ``skipped`` or ``error`` from one test's phase reports."""
    by_phase = {report.when: report for report in reports}
    call = by_phase.get("call")
    if call is not None and call.failed:
        return "failed"
    if any(report.failed for report in reports):
        return "error"  # setup or teardown
    if any(report.skipped for report in reports):
        return "skipped"  # a skip, or an xfail that failed as expected
    return "passed" if call is not None else "error"
