"""The dispatcher's asyncio loop thread: started by the first coroutine, concurrent
within one call, stopped for good."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from rigger_mp.coroutine_thread import THREAD_NAME, CoroutineThread


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def test_nothing_starts_before_the_first_coroutine() -> None:
    runner = CoroutineThread()
    assert not runner.started and loop_threads() == []
    assert runner.stop(5)  # stopping what never started is fine
    with pytest.raises(RuntimeError, match="stopped"):
        runner.run_all([asyncio.sleep(0)])


def test_run_all_runs_the_coroutines_concurrently_and_keeps_their_order() -> None:
    runner = CoroutineThread()
    marks: list[str] = []
    started = 0
    all_started: asyncio.Event | None = None

    async def hook(name: str) -> str:
        nonlocal started, all_started
        if all_started is None:
            all_started = asyncio.Event()
        marks.append(f"start {name}")
        started += 1
        if started == 3:
            all_started.set()
        # Run one after the other, the first would wait here for ever: the bound fails it.
        await asyncio.wait_for(all_started.wait(), 30)
        marks.append(f"end {name}")
        return name.upper()

    try:
        assert runner.run_all([hook("a"), hook("b"), hook("c")]) == ["A", "B", "C"]
        assert [m.split()[0] for m in marks] == ["start"] * 3 + ["end"] * 3
        assert [t.name for t in loop_threads()] == [THREAD_NAME]
    finally:
        assert runner.stop(10)
    assert loop_threads() == []


def test_each_failure_comes_back_in_its_place() -> None:
    runner = CoroutineThread()

    async def fine() -> int:
        return 1

    async def boom() -> int:
        raise ValueError("boom")

    try:
        first, second, third = runner.run_all([fine(), boom(), fine()])
        assert first == 1 and third == 1
        assert isinstance(second, ValueError) and str(second) == "boom"
    finally:
        runner.stop(10)


def test_submit_returns_at_once_and_calls_done_when_the_coroutine_ends() -> None:
    runner = CoroutineThread()
    release = threading.Event()
    ended: list[object] = []
    finished = threading.Event()

    async def waits() -> str:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        return "done"

    def done(future: Future[str]) -> None:
        ended.append(future.result())
        finished.set()

    try:
        future = runner.submit(waits(), done)
        assert not future.done()  # submit did not wait for it
        release.set()
        assert finished.wait(30)
        assert ended == ["done"]
    finally:
        runner.stop(10)


def test_stop_cancels_what_still_runs() -> None:
    runner = CoroutineThread()
    cancelled = threading.Event()
    running = threading.Event()

    async def forever() -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner.submit(forever(), lambda _: None)
    assert running.wait(30)
    assert runner.stop(30)
    assert cancelled.is_set()
    assert loop_threads() == []


@pytest.mark.parametrize("escape", [SystemExit, KeyboardInterrupt])
def test_a_coroutine_that_raises_systemexit_does_not_end_the_loop(
    escape: type[BaseException],
) -> None:
    runner = CoroutineThread()

    async def exits() -> None:
        raise escape("from a hook")

    async def fine() -> int:
        await asyncio.sleep(0)
        return 1

    try:
        # The whole call comes back: before, the loop's thread died with the exception
        # and this future was never set.
        outcome, second = runner.start_all([exits(), fine()]).result(30)
        assert second == 1
        assert isinstance(outcome, escape) and str(outcome) == "from a hook"
        assert isinstance(runner.submit(exits(), lambda _: None).exception(30), escape)
        assert runner.run_all([fine()]) == [1]  # the loop still runs
        assert [t.name for t in loop_threads()] == [THREAD_NAME]
    finally:
        assert runner.stop(10)
