"""The pytest plugin: fire a test session's events to a rigger_mp dispatcher.

Registered through the ``pytest11`` entry point, so pytest loads it in every run; it does
nothing unless asked:

- ``--rigger HOST:PORT``: fire to a running dispatcher (``rigger-mp serve``);
- ``--rigger-config FILE``: run a dispatcher from FILE inside the pytest process for the
  session (its TCP server on a free loopback port unless FILE says otherwise, so that
  xdist workers reach it too), stopped and drained at the end.

Events, each carrying ``run_id`` (one per pytest run, ``--rigger-run-id`` to choose it:
processes on many hosts given the same one make one run) and ``session_id`` (one per
pytest session, shared by its xdist workers); all JSON:

- ``start_session(run_id, environment, shards)`` and ``finish_session(run_id, exit_status)``: once
  per session, by the process that owns it (the xdist controller; pytest itself
  without xdist). ``environment`` is ``{"python", "platform", "pytest", "plugins": {dist
  name: version}, "command_line": [args], "host", "worker": "main"}``;
- ``collect_tests(tests=[[test_location, test_name], ...])``: the tests the session will
  run, in chunks, once by the session's process (:mod:`rigger_mp.pytest_collection`);
- ``start_test(test_name, test_location, worker, host)`` before the test's setup, and
  ``finish_test`` after its teardown, by the process that runs the test (each xdist worker).
  ``test_location`` is the test's file, ``test_name`` the rest of its id
  (``TestClass.test_x[param]``).

``finish_test`` tells the test's story (``outcome``, ``duration``, ``longrepr``, ``sections``,
``worker``, ``host``, ``rerun``, ``attachments``...): :mod:`rigger_mp.pytest_story` lists
the keys and builds them.

The bounds keep a ``finish_test`` well within the dispatcher's ``max_message_bytes``
(1 MiB by default). Measured as sent (JSON, ``ensure_ascii``): ``longrepr``, the crash
message and the skip reason at most ``max_failure_bytes`` each (default 64 KiB), all of
a test's ``sections`` together at most ``max_capture_bytes`` (default 256 KiB). A text
over its bound is cut and ends with a note saying how many bytes were cut. Set them with
``--rigger-max-failure-bytes N`` and ``--rigger-max-capture-bytes N``, or the ini options
``rigger_max_failure_bytes`` and ``rigger_max_capture_bytes`` (the options win; at least
:data:`MIN_LIMIT`).

Fixtures (:mod:`rigger_mp.pytest_artifacts` says where their files go):

- ``rigger_artifacts``: the test's artifact directory as a ``pathlib.Path``, created:
  ``<root>/<run_id>/<location>/<name>``, the one the dispatcher's plugins use (its
  ``testlog``, the ``archive`` that packs it once the test has finished);
- ``rigger_attach(name, data)``: store bytes, text or a copy of a file under ``name``, a
  relative path (``shots/login.png``), in that directory; returns the file's path.

The in-process dispatcher (``--rigger-config``) gets a ``report`` instance unless FILE has
one (enabled or not), writing ``report.html`` into the artifacts root; it is stopped and
drained at the end of the session, before the summary, so the report is settled.

What a user sees, once per run (on the xdist controller, for all the workers):

- a dispatcher the session's process cannot reach at its start is a ``pytest.UsageError``
  (one ``ERROR:`` line naming the address and what to do; nothing runs, exit status 4);
- an xdist worker that cannot reach it (it went down after the controller checked, say)
  raises nothing: its tests run, their events are counted as not fired, and the
  controller prints one line for all such workers;
- events go through a sender thread (:mod:`rigger_mp.pytest_sender`): a test does not wait
  for the dispatcher; while it cannot be reached they wait in a spool, for
  ``--rigger-spool-seconds`` (default 60) and up to ``--rigger-spool-bytes``, and are sent
  once it is back, each with its fire id, so that none runs twice;
- every event that could not be fired is listed in the ``rigger_mp`` section of the
  terminal summary, at most :data:`~.pytest_lost.MAX_LOST_LISTED` per process, the rest counted; any
  lost event fails the run (exit status 1 when it would have been 0). The first one of
  each process is also a ``RiggerFireWarning`` (never raised, even under ``-W error``):
  one, not one per event, so that a dispatcher gone mid-run does not flood pytest's
  warnings summary;
- a line when tests' files stayed on this host, unseen by the dispatcher;
- the section ends with one line: where the events went and how many were sent, summed
  over the workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
import warnings
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .pytest_options import TOKEN_ENV, add_options, check_shards

# Only pytest, the standard library and pytest_options (the same) at import time: pytest
# imports this module in every run, and the rest of rigger_mp is imported once --rigger
# or --rigger-config asks.
if TYPE_CHECKING:
    from .client import RiggerClient
    from .core.rigger import Rigger
    from .pytest_artifacts import Data, Place, Uploader
    from .pytest_sender import Sender
    from .pytest_story import Limits

_PLUGIN_NAME = "rigger_mp_session"
_REPORTS = pytest.StashKey[list[pytest.TestReport]]()
_ARTIFACTS = pytest.StashKey[Path]()
"""A test's artifact directory relative to the root, once a fixture made it."""
_HOST_ENV = "RIGGER_MP_HOST"
"""Overrides the host name that events carry (``host``)."""
_OUTPUT_KEY = "rigger_mp"
"""The key of a worker's figures in xdist's ``workeroutput``."""
_REMEDY = (
    "is it running? Start one (`rigger-mp serve`), give its address with "
    "--rigger HOST:PORT, or run one inside pytest with --rigger-config FILE"
)
SENDER_RESEND = 1.0
"""Seconds the sender's client resends a batch whose connection broke, before the spool
takes over (short: the spool retries for ``--rigger-spool-seconds``)."""
MIN_LIMIT = 1024
"""The smallest value of either limit: room for the note that says what was cut."""


class RiggerFireWarning(pytest.PytestWarning):
    """An event could not be fired to the dispatcher."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """The plugin's options (:mod:`.pytest_options`); without --rigger or --rigger-config
    it stays inert."""
    add_options(parser)


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
    if workerinput is None:
        check_shards(config)
    session = RiggerSession(config, workerinput)
    session.connect(address, config_file, workerinput)
    config.pluginmanager.register(session, _PLUGIN_NAME)
    from .pytest_collection import register

    register(config, session)  # collect_tests, by the session's process


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the connection; stop and drain an embedded dispatcher."""
    session = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if isinstance(session, RiggerSession):
        config.pluginmanager.unregister(session)
        session.close()


class RiggerSession:
    """One process's part of the run: its client, and the embedded dispatcher if any."""

    def __init__(self, config: pytest.Config, workerinput: dict[str, Any] | None) -> None:
        from .pytest_lost import Lost
        from .pytest_story import limits

        self.config = config
        self.is_worker = workerinput is not None
        run_id = (workerinput or {}).get("rigger_run_id") or config.getoption("rigger_run_id")
        self.run_id: str = run_id or uuid.uuid4().hex
        self.session_id: str = (workerinput or {}).get("rigger_session_id") or uuid.uuid4().hex
        """This pytest session's (shard's) id, in every event: shards share a run_id."""
        token = (workerinput or {}).get("rigger_token") or config.getoption("rigger_token")
        self.token: str | None = token or os.environ.get(TOKEN_ENV)
        """The server's token: the embedded config's, else the option, else the environment."""
        self.address = ""
        self.client: RiggerClient | None = None
        self.rigger: Rigger | None = None
        self.artifacts_root: Path | None = None
        self.reports: list[Path] = []
        self.sender: Sender | None = None
        self.lost = Lost()
        self.unreachable: str | None = None
        """Why this worker could not reach the dispatcher at its start (then no client)."""
        self.workers: dict[str, dict[str, Any]] = {}
        """The controller's record of each xdist worker's :meth:`output`, by worker id."""
        self.worker: str = (workerinput or {}).get("workerid", "main")
        self.host = os.environ.get(_HOST_ENV) or socket.gethostname()
        self.limits: Limits = limits(config, MIN_LIMIT)
        self.place: Place | None = None
        """Where this process writes its tests' files (the fixtures'), once connected."""
        self.elsewhere = ""
        """Why the tests' files stay on this host (the dispatcher cannot see them), or ''."""
        self.kept_here = 0
        """Tests of this process whose files stayed here, unseen by the dispatcher."""
        self.uploader: Uploader | None = None

    def connect(
        self, address: str | None, config_file: str | None, workerinput: dict[str, Any] | None
    ) -> None:
        """Start the embedded dispatcher (``config_file``) or reach ``address``; ping; find
        where the tests' files go (an xdist worker is told in ``workerinput``).

        The session's process raises a ``pytest.UsageError`` when the dispatcher does not
        answer; an xdist worker records why (:attr:`unreachable`) for the controller.
        """
        from .client import RiggerClient
        from .errors import RiggerError
        from .pytest_artifacts import Place, Uploader

        if config_file is not None:
            host, port = self._start_embedded(config_file)
            where = f"the dispatcher of --rigger-config {config_file}"
        else:
            assert address is not None
            host, port = parse_address(address)
            where = f"the dispatcher at --rigger {address}"
        self.address = f"{host}:{port}"
        if workerinput is not None:
            self.place = Place.from_input(workerinput["rigger_place"])
            self.elsewhere = workerinput["rigger_elsewhere"]
        # Its own resends are short: past them the sender's spool takes over.
        client = RiggerClient(host, port, token=self.token, resend_seconds=SENDER_RESEND)
        try:
            client.ping()
            if self.place is None:
                self.place = self._find_place(client)
        except (RiggerError, OSError) as exc:
            client.close()
            self._stop_embedded()
            if self.is_worker:
                self.unreachable = _reason(exc)
                return
            raise pytest.UsageError(f"rigger_mp: cannot reach {where}: {_reason(exc)}") from None
        self.client = client
        from .pytest_sender import Sender
        from .pytest_spool import Spool

        spool = Spool(max(0, self.config.getoption("rigger_spool_bytes")))
        seconds = max(0.0, self.config.getoption("rigger_spool_seconds"))
        self.sender = Sender(client, self.lose, seconds, spool)
        if self.place is not None and not self.place.shared:
            self.uploader = Uploader(RiggerClient(host, port, token=self.token))

    def _find_place(self, client: RiggerClient) -> Place:
        """Where the tests' files go: the dispatcher's root when it shares this host's
        filesystem (embedded, or on this host by its ``info``), else a local one."""
        from .client import RemoteError
        from .pytest_artifacts import Place

        run_id = self.run_id
        if self.artifacts_root is not None:
            return Place(self.artifacts_root, run_id, shared=True)
        try:
            info = client.info()
        except RemoteError as exc:  # a dispatcher older than the info op
            info = {"host": None, "artifacts_root": None, "error": str(exc)}
        root, here = info.get("artifacts_root"), socket.gethostname()
        if info.get("host") == here and isinstance(root, str):
            return Place(Path(root), run_id, shared=True)
        if "error" in info:
            self.elsewhere = f"the dispatcher at {self.address} does not say where its root is"
        elif info.get("host") != here:
            self.elsewhere = f"the dispatcher at {self.address} runs on {info.get('host')}"
        else:
            self.elsewhere = f"the dispatcher at {self.address} has no artifacts root"
        local = Path(self.config.getoption("rigger_artifacts")).absolute()
        return Place(local, run_id, shared=False)

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
        """Send what is left (or count it lost), close the client; stop (drain) the
        embedded dispatcher."""
        if self.sender is not None:
            self.sender.close()
        if self.client is not None:
            self.client.close()
        if self.uploader is not None:
            self.uploader.close()
        self._stop_embedded()

    @property
    def sent(self) -> int:
        """Events of this process the dispatcher accepted."""
        return 0 if self.sender is None else self.sender.sent

    def fire(self, hook_name: str, what: str = "", /, **data: Any) -> None:
        """Fire one event through the sender (it waits only while the sender's queue is
        full); one that cannot be fired is listed, and the first one warned of.

        ``what`` names the event's subject (the test's id) in the list of lost events.
        """
        if self.sender is None:  # a worker that could not reach the dispatcher
            self.lost.count()
            return
        ids = {"run_id": self.run_id, "session_id": self.session_id}
        self.sender.submit(hook_name, what, {**ids, **data})
        self.warn_once()

    def flush(self) -> None:
        """Return once every event fired so far is sent or counted lost."""
        if self.sender is not None:
            self.sender.flush()
        self.warn_once()

    def lose(self, hook_name: str, what: str, reason: str) -> None:
        """The sender could not fire an event (from its thread): list it."""
        from .pytest_lost import describe

        self.lost.add(describe(hook_name, what, self.address, reason))

    def warn_once(self) -> None:
        """Warn of this process's first lost event, from the test thread (once)."""
        text = self.lost.to_warn()
        if text is not None:
            # Under ``-W error`` (``filterwarnings = error``) warn raises: out of a hook
            # that would be an INTERNALERROR with no summary. The event is listed anyway.
            with contextlib.suppress(RiggerFireWarning):
                warnings.warn(RiggerFireWarning(f"rigger_mp: {text}"), stacklevel=3)

    def output(self) -> dict[str, Any]:
        """What a worker hands the controller at its end (plain data, for execnet)."""
        return {
            "sent": self.sent,
            "lost": list(self.lost.listed),
            "lost_count": self.lost.total,
            "unreachable": self.unreachable,
            "kept_here": self.kept_here,
        }

    # -- xdist: hand the address and run_id to the workers, collect what they did ------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each xdist worker where the dispatcher is and the run's id."""
        node.workerinput["rigger_address"] = self.address
        node.workerinput["rigger_run_id"] = self.run_id
        node.workerinput["rigger_session_id"] = self.session_id
        node.workerinput["rigger_token"] = self.token
        assert self.place is not None  # found when the controller connected
        node.workerinput["rigger_place"] = self.place.as_input()
        node.workerinput["rigger_elsewhere"] = self.elsewhere

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
            from .pytest_story import environment

            shards = self.config.getoption("rigger_shards")
            env = environment(self.config, self.host)
            self.fire("start_session", environment=env, shards=shards)
            self.flush()  # accepted before any worker starts firing

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """``finish_session`` after xdist's workers have all finished; stop (drain) the
        embedded dispatcher, so the summary can name a settled report; a lost event fails
        the run. A worker hands its figures to the controller instead."""
        if self.is_worker:
            self.flush()
            workeroutput: dict[str, Any] = getattr(self.config, "workeroutput", {})
            workeroutput[_OUTPUT_KEY] = self.output()
            return
        self.fire("finish_session", exit_status=int(exitstatus))
        self.flush()
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
        from .pytest_lost import lost_lines, worker_order

        lines: list[str] = []
        sent, lost = self.sent, self.lost.total
        unreachable: dict[str, list[tuple[str, int]]] = {}
        for worker_id, output in sorted(self.workers.items(), key=worker_order):
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
            lines.extend(lost_lines(worker_id, output["lost"], int(output["lost_count"])))
        lines[:0] = lost_lines("", self.lost.listed, self.lost.total)
        for reason, workers in unreachable.items():
            ids = ", ".join(worker_id for worker_id, _ in workers)
            count = sum(n for _, n in workers)
            lines.append(
                f"rigger_mp: {len(workers)} xdist worker{'s' if len(workers) > 1 else ''} "
                f"({ids}) could not reach the dispatcher at {self.address}: {reason}; the "
                f"{count:,} events of their tests were not fired"
            )
        kept = self.kept_here + sum(int(w.get("kept_here", 0)) for w in self.workers.values())
        if kept and self.place is not None:
            lines.append(
                f"rigger_mp: the files of {kept:,} test{'s' if kept != 1 else ''} stay on "
                f"this host under {self.place.root}: {self.elsewhere}, and uploading them "
                "failed (listed above); their finish_test lists only those that arrived"
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
        """``start_test`` before the test's setup, ``finish_test`` after its teardown:
        one per attempt under pytest-rerunfailures, ``rerun`` counting from 0."""
        from .pytest_story import attempts, result_of, story

        location, _, name = item.location
        item.stash[_REPORTS] = []
        where = {"worker": self.worker, "host": self.host}  # the live view's lane
        self.fire("start_test", item.nodeid, test_name=name, test_location=location, **where)
        yield
        common = {
            "test_name": name,
            "test_location": location,
            "worker": self.worker,
            "host": self.host,
            "markers": list(dict.fromkeys(mark.name for mark in item.iter_markers())),
            "attachments": self.attachments(item),
        }
        before = 0  # sections of earlier attempts: pytest keeps adding to one list
        kept: list[pytest.TestReport] = item.stash.get(_REPORTS, [])
        runs = attempts(kept)
        for rerun, reports in enumerate(runs or [[]]):
            self.fire(
                "finish_test",
                item.nodeid,
                test_result=result_of(reports),
                rerun=rerun,
                **story(reports, before, self.limits),
                **common,
            )
            before = len(reports[-1].sections) if reports else before

    def artifacts_of(self, item: pytest.Item) -> Path:
        """The test's artifact directory, created (once): the ``rigger_artifacts`` fixture."""
        assert self.place is not None
        relative = item.stash.get(_ARTIFACTS, None)
        if relative is None:
            location, _, name = item.location
            relative = self.place.relative(location, name)
            self.place.make(relative)
            item.stash[_ARTIFACTS] = relative
        return self.place.root / relative

    def attach(self, item: pytest.Item, name: str, data: Data) -> Path:
        """Store ``data`` as ``name`` in the test's directory: the ``rigger_attach`` fixture."""
        self.artifacts_of(item)
        assert self.place is not None
        path = self.place.attach(item.stash[_ARTIFACTS], name, data)
        if self.uploader is not None:  # the dispatcher is on another host
            self.uploader.send(self.place, item.stash[_ARTIFACTS], item.location, name)
        return path

    def attachments(self, item: pytest.Item) -> list[dict[str, Any]]:
        """The files in the test's directory, if a fixture made it where the dispatcher
        sees it or uploaded them there (a failed upload is a lost event); else none."""
        relative = item.stash.get(_ARTIFACTS, None)
        if relative is None or self.place is None:
            return []
        if self.uploader is not None:
            arrived, failed = self.uploader.send_all(self.place, relative, item.location)
            for text in failed:
                self.lost.add(f"attachment {text} of {item.nodeid} not uploaded")
            self.kept_here += bool(failed)
            return arrived
        return self.place.listing(relative) if self.place.shared else []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        """Keep each phase's report for the test's finish_test."""
        result = yield
        with contextlib.suppress(Exception):
            item.stash.setdefault(_REPORTS, []).append(result.get_result())


def _reason(exc: BaseException, hint: bool = True) -> str:
    """An exception as the end of an error line: its text (or type), and with ``hint``
    what to do when nothing answered (an answer, ``unauthorized`` say, says it itself)."""
    from .client import RemoteError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, RemoteError) and exc.code == "unauthorized":  # protocol.UNAUTHORIZED
        how = f"give it with --rigger-token or ${TOKEN_ENV}"
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


def _session(request: pytest.FixtureRequest) -> RiggerSession | None:
    session = request.config.pluginmanager.get_plugin(_PLUGIN_NAME)
    return session if isinstance(session, RiggerSession) and session.place else None


@pytest.fixture
def rigger_artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact directory, created: ``<root>/<run_id>/<location>/<name>``,
    where the dispatcher's plugins find it (see :mod:`rigger_mp.pytest_artifacts`);
    without a dispatcher, a directory under ``tmp_path``."""
    session = _session(request)
    if session is None:
        path: Path = request.getfixturevalue("tmp_path") / "rigger-artifacts"
        path.mkdir(exist_ok=True)
        return path
    return session.artifacts_of(request.node)


@pytest.fixture
def rigger_attach(
    request: pytest.FixtureRequest, rigger_artifacts: Path
) -> Callable[[str, Data], Path]:
    """``rigger_attach(name, data)``: store bytes, text (a ``str``) or a copy of a file (a
    ``pathlib.Path``) as ``name`` (a relative path: ``shots/login.png``) in this test's
    artifact directory; listed in its ``finish_test``'s ``attachments``. Returns the
    file's path."""
    session = _session(request)
    if session is not None:
        return lambda name, data: session.attach(request.node, name, data)

    def attach(name: str, data: Data) -> Path:
        from .pytest_artifacts import Place

        place = Place(rigger_artifacts.parent, None, shared=False)
        return place.attach(Path(rigger_artifacts.name), name, data)

    return attach
