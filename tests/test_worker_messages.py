"""The pool's messages survive the trip between processes as the named types they are."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

from rigger_mp.pool.interface import WorkItem
from rigger_mp.pool.worker_messages import Batch, Done, Fire, ItemResult, Retire, Stop


def trip(obj: object) -> object:
    """What the other process reads: ``multiprocessing`` pickles with ForkingPickler."""
    return pickle.loads(ForkingPickler.dumps(obj))


def test_a_batch_arrives_as_named_work_items() -> None:
    batch = Batch(7, [WorkItem(n, "p", "pack", pickle.dumps({"n": n})) for n in range(3)])
    back = trip(batch)
    assert isinstance(back, Batch) and back == batch
    assert all(type(item) is WorkItem for item in back.items)
    assert back.items[2].work_id == 2 and pickle.loads(back.items[2].payload) == {"n": 2}


def test_a_done_arrives_with_named_results() -> None:
    done = Done(7, 3, 0.25, [ItemResult(1, {"k": [1]}, None), ItemResult(2, None, "tb")], 1.5)
    back = trip(done)
    assert isinstance(back, Done) and back == done
    assert [type(r) for r in back.results] == [ItemResult, ItemResult]
    assert back.results[1].error == "tb" and back.cpu_seconds == 1.5


def test_the_other_messages_keep_their_type() -> None:
    for msg in (Stop(), Fire("ev", {"a": 1}), Retire(3, 4, "why")):
        back = trip(msg)
        assert type(back) is type(msg) and back == msg
