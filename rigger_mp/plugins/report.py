"""Built-in plugin ``report``: one self-contained ``report.html`` per test run.

::

    start_session(run_id, session_id, environment)  a session (shard) of the run starts
    collect_tests(run_id, session_id, tests)        the tests the session expects
    start_test(test_name, test_location)   the test: "unfinished", started now
    finish_test(..., test_result, ...)     the test's story (see rigger_mp.plugins.runs)
    finish_session(run_id, session_id, exit_status)
                                           the session ends; when it was the run's last
                                           open one (or after run_timeout without an
                                           event) the run is written, off the event
                                           thread, to <dir>/<run_id>/report.html
                                           (+ run.json) and <dir>/index.html lists the
                                           runs; without a run id: <dir>/report.html
    (after stop(): rewrite_reports)        the last report again, archives settled

The run's state is kept on disk while it is open (:mod:`.run_state`), so a restarted
dispatcher reads it back and the report lists every test; :mod:`.run_keeper` says how.

The events run on the event thread, in the main process (the instance refuses
``background: true``): the runs live in this instance (:class:`~.runs.Runs`, bounded by
``max_tests``, ``max_failure_bytes``, ``max_capture_bytes`` and ``max_text_bytes``).
``finish_session`` only takes the run's :class:`~.runs.Snapshot` and the archive
plugin's recent problems, and hands them to a writer thread (:mod:`.run_writer`): the
page of 100,000 tests takes seconds to render, and the events behind it do not wait.
The dispatcher's ``stop()`` waits for the reports being written.

Every file goes through :mod:`rigger_mp.safe_paths`: a link planted at the run's
directory, the report or the index is never followed.

Archives: the last tests' archives are made by backgrounded hooks that may still be
running at ``finish_session``. Each test links the file the ``archive`` instance writes
for it (:meth:`ArchivePlugin.target`): "present" once it exists, "failed" when the
instance's recent problems (``last_errors`` in the ``archives`` global) name the
directory or the directory is gone (the archiver fails on it), else "pending". No
lifecycle hook tells a plugin that the pool has drained, so the hosts (``serve``, the
demo, pytest) call :func:`rewrite_reports` after ``stop()`` to mark the settled state.

The page itself: :mod:`.report_page`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

from .. import printable
from ..core.plugin import ConfigKeys
from ..errors import PluginError
from ..safe_paths import write_atomically
from .archive import ArchivePlugin
from .report_page import Links, render
from .run_index import write_index, write_summary
from .run_keeper import RUN_KEYS
from .run_plugin import DEFAULT_DIR as DEFAULT_DIR
from .run_plugin import RunFilesPlugin
from .runs import Snapshot, made_root

logger = printable.logger("rigger_mp")

REPORT_NAME: Final = "report.html"


class ReportPlugin(RunFilesPlugin):
    """Writes a run's ``report.html`` when it ends."""

    label = "report"
    what = "a report"
    config_keys: ClassVar[ConfigKeys] = {
        "dir": str,
        "archive": (str, type(None)),
        **RUN_KEYS,
    }

    def initialize_more(self, where: str) -> None:
        self.archive = self.data.get("archive")
        if self.archive is not None and not isinstance(self.archive, str):
            raise PluginError(f"{where}: archive must be an instance name or null")
        self._last: Snapshot | None = None
        """The last run written, kept for :meth:`rewrite` (not counted in the bounds)."""

    def prepare(self, snapshot: Snapshot) -> Links:
        return self._links(snapshot)

    def write_run(self, snapshot: Snapshot, prepared: Any) -> None:
        self.write(snapshot, prepared)

    def written(self, snapshot: Snapshot) -> None:
        self._last = snapshot

    # -- the page ----------------------------------------------------------------------

    def rewrite(self) -> Path | None:
        """After ``stop()``: write the last run's report again, with the archives' state
        read now (made or failed since; the event thread that owned it has ended)."""
        self.writer.wait()
        if self._last is None:
            return None
        return self.write(self._last, self._links(self._last))

    def write(self, snapshot: Snapshot, links: Links) -> Path:
        """Write ``snapshot``'s report (and, with a run id, its summary and the index)."""
        root = made_root(self.dir)
        name = snapshot.dir_name
        relative = REPORT_NAME if name is None else f"{name}/{REPORT_NAME}"
        target = write_atomically(root, relative, render(snapshot, links).encode("utf-8"))
        if name is not None:
            write_summary(root, name, snapshot)
            write_index(root)
        logger.info("report %r: %s", self.ident, target)
        return target

    def _links(self, snapshot: Snapshot) -> Links:
        """The archive plugin's state now (read on the event thread, which owns it)."""
        rigger = self._rigger
        archives = getattr(rigger, "global_data", {}).get("archives", {})
        archiver = None
        get = getattr(rigger, "get_instance_obj", None)
        if get is not None:
            if self.archive is not None:
                archiver = get(self.archive)
            else:
                instances: Mapping[str, Any] = getattr(rigger, "instances", {})
                archiver = next(
                    (i.obj for i in instances.values() if isinstance(i.obj, ArchivePlugin)), None
                )
        root = Path(self.dir).resolve()
        name = snapshot.dir_name
        return Links(
            root,
            archives if isinstance(archives, Mapping) else {},
            archiver if isinstance(archiver, ArchivePlugin) else None,
            root if name is None else root / name,
        )


# -- for the hosts (serve, the demo, pytest --rigger-config) ------------------------------


RUN_FILE_PLUGINS: Final = ("report", "junit")
"""The built-in plugins that write a run's files under the artifacts root."""


def with_dir(config: Mapping[str, Any], root: str | os.PathLike[str]) -> dict[str, Any]:
    """A copy of ``config`` whose ``report`` and ``junit`` instances without ``dir`` write
    into ``root``."""
    out = dict(config)
    plugins = out.get("plugins")
    if isinstance(plugins, Mapping):
        out["plugins"] = plugins = copy.deepcopy(dict(plugins))
        for spec in plugins.values():
            if (
                isinstance(spec, dict)
                and spec.get("plugin") in RUN_FILE_PLUGINS
                and "dir" not in spec
            ):
                spec["dir"] = os.fspath(root)
    return out


def rewrite_reports(instances: Mapping[str, Any]) -> list[Path]:
    """After ``stop()``: rewrite each report instance's last report; return the paths.

    ``instances`` is ``rigger.instances``. By then the pool has drained, so every archive
    is made or failed and the report says so.
    """
    written = []
    for instance in instances.values():
        if isinstance(instance.obj, ReportPlugin):
            path = instance.obj.rewrite()
            if path is not None:
                written.append(path)
    return written
