"""The event thread on its own: phases, their moves, and who is admitted in each."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator

import pytest

from rigger_mp import RiggerError, ShuttingDown
from rigger_mp.core.event_runner import EventRunner, ExcInfo
from rigger_mp.core.event_thread import EventThread, Phase
from rigger_mp.core.plans import Plan
from rigger_mp.deadline import Deadline
from rigger_mp.lifecycle import move
from tests.conftest import rigger_threads

NO_PLAN = Plan((), (), (), ())


def no_failure(exc_info: ExcInfo) -> None:
    raise AssertionError(exc_info)


@pytest.fixture
def events() -> Iterator[EventThread]:
    """A running event thread with no hooks; drained and stopped afterwards, whatever its phase."""
    events = EventThread(lambda name: NO_PLAN, no_failure)
    events.begin_start()
    events.run(EventRunner({}, True, no_failure, None), lambda *args: ())
    yield events
    if events.phase is Phase.RUNNING:
        assert events.begin_stop(None)
    if events.phase is Phase.STOPPING:
        events.close_intake()
    if events.phase is Phase.DRAINING:
        assert events.drain(Deadline(None))
        events.finish()


def on_event_thread(events: EventThread, func: Callable[[], object]) -> BaseException | None:
    """Run ``func`` as a job on the event thread (as a hook would); what it raised."""
    raised: list[BaseException] = []
    done = threading.Event()

    def job() -> None:
        try:
            func()
        except BaseException as exc:
            raised.append(exc)
        finally:
            done.set()

    events.call_soon(job)
    assert done.wait(10)
    return raised[0] if raised else None


def test_move_follows_the_table_and_names_a_move_it_lacks() -> None:
    class Light(enum.Enum):
        OFF = 1
        ON = 2

    edges = {Light.OFF: {Light.ON}}
    assert move(edges, Light.OFF, Light.ON) is Light.ON
    with pytest.raises(RuntimeError, match="Light: no move from ON to OFF"):
        move(edges, Light.ON, Light.OFF)


def test_a_transition_out_of_order_raises_and_leaves_the_phase(events: EventThread) -> None:
    with pytest.raises(RuntimeError, match="no move from RUNNING to DRAINING"):
        events.close_intake()
    assert events.phase is Phase.RUNNING
    with pytest.raises(RiggerError, match="already running"):
        events.begin_start()


def test_a_failed_start_goes_back_to_new_and_may_start_again() -> None:
    events = EventThread(lambda name: NO_PLAN, no_failure)
    events.begin_start()
    with pytest.raises(ShuttingDown, match="starting"):
        events.fire("e", {})
    events.start_failed()
    assert events.phase is Phase.NEW
    events.begin_start()
    with pytest.raises(RiggerError, match="already starting"):
        events.begin_start()


def test_nothing_is_admitted_before_start() -> None:
    events = EventThread(lambda name: NO_PLAN, no_failure)
    with pytest.raises(ShuttingDown, match="new"):
        events.accept_batch([("t1", "ev", {})])
    with pytest.raises(ShuttingDown, match="new"):
        events.fire("ev", {})
    assert events.counters()["accepted"] == 0


def test_admission_in_each_stop_phase(events: EventThread) -> None:
    assert events.fire("e", {}).result(timeout=10) == {}
    assert events.begin_stop(None) is True
    assert events.phase is Phase.STOPPING
    # STOPPING: the intake's batches and a runner's fires; no other thread's fires.
    assert len(events.accept_batch([("x1", "e", {})])) == 1
    assert on_event_thread(events, lambda: events.fire("e", {})) is None
    with pytest.raises(ShuttingDown, match=r"fire_hook\('e'\): the dispatcher is stopping$"):
        events.fire("e", {})
    events.close_intake()
    # DRAINING: only a runner's fires.
    with pytest.raises(ShuttingDown, match=r"1 event\(s\): the dispatcher is stopping \(drain"):
        events.accept_batch([("x2", "e", {})])
    assert on_event_thread(events, lambda: events.fire("e", {})) is None
    with pytest.raises(ShuttingDown, match=r"is stopping \(draining\)"):
        events.fire("e", {})
    assert events.drain(Deadline(None))
    events.finish()
    assert events.counters() == {
        "accepted": 4,
        "done": 4,
        "failed": 0,
        "abandoned": 0,
        "in_flight": 0,
        "queued": 0,
    }
    with pytest.raises(ShuttingDown, match="stopped"):
        events.accept_batch([("x3", "e", {})])


def test_a_drain_that_times_out_abandons_the_queued_events(events: EventThread) -> None:
    gate = threading.Event()

    def hold() -> None:
        gate.wait()

    events.call_soon(hold)  # holds the event thread
    queued = [events.fire("e", {}) for _ in range(3)]
    assert events.begin_stop(None)
    events.close_intake()
    assert events.drain(Deadline(0)) is False
    assert events.phase is Phase.ABANDONING
    for task in queued:
        with pytest.raises(ShuttingDown, match="abandoned at stop"):
            task.result(timeout=10)
    gate.set()
    events.finish()
    assert events.counters()["abandoned"] == 3
    for thread in rigger_threads():
        thread.join(timeout=10)  # the event thread ends once its job returns


def test_an_ended_event_thread_no_longer_counts_as_one(events: EventThread) -> None:
    """Thread ids are reused: once the event thread ends, a new thread with its id must not
    be taken for it (its waits would raise WouldDeadlock)."""
    ident: list[int] = []
    assert on_event_thread(events, lambda: ident.append(threading.get_ident())) is None
    assert events.on_event_thread() is False
    assert events.begin_stop(None)
    events.close_intake()
    assert events.drain(Deadline(None))
    assert ident[0] not in events._runners  # the event thread let go of its id
    events.adopt_thread()  # an adopted thread (a pool's) is let go at the end of the stop
    events.finish()
    assert events.on_event_thread() is False
