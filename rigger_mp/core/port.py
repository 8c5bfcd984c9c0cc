"""The one interface through which the pool side and the TCP intake use the dispatcher.

:class:`~rigger_mp.pool.background.Background` and
:class:`~rigger_mp.server.supervisor.ServerSupervisor` are given an :class:`EventPort`
(:class:`~rigger_mp.core.dispatcher_port.DispatcherPort`, built by ``Rigger.start()``
from the event thread and the journal) and call nothing else of the dispatcher, the way
pluggy hands ``_hookexec`` to its callers instead of itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .event_runner import ExcInfo
    from .task import Task

EventSpec = tuple[str, str, dict[str, Any]]
"""``(tid, hook_name, kwargs)`` of an event accepted elsewhere (its tid given there)."""


class EventPort(Protocol):
    """What the pool side and the intake may ask of the dispatcher."""

    @property
    def global_data(self) -> dict[str, Any]:
        """The global namespace; only the event thread writes it."""

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Task:
        """Queue one event, as a plugin would."""

    def accept_batch(
        self, events: Sequence[EventSpec], seqs: Sequence[int] | None = None
    ) -> list[Task]:
        """Queue events accepted elsewhere, in order, all or none (else ShuttingDown);
        ``seqs``: their journal seqs, when the journal holds them."""

    def server_gone(self) -> None:
        """A TCP server process died and all it wrote has been read, before the next one
        starts: queue what it committed to the journal and never passed on."""

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the event thread after what is queued now."""

    def backlog(self) -> int:
        """Events and jobs queued for the event thread and not yet taken."""

    def accepted_count(self) -> int:
        """Events accepted since start, from every source."""

    def report_failure(self, exc_info: ExcInfo) -> None:
        """A failure no waiter will see: hand it to ``handle_failure`` (logged)."""

    def on_event_thread(self) -> bool:
        """Whether the calling thread runs events (the event thread, a hook's thread, or an
        adopted one): a wait on an event from it would deadlock."""

    def adopt_thread(self) -> None:
        """Treat the calling thread as one that runs events: its fires are still accepted
        while the dispatcher drains, and its waits on events raise WouldDeadlock."""

    def events_running(self) -> bool:
        """Whether the event thread is alive to run queued jobs."""

    def stats(self) -> dict[str, Any]:
        """The dispatcher's counters (``Rigger.stats()``)."""

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop the dispatcher (a TCP ``terminate``)."""
