"""The main process's side of the TCP intake: the facade the Rigger uses, and the
server processes it starts, replaces and stops.

::

    Rigger ─ start, sync, quiesce, stop, stats ─▶ ServerSupervisor ─ spawn, kill ─▶ server process
                                                   │ (Phase)           (Fence, Stop)  (.process)
                                       its thread: ▼                          │
          ┌──────────────── Intake.serve(incarnation) (.intake) ◀── requests pipe
          │                   fires ──▶ EventPort.accept_batch; StatusWindow (.status_window)
          │                   FencePassed(n) ─▶ Fences.passed(n) (.fences) ◀── sync/quiesce wait
          └▶ at end-of-file: EventPort.server_gone (journaled fires it never passed on),
             then replace the process (back-off); or end once a stop has begun

The listening socket is bound here, in the main process, and handed to each server
process. So a bind failure raises at ``start()``, the port never changes, and while a
dead server process is being replaced, new connections wait in the socket's backlog
instead of being refused.

The supervisor's thread runs the :class:`~.intake.Intake` on one server process after
another. When a pipe reaches end-of-file the process has exited and everything it wrote
has been read: once a stop has begun (quiesce), the thread ends and closes the
listening socket; otherwise the death is logged, the fires it had committed to the
journal and not yet written into the pipe are queued (``server_gone``), and a new server
process is started.
Where the supervisor is in that life is one :class:`Phase`.

What "accepted" means to the rest of the dispatcher is kept by fences (see
:mod:`.fences`): :meth:`ServerSupervisor.sync` asks the server for one and returns once
the intake has queued every fire acked before it (``wait_background`` does that first),
and :meth:`ServerSupervisor.quiesce` does the same while making the server refuse fires
from then on (``stop`` does that before it drains). So an acked event is never dropped
by a clean stop nor missed by ``wait_background``. A heartbeat thread asks for a fence
every ``server_heartbeat`` seconds, so a server process that stopped or wedged is killed
and replaced even when nobody waits on it. This module never imports
:mod:`.process` or its modules (asyncio): the server runs in a process of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from .. import printable
from ..core.config import RiggerConfig
from ..deadline import Deadline
from ..lifecycle import move
from ..plugins.run_timeout import run_timeout_of
from .channel import BlockingReader, QueuedWriter
from .fences import Fences
from .incarnation import Incarnation
from .intake import Intake
from .listening import bind, warn_if_exposed
from .pipe_messages import Fence, Restored, ServerSettings, Stop

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.port import EventPort

logger = printable.logger("rigger_mp")

START_TIMEOUT: Final = 60.0
"""How long a new server process may take to start listening."""
STOP_GRACE: Final = 10.0
"""After a stop, how long connections may take to receive their last replies."""
FENCE_TIMEOUT: Final = 10.0
"""A server process that owes a fence and has sent nothing for this long, while the intake
waits on its pipe, is unresponsive (stopped, wedged): it is killed and replaced."""
HEARTBEAT_MISSES: Final = 3
"""Heartbeats (one every ``server_heartbeat`` seconds) a server process may leave
unanswered before it is unresponsive: killed and replaced."""


_PACKAGE_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""This rigger_mp's package directory: the server process loads exactly this one."""


def _program(module: str) -> str:
    """The server process's program: run ``module``'s ``main``.

    It runs under ``python -I`` (no working directory, no script directory, no user site,
    no PYTHONPATH on ``sys.path``) and loads this rigger_mp by its location rather than by
    adding a directory to ``sys.path``: a ``hmac.py`` or ``json.py`` in the directory the
    dispatcher was started from is never imported in the process that holds the token.
    """
    return (
        "import sys, importlib.util as u; "
        f"s = u.spec_from_file_location('rigger_mp', "
        f"{os.path.join(_PACKAGE_DIR, '__init__.py')!r}, "
        f"submodule_search_locations=[{_PACKAGE_DIR!r}]); "
        "m = sys.modules['rigger_mp'] = u.module_from_spec(s); s.loader.exec_module(m); "
        f"from {module} import main; main(sys.argv[1:])"
    )


_SERVER_MAIN: Final = _program("rigger_mp.server.process")
_HTTP_MAIN: Final = _program("rigger_mp.server.http")
"""The server process with the HTTP front on its loop (its socket is the fourth fd)."""


def server_command(fds: tuple[int, ...], http: bool = False) -> list[str]:
    """The command line of a server process given the file descriptors it inherits."""
    return [sys.executable, "-I", "-c", _HTTP_MAIN if http else _SERVER_MAIN, *map(str, fds)]


def _child_env() -> dict[str, str]:
    """The environment of the server process: ours (``-I`` ignores the PYTHON* variables)."""
    return dict(os.environ)


class Phase(enum.Enum):
    """Where a supervisor is in its life; it moves only along ``_EDGES``.

    SERVING and RESTARTING alternate as server processes die and are replaced until a
    stop begins; quiesce() then moves to QUIESCING, QUIESCED once no server process is
    left; stop() moves any phase to STOPPING, and STOPPED when it returns.
    """

    STARTING = "starting"
    """start() is starting the first server process."""
    SERVING = "serving"
    """A server process is live and takes fires."""
    RESTARTING = "restarting"
    """The server process died; a replacement is starting (fences wait for it)."""
    QUIESCING = "quiescing"
    """quiesce() began: the server process refuses fires (so will one still starting);
    none is started after it."""
    QUIESCED = "quiesced"
    """Quiescing, and no server process is left: a fence is answered at once."""
    STOPPING = "stopping"
    """stop() began (the dispatcher has drained): the server process was told to stop;
    a fence is answered at once."""
    STOPPED = "stopped"
    """stop() has finished: no server process, the socket closed."""

    @property
    def stop_begun(self) -> bool:
        """quiesce() or stop() has begun: fires are refused, no process is started."""
        return self in _STOP_BEGUN

    @property
    def fences_answered(self) -> bool:
        """No server process can hold acked fires unread: a fence is answered at once."""
        return self in _FENCES_ANSWERED


_STOP_BEGUN: Final = frozenset({Phase.QUIESCING, Phase.QUIESCED, Phase.STOPPING, Phase.STOPPED})
_FENCES_ANSWERED: Final = frozenset({Phase.QUIESCED, Phase.STOPPING, Phase.STOPPED})
_EDGES: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.STARTING: frozenset({Phase.SERVING}),
    Phase.SERVING: frozenset({Phase.RESTARTING, Phase.QUIESCING, Phase.STOPPING}),
    Phase.RESTARTING: frozenset({Phase.SERVING, Phase.QUIESCING, Phase.STOPPING}),
    Phase.QUIESCING: frozenset({Phase.QUIESCED, Phase.STOPPING}),
    Phase.QUIESCED: frozenset({Phase.STOPPING}),
    Phase.STOPPING: frozenset({Phase.STOPPED}),
}


def server_settings(
    settings: RiggerConfig, artifacts_root: str | os.PathLike[str] | None = None
) -> ServerSettings:
    """What a server process is told of the config (each process gets its own tids), and
    the artifacts root its uploads go to."""
    return ServerSettings(
        token=settings.server_token,
        max_message_bytes=settings.max_message_bytes,
        idle_timeout=settings.idle_timeout,
        stop_grace=STOP_GRACE,
        journal=settings.journal,
        journal_sync=settings.journal_sync,
        http_max_connections=settings.http_max_connections,
        http_address=settings.http_address,
        http_allowed_hosts=tuple(settings.http_allowed_hosts),
        live_max_tests=settings.live_max_tests,
        live_max_subscribers=settings.live_max_subscribers,
        live_run_timeout=run_timeout_of(
            (spec.plugin, spec.enabled, spec.data) for spec in settings.plugins.values()
        ),
        max_connections=settings.max_connections,
        drain_timeout=settings.drain_timeout,
        auth_timeout=settings.auth_timeout,
        max_auth_failures=settings.max_auth_failures,
        max_protocol_errors=settings.max_protocol_errors,
        max_messages_per_turn=settings.max_messages_per_turn,
        max_buffered_replies_bytes=settings.max_buffered_replies_bytes,
        max_json_depth=settings.max_json_depth,
        max_hook_name_length=settings.max_hook_name_length,
        dedup_window=settings.dedup_window,
        artifacts_root=None if artifacts_root is None else os.fspath(artifacts_root),
        max_attach_bytes=settings.max_attach_bytes,
        max_run_bytes=settings.max_run_bytes,
        min_free_disk_bytes=settings.min_free_disk_bytes,
    )


def supervisor_stats(supervisor: ServerSupervisor) -> dict[str, Any]:
    """What the main process knows of its server: where, which process, restarts, and
    what the intake counted."""
    intake = supervisor.intake
    return {
        "address": supervisor.address,
        "port": supervisor.port,
        "pid": supervisor.pid,
        "restarts": supervisor.restarts,
        "accepted": intake.accepted,
        "refused": intake.refused,
        "lost": intake.lost,
        "intake_pauses": intake.pauses,
        "stats_computed": intake.stats_computed,
        "status_window": len(intake.status),
        "http_address": supervisor.http_address,
        "http_port": supervisor.http_port,
    }


class ServerSupervisor:
    """Starts, restarts and stops the TCP server process of one Rigger; the facade the
    Rigger uses for it (its thread runs the :class:`Intake` on each process in turn).
    ``dispatcher``: the port ``Rigger.start()`` built; ``root``: where uploads go."""

    def __init__(
        self, dispatcher: EventPort, settings: RiggerConfig, root: Path | None = None
    ) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self.server_settings = server_settings(settings, root)
        self.address = settings.server_address
        self.port = settings.server_port
        self._sock: socket.socket | None = None
        # The HTTP front's listening socket (http_port set), bound here like the TCP one.
        self._http_sock: socket.socket | None = None
        self.http_address: str | None = None
        self.http_port: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _phase and _current
        self._phase = Phase.STARTING
        self._current: Incarnation | None = None  # the live server process, if any
        self._pid: int | None = None  # of the last one started
        # Set once a stop begins (quiesce or stop): ends a restart's back-off and the
        # intake's wait for room.
        self._stop_event = threading.Event()
        self._heartbeat = settings.server_heartbeat
        self._fences = Fences(min(FENCE_TIMEOUT, self._heartbeat * HEARTBEAT_MISSES))
        self._beater: threading.Thread | None = None
        self._intake = Intake(
            dispatcher,
            self._fences,
            self._stop_event,
            status_window=settings.status_window,
            status_window_bytes=settings.status_window_bytes,
            max_reply_bytes=settings.max_reply_bytes,
        )
        self._generation = 0
        self.restarts = 0
        self._launched: Incarnation | None = None  # by launch(), not yet greeted

    # -- transitions (each with the lock held), along _EDGES -----------------------------

    def _move(self, to: Phase) -> None:
        self._phase = move(_EDGES, self._phase, to)

    def _started(self, incarnation: Incarnation) -> Phase:
        """A server process has started and listens: serve it."""
        self._current = incarnation
        self._pid = incarnation.process.pid
        if self._phase in (Phase.STARTING, Phase.RESTARTING):
            self._move(Phase.SERVING)
        return self._phase

    def _exited(self) -> bool:
        """The live server process's pipe reached end-of-file: True to start another."""
        self._current = None
        if self._phase is Phase.SERVING:
            self._move(Phase.RESTARTING)
        return self._may_restart()

    def _may_restart(self) -> bool:
        """True if a server process is to be started now (not once a stop has begun)."""
        if self._phase is Phase.QUIESCING:
            self._move(Phase.QUIESCED)
        return self._phase is Phase.RESTARTING

    def _begin_quiesce(self) -> None:
        if not self._phase.stop_begun:
            self._move(Phase.QUIESCING)

    def _begin_stop(self) -> bool:
        """False if stop() has begun already."""
        if self._phase in (Phase.STOPPING, Phase.STOPPED):
            return False
        self._move(Phase.STOPPING)
        return True

    # -- lifecycle ---------------------------------------------------------------------

    def launch(self) -> None:
        """Bind; start the first server process, which boots meanwhile and takes no fire
        until :meth:`start` sends its settings (after the journal's replay)."""
        sock = bind(self.address, self.port)
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.address, self.port = host, port
        try:
            if self.settings.http_port is not None:
                self._http_sock = bind(self.settings.http_address, self.settings.http_port)
                self.http_address, self.http_port = self._http_sock.getsockname()[:2]
            self._launched = self._launch()
        except BaseException:
            self._close_sockets()
            raise
        warn_if_exposed(host, port, self.settings.server_token)

    def abandon(self) -> None:
        """The Rigger did not start after :meth:`launch`: end the process, close the sockets."""
        launched, self._launched = self._launched, None
        if launched is not None:
            launched.process.kill()
            launched.process.wait()
            launched.close(STOP_GRACE)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._sock, self._http_sock):
            if sock is not None:
                sock.close()
        self._sock = None

    def start(self, restored: Restored | None = None) -> tuple[str, int]:
        """:meth:`launch` unless done; wait until it listens; return the real address.

        ``restored``: the open runs for the first server process's live view (a server
        process started later reads the state files itself)."""
        if self._launched is None:
            self.launch()
        launched, self._launched = self._launched, None
        assert launched is not None and self._sock is not None
        host, port = self.address, self.port
        try:
            incarnation = self._greet(launched, restored)
        except BaseException:
            self._close_sockets()
            raise
        with self._lock:
            self._started(incarnation)
        self._thread = threading.Thread(target=self._run, name="rigger_mp-intake", daemon=True)
        self._thread.start()
        self._beater = threading.Thread(
            target=self._beat, name="rigger_mp-server-heartbeat", daemon=True
        )
        self._beater.start()
        # Registered after multiprocessing's own exit handler, so it runs first: stop
        # (drain, then stop the server) before multiprocessing terminates its children.
        atexit.register(self._at_exit)
        logger.info("TCP server listening on %s:%d", host, port)
        return host, port

    def _greet(self, incarnation: Incarnation, restored: Restored | None = None) -> Incarnation:
        """Send the process just launched its settings; wait until it is listening."""
        accepting = not self._phase.stop_begun
        tids = f"tcp{self._generation}-"
        settings = replace(
            self.server_settings, tid_prefix=tids, accepting=accepting, restored=restored
        )
        incarnation.greet(settings, START_TIMEOUT, STOP_GRACE)
        return incarnation

    def _launch(self) -> Incarnation:
        """Start a server process on the bound socket; it waits for its settings.

        A plain ``subprocess`` rather than ``multiprocessing``: spawn and forkserver would
        re-import the user's ``__main__`` (a script without a main guard would run again),
        and fork copies a process full of threads. The child gets exactly three file
        descriptors: the listening socket and its ends of the two pipes.
        """
        assert self._sock is not None
        self._generation += 1
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        fds: tuple[int, ...] = (self._sock.fileno(), requests_w, replies_r)
        if self._http_sock is not None:
            fds += (self._http_sock.fileno(),)
        try:
            process = subprocess.Popen(
                server_command(fds, http=self._http_sock is not None),
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=_child_env(),
            )
        except BaseException:
            for fd in (requests_r, requests_w, replies_r, replies_w):
                os.close(fd)
            raise
        # Our copies of the server's ends, closed: its death is our end-of-file.
        os.close(requests_w)
        os.close(replies_r)
        try:
            writer = QueuedWriter(replies_w)
        except BaseException:
            process.kill()
            process.wait()
            os.close(requests_r)
            os.close(replies_w)
            raise
        return Incarnation(process, BlockingReader(requests_r), writer)

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until every fire the server acked before now is queued; False on timeout."""
        return self._await_fence(self._ask_fence(False), timeout)

    def quiesce(self, timeout: float | None = None) -> None:
        """Have the server refuse fires, and wait until every one it acked is queued.

        Called by :meth:`Rigger.stop` before it drains. The intake reads on even with
        more than :data:`MAX_BACKLOG` events queued: the drain runs them anyway. If
        ``timeout`` runs out first, the server process is killed: what it acked is in
        its pipe, which the intake reads to the end. Only if even that does not happen
        within :data:`STOP_GRACE` are late events failed, logged and counted as ``lost``.
        """
        with self._lock:
            self._begin_quiesce()
        # Before waking the room (see Intake.wake); also cuts short a restart's
        # back-off: no server starts once quiescing.
        self._stop_event.set()
        self._intake.wake()
        n = self._ask_fence(True)
        if self._await_fence(n, timeout):
            return
        with self._lock:
            current = self._current
        if current is not None:
            self._kill(current, f"did not stop taking events within stop()'s {timeout:.3g} s")
        if not self._await_fence(n, STOP_GRACE):
            logger.error(
                "the TCP intake did not read the rest of the server's pipe within "
                "%.0f s; events acknowledged there are failed and counted as lost",
                STOP_GRACE,
            )

    def _ask_fence(self, quiesce: bool) -> int:
        """Ask the server for fence number n; answered when the intake reads it.

        The number is taken first: a server that dies after that has everything it
        wrote read at its end-of-file, which answers every fence asked so far (see
        :meth:`_run`). While a replacement starts, the request waits for it (see
        :meth:`_restart`); when no server will run again, it is answered at once.
        """
        n = self._fences.ask()
        with self._lock:
            done = self._phase.fences_answered
            current = self._current
            # Once quiescing, every fence quiesces: one numbered after quiesce()'s but
            # sent before it must not answer it while the server still takes fires.
            quiesce = quiesce or self._phase.stop_begun
        if done:
            self._fences.passed(n)
        elif current is not None:
            self._send_fence(current, n, quiesce)
        return n

    def _send_fence(self, incarnation: Incarnation, n: int, quiesce: bool) -> None:
        if self._fences.sent(n):  # else answered meanwhile (its server's end-of-file)
            incarnation.writer.send(Fence(n, quiesce))

    def _await_fence(self, n: int, timeout: float | None) -> bool:
        """Wait until fence ``n`` is answered; False if ``timeout`` ran out first.

        Each time it wakes without an answer (every :data:`FENCE_TIMEOUT`, or when
        ``timeout`` runs out), the server is checked: if for :data:`FENCE_TIMEOUT` it has
        owed a fence and sent nothing while the intake waited on its pipe, it is killed.
        """
        deadline = Deadline(timeout)
        limit = self._fences.limit
        while True:
            left = deadline.left()
            if self._fences.wait(n, limit if left is None else min(left, limit)):
                return True
            silent = self._intake.silent
            if silent is not None and self._fences.unresponsive(silent[1]):
                self._kill(silent[0], f"owed a fence and sent nothing for {limit:g} s")
            if deadline.expired():
                return False

    def _beat(self) -> None:
        """The heartbeat thread: every ``server_heartbeat`` seconds, until a stop begins.

        A heartbeat is a fence (the server answers it down the requests pipe, behind
        what it acked): a server process that stopped (SIGSTOP) or wedged is noticed
        without waiting for a ``sync`` or a stop to owe it one. Once the fence limit
        (:data:`HEARTBEAT_MISSES` heartbeats) has passed with the intake waiting on the
        pipe and nothing read, the process is killed; the intake reads what it acked to
        the end and a new process is started, as for any death.
        """
        while not self._stop_event.wait(self._heartbeat):
            with self._lock:
                serving = self._phase is Phase.SERVING
            if not serving:
                continue
            silent = self._intake.silent
            if silent is not None and self._fences.unresponsive(silent[1]):
                limit = self._fences.limit
                self._kill(silent[0], f"answered no heartbeat for {limit:g} s")
                continue
            self._ask_fence(False)

    def _kill(self, incarnation: Incarnation, why: str) -> None:
        """Kill a server process; the intake then reads its pipe to the end."""
        if incarnation.process.poll() is None:
            logger.error(
                "the TCP server process (pid %s) %s; killing it "
                "(the events it acknowledged are kept)",
                incarnation.process.pid,
                why,
            )
            incarnation.process.kill()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the server after the dispatcher drained: last replies out, no process left.

        Called by :meth:`Rigger.stop` once the events accepted have run.
        """
        with self._lock:
            if not self._begin_stop():
                return
            current = self._current
        self._stop_event.set()
        self._intake.wake()
        with contextlib.suppress(ValueError):
            atexit.unregister(self._at_exit)
        self._intake.answer_terminates(current)  # `terminate` is answered once drained
        if current is not None:
            current.writer.send(Stop())
        limit = STOP_GRACE + 5.0 if timeout is None else max(timeout, 1.0)
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join()  # ends at once: _stop_event is set
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(limit)
            if thread.is_alive():
                logger.error("the TCP server did not stop in %.0f s; killing it", limit)
                with self._lock:
                    current = self._current
                if current is not None:
                    current.process.kill()
                thread.join(limit)
        with self._lock:
            current = self._current
        if current is not None:
            try:
                current.process.wait(limit)
            except subprocess.TimeoutExpired:
                current.process.kill()
                current.process.wait()
            current.close(STOP_GRACE)
        self._close_sockets()
        self._intake.status.clear()
        self._fences.passed()  # nothing more will be queued: wake whoever still waits
        with self._lock:
            self._move(Phase.STOPPED)

    def _at_exit(self) -> None:
        self.dispatcher.stop()

    def wait_terminated(self, timeout: float | None = None) -> None:
        """Join the thread that carried out a TCP ``terminate`` (if any)."""
        self._intake.wait_terminated(timeout)

    @property
    def pid(self) -> int | None:
        """The pid of the last server process started."""
        return self._pid

    # -- what tests and diagnostics may look at ----------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the supervisor is in its life now."""
        return self._phase

    @property
    def current(self) -> Incarnation | None:
        """The live server process, if any."""
        return self._current

    @property
    def intake(self) -> Intake:
        """The intake that reads each server process's pipe."""
        return self._intake

    @property
    def fences(self) -> Fences:
        """The fences asked of the server processes and their answers."""
        return self._fences

    @property
    def intake_thread(self) -> threading.Thread | None:
        """The thread that runs the intake on one server process after another."""
        return self._thread

    def stats(self) -> dict[str, Any]:
        """What the main process knows of the server (see :func:`supervisor_stats`)."""
        return supervisor_stats(self)

    # -- the intake thread -------------------------------------------------------------

    def _run(self) -> None:
        """Serve one server process after another until the stop (or the quiesce)."""
        with self._lock:
            current = self._current
        while current is not None:
            self._intake.serve(current)
            current.process.wait()
            current.close(STOP_GRACE)
            with self._lock:
                restart = self._exited()
            self._fences.passed()  # all it wrote has been read
            if not restart:
                break
            lived = time.monotonic() - current.started
            logger.error(
                "the TCP server process (pid %s) died with exit code %s after %.1f s; "
                "starting a new one on %s:%d",
                current.process.pid,
                current.process.returncode,
                lived,
                self.address,
                self.port,
            )
            # What it committed and never passed on, before its successor starts.
            self.dispatcher.server_gone()
            current = self._restart(quick_death=lived < 1.0)
        # No server process will run again: refuse connections at once rather than leave
        # them in the backlog until stop() closes the socket.
        self._close_sockets()

    def _restart(self, quick_death: bool) -> Incarnation | None:
        """Start the next server process; None if a stop (or its quiesce) came first.

        A process that died within a second of starting waits half a second for its
        successor, and failed starts back off up to 5 s: a crash loop does not spin.
        """
        delay = 0.5 if quick_death else 0.0
        while True:
            if delay:
                self._stop_event.wait(delay)
            with self._lock:
                restart = self._may_restart()
            if not restart:
                self._fences.passed()
                return None
            try:
                incarnation = self._greet(self._launch())
            except Exception:
                logger.exception("starting a new TCP server process failed")
                self._fences.passed()  # no server ran: none acked anything
                delay = min(5.0, max(0.5, delay * 2))
                continue
            with self._lock:
                phase = self._started(incarnation)
            self.restarts += 1
            asked = self._fences.outstanding()
            if asked:  # asked while this one started (it may have acked since): ask it
                with self._lock:  # read after `asked`: see _ask_fence
                    quiescing = self._phase.stop_begun
                self._send_fence(incarnation, asked, quiescing)
            if phase in (Phase.STOPPING, Phase.STOPPED):  # this one must go too
                incarnation.writer.send(Stop())
            where = (incarnation.process.pid, self.address, self.port)
            logger.warning("TCP server restarted (pid %s) on %s:%d", *where)
            return incarnation
