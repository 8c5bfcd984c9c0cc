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

A dispatcher that cannot be reached at session start is a ``pytest.UsageError``; an event
that cannot be fired later is reported as a warning and counted in the summary.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import Generator
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
        self.address = ""
        self.client: RiggerClient | None = None
        self.rigger: Rigger | None = None
        self.lost: list[str] = []

    def connect(self, address: str | None, config_file: str | None) -> None:
        """Start the embedded dispatcher (``config_file``) or reach ``address``; ping."""
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
        token: str | None = self.config.getoption("rigger_token")
        if token is None:
            token = os.environ.get(_TOKEN_ENV)
        client = RiggerClient(host, port, token=token)
        try:
            client.ping()
        except (RiggerError, OSError) as exc:
            client.close()
            self._stop_embedded()
            raise pytest.UsageError(f"rigger_mp: cannot reach {where}: {exc}") from None
        self.client = client

    def _start_embedded(self, config_file: str) -> tuple[str, int]:
        from .core.config import load_config
        from .core.rigger import Rigger
        from .errors import ConfigError, PluginError
        from .plugins import artifacts

        try:
            settings = load_config(config_file)
            raw = dict(settings.raw)
            raw["server_enabled"] = True
            raw.setdefault("server_port", 0)
            rigger = Rigger(raw)
            artifacts.install(rigger, self.config.getoption("rigger_artifacts"))
            rigger.start()
        except (ConfigError, PluginError) as exc:
            raise pytest.UsageError(f"rigger_mp: --rigger-config {config_file}: {exc}") from None
        self.rigger = rigger
        assert rigger.server_address is not None and rigger.server_port is not None
        return rigger.server_address, rigger.server_port

    def _stop_embedded(self) -> None:
        if self.rigger is not None:
            self.rigger.stop()

    def close(self) -> None:
        """Close the client; stop (drain) the embedded dispatcher."""
        if self.client is not None:
            self.client.close()
        self._stop_embedded()

    def fire(self, hook_name: str, **data: Any) -> None:
        """Fire one event; a failure is a warning and is counted, never silent."""
        from .errors import RiggerError

        assert self.client is not None
        try:
            self.client.fire_hook(hook_name, run_id=self.run_id, **data)
        except (RiggerError, OSError) as exc:
            text = f"rigger_mp: {hook_name} not fired to {self.address}: {exc}"
            self.lost.append(text)
            warnings.warn(RiggerFireWarning(text), stacklevel=2)

    # -- xdist: hand the address and run_id to the workers -------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each xdist worker where the dispatcher is and the run's id."""
        node.workerinput["rigger_address"] = self.address
        node.workerinput["rigger_run_id"] = self.run_id

    # -- session events: by the process that owns the session ----------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """``start_session``, before xdist starts its workers."""
        if not self.is_worker:
            self.fire("start_session")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """``finish_session``, after xdist's workers have all finished."""
        if not self.is_worker:
            self.fire("finish_session", exit_status=int(exitstatus))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Say where the events went, and what could not be fired."""
        if self.lost:
            terminalreporter.write_sep("=", "rigger_mp", red=True)
            for text in self.lost:
                terminalreporter.write_line(text)

    # -- test events: by the process that runs the test ----------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, None, None]:
        """``start_test`` before the test's setup, ``finish_test`` after its teardown."""
        location, _, name = item.location
        item.stash[_REPORTS] = []
        self.fire("start_test", test_name=name, test_location=location)
        yield
        reports = item.stash.get(_REPORTS, [])
        self.fire(
            "finish_test", test_name=name, test_location=location, test_result=outcome(reports)
        )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        """Keep each phase's report for :func:`outcome`."""
        result = yield
        with contextlib.suppress(Exception):
            item.stash.setdefault(_REPORTS, []).append(result.get_result())


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
