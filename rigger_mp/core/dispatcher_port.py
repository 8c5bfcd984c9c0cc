"""The port of one started dispatcher: the event thread and the journal, as the pool side
and the TCP intake see them.

::

    Rigger.start() ──builds──▶ DispatcherPort(event thread, journal, host, report_failure)
                                 │ handed to Background (pool/) and ServerSupervisor,
                                 ▼ Intake (server/), who call nothing else of the dispatcher
      accept_batch ── EventThread.accept_batch, then Journaling.received (its last seq)
      server_gone ─── Journaling.undelivered ─▶ EventThread.accept_batch
      call_soon, backlog, accepted_count, on_event_thread, adopt_thread, events_running
                   ── the EventThread's
      report_failure ─ the Rigger's (recent failures, then handle_failure)
      global_data, fire_hook, stats, info, stop ── the Rigger's public API (``host``)

The Rigger hands this object out, the way pluggy hands ``_hookexec`` to its callers,
so that its own public API stays riggerlib's and the documented one. ``compat`` builds
a subclass of it that changes how the intake's batches are accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .. import printable
from ..errors import describe_error

if TYPE_CHECKING:
    from .event_runner import ExcInfo
    from .event_thread import EventThread
    from .journaling import Journaling
    from .port import EventSpec
    from .task import Task

logger = printable.logger("rigger_mp")


class Host(Protocol):
    """What the port hands on to the dispatcher's public API."""

    @property
    def global_data(self) -> dict[str, Any]:
        """The global namespace."""

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue one event, as a plugin would."""

    def stats(self) -> dict[str, Any]:
        """The dispatcher's counters."""

    def info(self) -> dict[str, Any]:
        """What a client may learn of the dispatcher."""

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop the dispatcher."""


class DispatcherPort:
    """The :class:`~rigger_mp.core.port.EventPort` of one started dispatcher."""

    def __init__(
        self,
        events: EventThread,
        journal: Journaling | None,
        host: Host,
        report_failure: Callable[[ExcInfo], None],
    ) -> None:
        self._events = events
        self._journal = journal
        self._host = host
        self.report_failure = report_failure
        """A failure no waiter will see: kept in the recent failures, then handed to
        ``handle_failure`` (logged by default)."""
        self.call_soon = events.call_soon
        self.backlog = events.backlog
        self.accepted_count = events.accepted_count
        self.on_event_thread = events.on_event_thread
        self.adopt_thread = events.adopt_thread
        self.events_running = events.events_running

    @property
    def global_data(self) -> dict[str, Any]:
        """The global namespace; only the event thread writes it."""
        return self._host.global_data

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue one event, as a plugin would (through the Rigger's ``fire_hook``)."""
        return self._host.fire_hook(hook_name, **kwargs)

    def stats(self) -> dict[str, Any]:
        """The dispatcher's counters (``Rigger.stats()``)."""
        return self._host.stats()

    def info(self) -> dict[str, Any]:
        """What a client may learn of the dispatcher (``Rigger.info()``: the ``info`` op)."""
        return self._host.info()

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop the dispatcher (a TCP ``terminate``)."""
        self._host.stop(timeout)

    def accept_batch(
        self, events: Sequence[EventSpec], seqs: Sequence[int] | None = None
    ) -> list[Task]:
        """Queue ``(tid, hook_name, kwargs)`` events, accepted (tids given) elsewhere, in order.

        The TCP intake's entry point: one lock acquisition per batch instead of one per
        event. ``kwargs`` dicts become the events' locals as they are (not copied). Also
        taken during a stop, until the intake has passed the server's fence (see
        ``Rigger.stop``). All or nothing: else :class:`ShuttingDown` and none is queued.
        ``seqs``: the events' journal seqs (the server process committed them).
        """
        tasks = self._events.accept_batch(events, seqs)
        if seqs and self._journal is not None:
            self._journal.received(seqs[-1])
        return tasks

    def server_gone(self) -> None:
        """A TCP server process died and the intake has read all it wrote (its successor
        not started yet): with a journal, queue the fires it committed and never passed on,
        so that they run now rather than at the next start. Logged, never raised."""
        journal = self._journal
        if journal is None:
            return
        try:
            specs, seqs = journal.undelivered()
            if specs:
                self._events.accept_batch(specs, seqs)
        except Exception as exc:
            logger.error(
                "the fires a dead server process left in the journal stay "
                "pending and run at the next start: %s",
                describe_error(exc),
            )
