"""What the ``report`` and ``junit`` plugins share: the run's events, bound to a
:class:`~.run_keeper.RunKeeper`, and the hand-off of an ended run to a writer thread.

A subclass names itself (``label``), says how it writes a run (:meth:`write_run`) and
may take what it needs from the event thread before the hand-off (:meth:`prepare`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.plugin import RiggerBasePlugin
from ..errors import PluginError
from .run_keeper import RUN_EVENTS, RunKeeper
from .run_writer import Writer
from .runs import Snapshot

DEFAULT_DIR = "rigger-artifacts"
"""Where the files go when no host fills in ``dir``: serve's and pytest's default root."""


class RunFilesPlugin(RiggerBasePlugin):
    """Keeps the runs of its events and writes each run's file(s) when it ends."""

    label: ClassVar[str] = "run files"
    what: ClassVar[str] = "a run's files"
    """Names a write job in the log."""

    def plugin_initialize(self) -> None:
        data = self.data
        where = f"instance {self.ident!r} (plugin {self.label})"
        self.dir = data.get("dir", DEFAULT_DIR)
        if not isinstance(self.dir, str) or not self.dir:
            raise PluginError(f"{where}: dir must be a directory path")
        if data.get("background"):
            raise PluginError(
                f"{where}: the {self.label} keeps its runs in the main process; "
                "it cannot run in the worker pool (background: true)"
            )
        self.initialize_more(where)
        self.keeper = RunKeeper(
            self.label, self.ident, data, self.dir, self._rigger, self._hand_off
        )
        self.runs = self.keeper.runs
        self.limits = self.runs.limits
        self.writer = Writer(f"{self.label} {self.ident}")
        for event in RUN_EVENTS:
            self.register_plugin_hook(event)
        self.keeper.reload()

    def initialize_more(self, where: str) -> None:
        """A subclass's own settings, checked before the runs are read back."""

    def prepare(self, snapshot: Snapshot) -> Any:
        """What :meth:`write_run` needs from the event thread (read there, before the
        hand-off)."""
        return None

    def write_run(self, snapshot: Snapshot, prepared: Any) -> None:
        raise NotImplementedError

    # -- the events --------------------------------------------------------------------

    def start_session(
        self,
        run_id: Any = None,
        session_id: Any = None,
        environment: Any = None,
        shards: Any = None,
    ) -> None:
        event = {"run_id": run_id, "session_id": session_id, "environment": environment}
        self.keeper.event("start_session", {**event, "shards": shards})

    def collect_tests(self, run_id: Any = None, session_id: Any = None, tests: Any = None) -> None:
        self.keeper.event(
            "collect_tests", {"run_id": run_id, "session_id": session_id, "tests": tests}
        )

    def start_test(
        self,
        test_name: Any = None,
        test_location: Any = "",
        run_id: Any = None,
        artifact_path: Any = None,
        session_id: Any = None,
        worker: Any = None,
        host: Any = None,
    ) -> None:
        event = {"test_name": test_name, "test_location": test_location, "run_id": run_id}
        event.update(artifact_path=artifact_path, session_id=session_id)
        event.update(worker=worker, host=host)
        self.keeper.event("start_test", event)

    def finish_test(
        self,
        test_name: Any = None,
        test_location: Any = "",
        test_result: Any = None,
        run_id: Any = None,
        duration: Any = None,
        when: Any = None,
        longrepr: Any = None,
        crash: Any = None,
        sections: Any = None,
        outcome: Any = None,
        worker: Any = None,
        host: Any = None,
        markers: Any = None,
        rerun: Any = None,
        attachments: Any = None,
        skip_reason: Any = None,
        artifact_path: Any = None,
        session_id: Any = None,
    ) -> None:
        event = dict(locals())
        del event["self"]
        self.keeper.event("finish_test", event)

    def finish_session(
        self, run_id: Any = None, exit_status: Any = None, session_id: Any = None
    ) -> None:
        self.keeper.event(
            "finish_session",
            {"run_id": run_id, "session_id": session_id, "exit_status": exit_status},
        )

    def plugin_stop(self, timeout: float | None) -> None:
        self.keeper.close()
        self.writer.close(timeout)

    # -- the hand-off ------------------------------------------------------------------

    def _hand_off(self, snapshot: Snapshot) -> None:
        """On the event thread: the run ended; its files are written on the writer's."""
        prepared = self.prepare(snapshot)
        self.writer.submit(lambda: self._write_and_release(snapshot, prepared), self.what)

    def _write_and_release(self, snapshot: Snapshot, prepared: Any) -> None:
        try:
            self.write_run(snapshot, prepared)
            self.keeper.written(snapshot)
        finally:
            self.written(snapshot)
            self.runs.release(snapshot)

    def written(self, snapshot: Snapshot) -> None:
        """After the write (done or failed), on the writer's thread."""
