"""The event thread: admission, the queue, the thread that runs events, the drain at stop.

::

    fire() ─────────┐  admission, under    +-------------+        event thread
    accept_batch() ─┼─ the lock: counted, ─▶| Task | Task | ─get─▶ Task:  plan (cached) →
    call_soon() ────┘  given a tid, queued  | _Call | ... |        pre → background submit →
                       (jobs: no admission) +-------------+        foreground → post
                                                                   _Call: run the job
                                                                   _STOP: end when empty

One :class:`Phase` says what the event thread takes and does; :meth:`EventThread.begin_start`,
:meth:`~EventThread.run`, :meth:`~EventThread.begin_stop`, :meth:`~EventThread.close_intake`,
:meth:`~EventThread.drain` and :meth:`~EventThread.finish` are its transitions. The facade
(:class:`~rigger_mp.core.rigger.Rigger`) orders them with the pool and the server.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from .. import printable
from ..deadline import Deadline
from ..errors import RiggerError, ShuttingDown, WouldDeadlock
from ..lifecycle import move
from ..naming import describe
from .event_runner import EventRunner, ExcInfo, annotate
from .failures import FailureRing
from .plans import MAX_CACHED_PLANS, Backgrounded, Plan, UnboundNames, new_plan
from .port import EventSpec
from .task import Task
from .timings import Timings

if TYPE_CHECKING:
    from .journaling import Journaling

logger = printable.logger("rigger_mp")

Submit = Callable[[tuple[Backgrounded, ...], dict[str, Any], str], Sequence[int]]
"""Where an event's backgrounded hooks go: ``(hooks, event locals, event name)``; the
work ids it submitted."""


class Phase(enum.Enum):
    """Where the event thread is in its life, and so what it accepts."""

    NEW = "new"
    """Made, not started: nothing is accepted."""
    STARTING = "starting"
    """``start()`` is building the instances: nothing is accepted yet."""
    RUNNING = "running"
    """Events are accepted from everyone."""
    STOPPING = "stopping"
    """``stop()`` began: the intake still queues what the TCP server acked before its
    fence, and threads that run events (hooks) may still fire; no one else may."""
    DRAINING = "stopping (draining)"
    """The intake has passed the fence: only threads that run events may still fire."""
    ABANDONING = "stopping (abandoning)"
    """``stop()`` timed out with an event running: queued events fail with ShuttingDown."""
    STOPPED = "stopped"
    """The event thread has ended, or been left to end once its hook returns."""


_EDGES: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.NEW: frozenset({Phase.STARTING}),
    Phase.STARTING: frozenset({Phase.NEW, Phase.RUNNING}),
    Phase.RUNNING: frozenset({Phase.STOPPING}),
    Phase.STOPPING: frozenset({Phase.DRAINING}),
    Phase.DRAINING: frozenset({Phase.ABANDONING, Phase.STOPPED}),
    Phase.ABANDONING: frozenset({Phase.STOPPED}),
}
_STOP_PHASES: Final = frozenset({Phase.STOPPING, Phase.DRAINING, Phase.ABANDONING})
_STOP: Final = object()
MAX_HOOK_COUNTERS: Final = 256
"""Event names counted one by one in :meth:`EventThread.hook_counters`; events of names
beyond these (a client may invent any number) are counted under :data:`OTHER_HOOKS`."""
OTHER_HOOKS: Final = "(other)"


class _Call:
    """An internal job for the event thread, queued in order with the events."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[[], None]) -> None:
        self.func = func


class EventThread:
    """The queue and the one thread that runs its events, in the order they were accepted.

    ``planner`` works out a :class:`Plan` for an event name (cached here until
    :meth:`forget_plans`, at most :attr:`max_cached_plans` of them, and only for names
    something is bound to); ``report_failure`` takes failures no waiter sees.
    """

    max_cached_plans: int = MAX_CACHED_PLANS

    def __init__(
        self, planner: Callable[[str], Plan], report_failure: Callable[[ExcInfo], None]
    ) -> None:
        self._planner = planner
        self._report_failure = report_failure
        self._phase = Phase.NEW
        self._lock = threading.Lock()  # guards the phase and the accepted count
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._runners: set[int] = set()
        self._thread: threading.Thread | None = None
        self._events: EventRunner | None = None
        self._submit: Submit | None = None
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._accepted = 0
        self._done = 0
        self._failed = 0
        self._abandoned = 0
        # name -> [accepted, done, failed, abandoned]; entries are made under the lock.
        self._by_hook: dict[str, list[int]] = {}
        self.failures = FailureRing()
        self.timings = Timings()
        self._ran = self.timings.ran  # bound once: it runs once per event
        self._started_at: float | None = None
        self._started_wall: float | None = None
        self._stopped_at: float | None = None
        self._stopped = threading.Event()
        # Given by run() with a journal: fires commit first, ended events are marked.
        self._journal: Journaling | None = None
        self._tid_prefix = ""  # before each tid; with a journal its boot number (never reused)
        self._unbound = UnboundNames()  # names nothing binds, logged once each

    @property
    def phase(self) -> Phase:
        """The phase now."""
        return self._phase

    # -- admission ------------------------------------------------------------------------

    def _admits(self, intake: bool) -> bool:
        """Whether events from this caller are accepted now (called under the lock).

        While running, from everyone. Once a stop began: the intake's batches until it
        has passed the server's fence, and fires from threads that run events (a hook's
        fires run in the drain, like the event that fired them).
        """
        phase = self._phase
        if phase is Phase.RUNNING:
            return True
        if intake:
            return phase is Phase.STOPPING
        return phase in _STOP_PHASES and threading.get_ident() in self._runners

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> Task:
        """Accept one event (``kwargs`` become its locals) and queue it; else ShuttingDown."""
        if not isinstance(hook_name, str):
            raise TypeError(f"hook_name must be a string, not {type(hook_name).__name__}")
        with self._lock:
            if self._phase is not Phase.RUNNING and not self._admits(intake=False):
                raise ShuttingDown(
                    f"fire_hook({hook_name!r}): the dispatcher is {self._phase.value}"
                )
            self._accepted += 1
            # _hook()'s cache hit inline, as is _counts_of()'s below: once per event
            (self._by_hook.get(hook_name) or self._hook(hook_name))[0] += 1
            task = Task(self._tid_prefix + str(self._accepted), hook_name, kwargs, self._runners)
            if self._journal is None:
                self._queue.put(task)
                return task
        self._journaled([task], [(hook_name, kwargs)])
        return task

    def fire_many(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Task]:
        """Accept ``(hook_name, kwargs)`` events in order, as :meth:`fire` would each; with
        a journal, all in one commit. All or nothing: else ShuttingDown (or the commit's
        error) and none is queued."""
        specs = [(hook_name, dict(kwargs)) for hook_name, kwargs in events]
        for hook_name, _ in specs:
            if not isinstance(hook_name, str):
                raise TypeError(f"hook_name must be a string, not {type(hook_name).__name__}")
        with self._lock:
            if not self._admits(intake=False):
                raise ShuttingDown(f"{len(specs)} event(s): the dispatcher is {self._phase.value}")
            tasks = []
            runners, first, prefix = self._runners, self._accepted + 1, self._tid_prefix
            for i, (hook_name, kwargs) in enumerate(specs):
                self._hook(hook_name)[0] += 1
                tasks.append(Task(prefix + str(first + i), hook_name, kwargs, runners))
            self._accepted += len(tasks)
            if self._journal is None:
                for task in tasks:
                    self._queue.put(task)
                return tasks
        self._journaled(tasks, specs)
        return tasks

    def _journaled(self, tasks: list[Task], specs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Commit ``tasks`` to the journal in one group (outside the lock: fires of other
        threads join it), then queue them.

        A failed commit fails the events (counted failed) and raises to the caller.
        """
        assert self._journal is not None
        try:
            if len(tasks) == 1:
                tasks[0].seq = self._journal.append(tasks[0].tid, *specs[0])
            else:
                rows = [(task.tid, *spec) for task, spec in zip(tasks, specs, strict=True)]
                for task, seq in zip(tasks, self._journal.append_many(rows), strict=True):
                    task.seq = seq
        except BaseException as exc:
            with self._lock:
                self._failed += len(tasks)
            for task in tasks:
                task.set_running_or_notify_cancel()
                task.set_exception(exc)
            raise
        with self._lock:
            gone = self._phase is Phase.STOPPED  # no event thread: they run at the next start
            if not gone:
                for task in tasks:
                    self._queue.put(task)
        if gone:
            for task in tasks:
                self._abandon(task)

    def accept_batch(
        self, events: Sequence[EventSpec], seqs: Sequence[int] | None = None
    ) -> list[Task]:
        """Queue events accepted (tids given) elsewhere, in order: all, or ShuttingDown.

        ``seqs``: the events' journal seqs, when they were committed to the journal.
        """
        with self._lock:
            if not self._admits(intake=True):
                raise ShuttingDown(f"{len(events)} event(s): the dispatcher is {self._phase.value}")
            runners, put = self._runners, self._queue.put
            by_hook, new_hook = self._by_hook, self._hook
            tasks = []
            for tid, hook_name, kwargs in events:
                (by_hook.get(hook_name) or new_hook(hook_name))[0] += 1
                task = Task(tid, hook_name, kwargs, runners)
                tasks.append(task)
            if seqs is not None:
                for task, seq in zip(tasks, seqs, strict=True):
                    task.seq = seq
            for task in tasks:
                put(task)
            self._accepted += len(tasks)
        return tasks

    def _hook(self, hook_name: str) -> list[int]:
        """The counters of ``hook_name`` (called under the lock): made on its first event."""
        counts = self._by_hook.get(hook_name)
        if counts is None:
            if len(self._by_hook) >= MAX_HOOK_COUNTERS:
                hook_name = OTHER_HOOKS
            counts = self._by_hook.setdefault(hook_name, [0, 0, 0, 0])
        return counts

    def _counts_of(self, hook_name: str) -> list[int]:
        """The counters an accepted event of ``hook_name`` was counted in."""
        return self._by_hook.get(hook_name) or self._by_hook[OTHER_HOOKS]

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` on the event thread after what is queued now (in any phase)."""
        self._queue.put(_Call(func))

    # -- what the port reports ------------------------------------------------------------

    def backlog(self) -> int:
        """Events and jobs queued and not yet taken."""
        return self._queue.qsize()

    def accepted_count(self) -> int:
        """Events accepted since start, from every source."""
        return self._accepted

    def on_event_thread(self) -> bool:
        """Whether the calling thread runs events (a wait on an event would deadlock)."""
        return threading.get_ident() in self._runners

    def adopt_thread(self) -> None:
        """Treat the calling thread as one that runs events."""
        self._runners.add(threading.get_ident())

    def events_running(self) -> bool:
        """Whether the event thread is alive to run queued jobs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def counters(self) -> dict[str, int]:
        """Events accepted, done, failed, abandoned, in flight (accepted and not yet ended:
        queued or running) and queued now (events and internal jobs).

        The ended counts are read before the accepted one: an event is accepted before
        it ends, so ``in_flight`` is never negative and the four outcomes sum to
        ``accepted``."""
        done, failed, abandoned = self._done, self._failed, self._abandoned
        accepted = self._accepted
        return {
            "accepted": accepted,
            "done": done,
            "failed": failed,
            "abandoned": abandoned,
            "in_flight": accepted - done - failed - abandoned,
            "queued": self._queue.qsize(),
        }

    def hook_counters(self) -> dict[str, dict[str, int]]:
        """Events accepted, done, failed and abandoned by event name (see MAX_HOOK_COUNTERS)."""
        with self._lock:
            items = [(name, tuple(counts)) for name, counts in self._by_hook.items()]
        keys = ("accepted", "done", "failed", "abandoned")
        return {name: dict(zip(keys, counts, strict=True)) for name, counts in items}

    def uptime(self) -> float:
        """Seconds from :meth:`run` to :meth:`finish` (to now while running); 0 before."""
        if self._started_at is None:
            return 0.0
        end = time.monotonic() if self._stopped_at is None else self._stopped_at
        return end - self._started_at

    def start_time(self) -> float | None:
        """When :meth:`run` started the event thread, in seconds since the epoch; None before."""
        return self._started_wall

    def forget_plans(self) -> None:
        """Drop the cached plans: a binding changed."""
        self._plans = OrderedDict()

    def cached_plans(self) -> int:
        """How many plans are cached now."""
        return len(self._plans)

    def cached_plan_names(self) -> list[str]:
        """The event names whose plans are cached now, least recently used first."""
        return list(self._plans)

    # -- transitions ----------------------------------------------------------------------

    def _move(self, to: Phase) -> None:
        """Change phase along :data:`_EDGES` (called under the lock)."""
        self._phase = move(_EDGES, self._phase, to)

    def begin_start(self) -> None:
        """NEW → STARTING (nobody fires until running); RiggerError in any other phase."""
        with self._lock:
            if self._phase is not Phase.NEW:
                raise RiggerError(f"start(): this Rigger is already {self._phase.value}")
            self._move(Phase.STARTING)

    def start_failed(self) -> None:
        """STARTING → NEW: ``start()`` raised, it may be called again."""
        with self._lock:
            self._move(Phase.NEW)

    def run(
        self,
        events: EventRunner,
        submit: Submit,
        journal: Journaling | None = None,
        first: tuple[Sequence[EventSpec], Sequence[int]] = ((), ()),
    ) -> None:
        """STARTING → RUNNING: start the event thread on ``events``; hooks to background go
        to ``submit``. With a ``journal``, fires commit to it before they are queued and
        ended events are marked in it; ``first``: journaled events (specs, seqs) to run
        before any other."""
        self._events, self._submit, self._journal = events, submit, journal
        self._tid_prefix = journal.tid_prefix if journal is not None else ""
        for (tid, hook_name, kwargs), seq in zip(*first, strict=True):
            task = Task(tid, hook_name, kwargs, self._runners)
            task.seq = seq
            self._hook(hook_name)[0] += 1  # counted by name like every accepted event
            self._queue.put(task)
            self._accepted += 1
        thread = threading.Thread(target=self._run_events, name="rigger_mp-events", daemon=True)
        thread.start()
        self._thread = thread
        with self._lock:
            self._move(Phase.RUNNING)
        self._started_at = time.monotonic()
        self._started_wall = time.time()

    def begin_stop(self, timeout: float | None) -> bool:
        """RUNNING → STOPPING: True for the caller that is to stop the thread.

        False when there is nothing to stop; a second caller while a stop runs waits
        (up to ``timeout``) for it to end, then gets False. A thread that runs events
        gets WouldDeadlock: the stop would wait on its own event.
        """
        with self._lock:
            phase = self._phase
            if threading.get_ident() in self._runners and (
                phase is Phase.RUNNING or phase in _STOP_PHASES
            ):
                raise WouldDeadlock("stop() called from a hook would wait on its own event")
            if phase is Phase.RUNNING:
                self._move(Phase.STOPPING)
                return True
        if phase in _STOP_PHASES:
            self._stopped.wait(timeout)
        return False

    def close_intake(self) -> None:
        """STOPPING → DRAINING: the intake has passed the server's fence; refuse its batches."""
        with self._lock:
            self._move(Phase.DRAINING)

    def drain(self, deadline: Deadline) -> bool:
        """Run what is queued, then end the event thread: True if it ended by ``deadline``.

        Otherwise DRAINING → ABANDONING: the queued events fail with ShuttingDown (logged,
        counted), and the thread ends once the hook it runs returns.
        """
        thread = self._thread
        assert thread is not None
        self._queue.put(_STOP)
        thread.join(deadline.left())
        if not thread.is_alive():
            return True
        with self._lock:
            self._move(Phase.ABANDONING)
        self._fail_queued()
        self._queue.put(_STOP)
        logger.error(
            "stop(): timed out after %ss with an event still running; %d queued event(s) abandoned",
            deadline.timeout,
            self._abandoned,
        )
        return False

    def finish(self) -> None:
        """→ STOPPED: the stop has ended; :meth:`wait_stopped` returns."""
        with self._lock:
            self._move(Phase.STOPPED)
        self._stopped_at = time.monotonic()
        self._runners.clear()  # their threads have ended: a reused thread id must not count
        self._stopped.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`finish` (False if ``timeout`` ran out first)."""
        return self._stopped.wait(timeout)

    # -- abandoning -----------------------------------------------------------------------

    def _fail_queued(self) -> None:
        """Fail the queued events; internal jobs go back on the queue and still run."""
        jobs: list[_Call] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if type(item) is Task:
                self._abandon(item)
            elif isinstance(item, _Call):
                jobs.append(item)
        for job in jobs:
            self._queue.put(job)

    def _abandon(self, task: Task) -> None:
        with self._lock:
            self._abandoned += 1
            self._counts_of(task.hook_name)[3] += 1
        if task.set_running_or_notify_cancel():
            task.set_exception(
                ShuttingDown(f"event {task.hook_name!r} (tid {task.tid}) abandoned at stop()")
            )

    # -- the event thread -----------------------------------------------------------------

    def _run_events(self) -> None:
        self.adopt_thread()
        get, put = self._queue.get, self._queue.put
        events, abandoning = self._events, Phase.ABANDONING
        assert events is not None
        while True:
            item = get()
            if type(item) is Task:
                if self._phase is abandoning:
                    self._abandon(item)
                elif item.set_running_or_notify_cancel():
                    self._run_event(events, item)
            elif item is _STOP:
                if self._queue.empty():
                    self._runners.discard(threading.get_ident())  # ids are reused
                    return
                put(_STOP)  # events fired by hooks while draining run first
            else:
                self._run_call(item)

    def _run_event(self, events: EventRunner, task: Task) -> None:
        hook_name, local = task.hook_name, task.local
        task.local = None
        assert local is not None
        started = perf_counter()
        work_ids: Sequence[int] = ()
        if task.seq is not None and self._journal is not None:
            self._journal.started(task.seq)
        try:
            plans = self._plans  # the cache hit inline: this runs once per event
            plan = plans.get(hook_name)
            if plan is None:
                plan = new_plan(
                    self._planner, plans, hook_name, self.max_cached_plans, self._unbound.warn
                )
            else:
                plans.move_to_end(hook_name)
            stage = events.stage_async if plan.aio else events.stage
            if plan.pre:
                stage(plan.pre, local, hook_name)
            if plan.background:
                assert self._submit is not None
                work_ids = self._submit(plan.background, local, hook_name)
            if plan.foreground:
                stage(plan.foreground, local, hook_name)
            if plan.post:
                stage(plan.post, local, hook_name)
            glob = events.global_data
            if glob:
                result = dict(glob)
                result.update(local)
            else:
                result = local
        except BaseException as exc:
            self._failed += 1
            self._counts_of(hook_name)[2] += 1
            self._ran(task.accepted_at, started, perf_counter())
            self.failures.add(hook_name, task.tid, exc)
            if not task.watched():
                self._unwatched_failure(task, exc)
            task.set_exception(exc)
        else:
            self._done += 1
            (self._by_hook.get(hook_name) or self._by_hook[OTHER_HOOKS])[1] += 1
            self._ran(task.accepted_at, started, perf_counter())
            task.set_result(result)
        if task.seq is not None and self._journal is not None:
            self._journal.ended(task.seq, work_ids)

    def _run_call(self, call: _Call) -> None:
        try:
            call.func()
        except Exception as exc:
            annotate(exc, f"rigger_mp: raised by internal job {describe(call.func)}")
            self._report_failure((type(exc), exc, exc.__traceback__))

    def _unwatched_failure(self, task: Task, exc: BaseException) -> None:
        """An event failed and no one waits on it: report it (logged by default), so that
        no accepted event fails unseen.

        Logged once, when it fails; a waiter that comes later still gets the exception.
        """
        note = f"rigger_mp: event {task.hook_name!r} (tid {task.tid}) failed while no one waited"
        annotate(exc, note)
        self._report_failure((type(exc), exc, exc.__traceback__))


def call_and_wait(events: EventThread, func: Callable[[], None]) -> None:
    """Run ``func`` on the event thread after what is queued now, and wait for it;
    in this thread when there is no event thread or this is one."""
    if not events.events_running() or events.on_event_thread():
        func()
        return
    done = threading.Event()

    def job() -> None:
        try:
            func()
        finally:
            done.set()

    events.call_soon(job)
    done.wait()
