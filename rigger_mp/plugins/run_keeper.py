"""The open runs of one ``report`` or ``junit`` instance: fed, kept on disk, ended.

::

    an event of a run (event thread) ──▶ its state file (run_state)   kept for a restart
                                     ──▶ Runs.apply                   the run's state
                                     ──▶ the run's clock re-armed     run_clock
    the last session's finish_session ─┐
    run_timeout without an event ──────┴▶ Snapshot ──▶ done(snapshot): the plugin's writer
    the plugin starts                ──▶ the state files read back: open runs go on, a run
                                         whose files were being written is written again

The clock's thread never touches the runs: it hands the run's key to the event thread
(the dispatcher's ``call_soon``), where :meth:`Runs.idle` decides. Only an instance built
by the main process's dispatcher (one with ``call_soon``) keeps state files and a clock;
one built alone (a test, ``serve --check``) keeps its runs in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..core.plugin import ConfigKeys
from ..errors import PluginError
from .run_clock import IdleClock
from .run_state import DEFAULT_MAX_STATE_BYTES, StateFiles
from .run_timeout import run_timeout
from .runs import LIMIT_KEYS, Runs, Snapshot, limits_of, run_dir_name, run_key

RUN_EVENTS: Final = (
    "start_session",
    "collect_tests",
    "start_test",
    "finish_test",
    "finish_session",
)
"""The events of a run that the report and junit plugins bind."""
RUN_KEYS: Final[ConfigKeys] = {
    **LIMIT_KEYS,
    "run_timeout": (int, float),
    "max_state_bytes": int,
}
"""The config keys of the run state: the bounds, the timeout, the state files' size."""


class RunKeeper:
    """One instance's open runs; ``done`` gets each run's snapshot when it ends."""

    def __init__(
        self,
        label: str,
        instance: str,
        data: Mapping[str, Any],
        root: str,
        dispatcher: Any,
        done: Callable[[Snapshot], None],
    ) -> None:
        where = f"instance {instance!r} ({label})"
        self.runs = Runs(f"{label} {instance!r}", limits_of(data, where))
        self.run_timeout = run_timeout(data, where)
        max_state = data.get("max_state_bytes", DEFAULT_MAX_STATE_BYTES)
        if not isinstance(max_state, int) or isinstance(max_state, bool) or max_state < 0:
            raise PluginError(f"{where}: max_state_bytes must be an integer >= 0")
        self.done = done
        self._call_soon: Callable[[Callable[[], None]], None] | None = None
        self.state: StateFiles | None = None
        self.clock: IdleClock | None = None
        self._timed: set[str] = set()
        """Runs the clock times: a later event only moves the run's ``last_event``, which
        the event thread reads when the clock says the first deadline has come."""
        call_soon = getattr(dispatcher, "call_soon", None)
        if callable(call_soon):
            self._call_soon = call_soon
            if max_state:  # 0: no state files (a restart loses the open runs)
                self.state = StateFiles(root, instance, max_state)
            self.clock = IdleClock(f"{label}-{instance}", self._due)
            self.runs.on_drop = self._dropped

    def event(self, name: str, data: Mapping[str, Any]) -> None:
        """One event of a run, on the event thread."""
        key = run_key(data.get("run_id"))
        if name == "finish_session" and not self.runs.is_open(key):
            return  # the run ended already (Runs.finish_session): nothing to keep or time
        dir_name = run_dir_name(key)
        if self.state is not None and dir_name is not None:
            # What is null is not kept: it reads back as missing, the same to Runs.apply
            # (but for the location, whose default is "").
            kept = {k: v for k, v in data.items() if v is not None or k == "test_location"}
            self.state.append(dir_name, name, kept)
        snapshot = self.runs.apply(name, data)
        if snapshot is not None:
            self._ended(snapshot)
        elif self.clock is not None and key not in self._timed:
            self._timed.add(key)
            self.clock.arm(key, time.monotonic() + self.run_timeout)

    def written(self, snapshot: Snapshot) -> None:
        """The run's files are written (the writer's thread): its state file goes."""
        if self.state is not None and snapshot.dir_name is not None:
            self.state.remove(snapshot.dir_name)

    def reload(self) -> None:
        """Read back the runs a dispatcher before this one left open (or was writing)."""
        if self.state is None or self.clock is None:
            return  # nothing kept, nothing to read back
        for found in self.state.found():
            key = None
            for name, data in found.events:
                key = run_key(data.get("run_id"))
                snapshot = self.runs.apply(name, data)
                if snapshot is not None:  # the run had ended; its files are written now
                    (self.done if found.ended else self._ended)(snapshot)
            if key is None or key not in {r.run_id for r in self.runs.open_runs()}:
                continue
            quiet = found.quiet()
            if found.ended:  # its files were being written: its state is .writing already
                self.done(self.runs.finish(key, None, timed_out=True))
            elif quiet >= self.run_timeout:  # it went quiet while no dispatcher was here
                self._ended(self.runs.finish(key, None, timed_out=True))
            else:
                self._timed.add(key)
                self.clock.arm(key, time.monotonic() + self.run_timeout - quiet)

    def close(self) -> None:
        """Stop the clock and close the state files (open runs stay on disk)."""
        if self.clock is not None:
            self.clock.close()
        if self.state is not None:
            self.state.close()

    def _ended(self, snapshot: Snapshot) -> None:
        self._timed.discard(snapshot.run_id)
        if self.clock is not None:
            self.clock.forget(snapshot.run_id)
        if self.state is not None and snapshot.dir_name is not None:
            self.state.retire(snapshot.dir_name)
        self.done(snapshot)

    def _due(self, key: str) -> None:
        """The clock's thread: the run may be quiet; the event thread decides."""
        assert self._call_soon is not None
        self._call_soon(lambda: self._idle(key))

    def _idle(self, key: str) -> None:
        result = self.runs.idle(key, self.run_timeout)
        if isinstance(result, Snapshot):
            self._ended(result)
        elif result is not None and self.clock is not None:
            self.clock.arm(key, result)  # an event came since: its deadline is later
        else:
            self._timed.discard(key)

    def _dropped(self, key: str) -> None:
        self._timed.discard(key)
        if self.clock is not None:
            self.clock.forget(key)
        dir_name = run_dir_name(key)
        if self.state is not None and dir_name is not None:
            self.state.remove(dir_name, ended=False)
