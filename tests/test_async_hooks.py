"""async def callables: stages in order, concurrency within a stage, the I/O lane."""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rigger_mp import PluginError, Rigger, RiggerBasePlugin
from rigger_mp.coroutine_thread import THREAD_NAME
from rigger_mp.journal import JournalStore
from rigger_mp.pool.interface import Failure, WorkItem
from rigger_mp.pool.io_lane import IoLane

WAIT = 30.0


def coroutine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == THREAD_NAME]


class Marks:
    """Start and end marks of callables, shared by the plugins of a test."""

    marks: ClassVar[list[str]] = []
    gate: ClassVar[asyncio.Event | None] = None
    started: ClassVar[int] = 0


@pytest.fixture(autouse=True)
def fresh_marks() -> Iterator[None]:
    Marks.marks, Marks.gate, Marks.started = [], None, 0
    yield


async def meet(name: str, count: int) -> None:
    """Mark the start, wait until ``count`` callables have started, mark the end. Run one
    after another instead of together, the first would wait for ever: bounded, it fails."""
    if Marks.gate is None:
        Marks.gate = asyncio.Event()
    Marks.marks.append(f"start {name}")
    Marks.started += 1
    if Marks.started == count:
        Marks.gate.set()
    await asyncio.wait_for(Marks.gate.wait(), WAIT)
    Marks.marks.append(f"end {name}")


class Three(RiggerBasePlugin):
    """Three async hooks of one stage, and a plain one beside them."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("go", self.go)

    async def go(self) -> tuple[dict[str, Any], dict[str, Any]]:
        await meet(self.ident, 3)
        return {f"local_{self.ident}": True}, {"seen": [self.ident]}


class Plain(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("go", self.go)

    def go(self) -> tuple[None, dict[str, Any]]:
        Marks.marks.append("plain hook")
        return None, {"seen": ["plain"]}


def test_async_hooks_of_one_stage_run_concurrently_and_merge_like_plain_ones() -> None:
    rigger = Rigger(
        {"plugins": {i: {"plugin": "three"} for i in ("a", "b", "c")} | {"p": {"plugin": "plain"}}}
    )
    rigger.register_plugin(Three, "three")
    rigger.register_plugin(Plain, "plain")
    with rigger:
        result = rigger.fire_hook("go").result(WAIT)
    starts_then_ends = [m.split()[0] for m in Marks.marks if m != "plain hook"]
    assert starts_then_ends == ["start"] * 3 + ["end"] * 3
    assert result["local_a"] and result["local_b"] and result["local_c"]
    assert sorted(result["seen"]) == ["a", "b", "c", "plain"]


def test_stages_keep_their_order_with_async_and_plain_callables_mixed() -> None:
    def mark(text: str) -> Any:
        async def async_one() -> None:
            Marks.marks.append(f"{text} async start")
            await asyncio.sleep(0)  # let the others run: the stage still ends as a whole
            Marks.marks.append(f"{text} async end")

        return async_one

    def plain(text: str) -> Any:
        def plain_one() -> None:
            Marks.marks.append(f"{text} plain")

        return plain_one

    rigger = Rigger({"plugins": {"p": {"plugin": "plain"}}})
    rigger.register_plugin(Plain, "plain")
    for ctype in ("pre", "post"):
        for n in range(2):
            rigger.register_hook_callback("go", ctype, mark(f"{ctype}{n}"))
        rigger.register_hook_callback("go", ctype, plain(ctype))
    with rigger:
        rigger.fire_hook("go").result(WAIT)
    stage_of = [m.split()[0].rstrip("01") for m in Marks.marks]
    assert stage_of == sorted(stage_of, key=["pre", "plain", "post"].index), Marks.marks
    assert len(Marks.marks) == 2 * 5 + 1


def test_a_failing_async_hook_fails_its_event_after_the_stage_ended() -> None:
    class Fails(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("go", self.go)

        async def go(self) -> None:
            raise ValueError("async boom")

    rigger = Rigger({"plugins": {"f": {"plugin": "fails"}, "p": {"plugin": "plain"}}})
    rigger.register_plugin(Fails, "fails")
    rigger.register_plugin(Plain, "plain")
    with rigger:
        with pytest.raises(ValueError, match="async boom") as info:
            rigger.fire_hook("go").result(WAIT)
        assert "plain hook" in Marks.marks  # the plain hook of that stage still ran
        notes = getattr(info.value, "__notes__", [])  # add_note: Python 3.11 and later
        assert any("during event 'go'" in note for note in notes) or not hasattr(
            info.value, "add_note"
        )
        assert rigger.fire_hook("go").exception(WAIT) is not None  # and the next runs


def test_no_coroutine_thread_without_an_async_callable() -> None:
    rigger = Rigger({"plugins": {"p": {"plugin": "plain"}}})
    rigger.register_plugin(Plain, "plain")
    with rigger:
        for _ in range(3):
            rigger.fire_hook("go").result(WAIT)
        assert coroutine_threads() == []


# -- the I/O lane -----------------------------------------------------------------------


class Lane(RiggerBasePlugin):
    """An I/O-lane hook that waits until the test releases it."""

    release: ClassVar[threading.Event] = threading.Event()

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("upload", self.upload, bg="io")

    async def upload(self, name: str) -> tuple[None, dict[str, Any]]:
        Marks.marks.append(f"start {name}")
        await asyncio.get_running_loop().run_in_executor(None, Lane.release.wait, WAIT)
        Marks.marks.append(f"end {name}")
        return None, {"uploaded": [name]}


@pytest.fixture
def lane_rigger() -> Iterator[Rigger]:
    Lane.release = threading.Event()
    rigger = Rigger({"plugins": {"lane": {"plugin": "lane"}}})
    rigger.register_plugin(Lane, "lane")
    yield rigger
    Lane.release.set()
    rigger.stop()


def test_an_io_lane_hook_does_not_hold_up_the_events_behind_it(lane_rigger: Rigger) -> None:
    with lane_rigger:
        first = lane_rigger.fire_hook("upload", name="one")
        assert first.result(WAIT)["name"] == "one"  # the event ended, its hook has not
        lane_rigger.fire_hook("upload", name="two").result(WAIT)
        assert lane_rigger.stats()["background"]["running"] == 2
        assert "uploaded" not in lane_rigger.global_data
        Lane.release.set()
        assert lane_rigger.wait_background(WAIT)
        assert sorted(lane_rigger.global_data["uploaded"]) == ["one", "two"]
        assert lane_rigger.stats()["background"]["done"] == 2


def test_stop_drains_the_lane() -> None:
    class Work(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("upload", self.upload, bg="io")

        async def upload(self) -> None:
            Marks.marks.append("start")
            await asyncio.sleep(0.3)  # the upload's own time on the wire
            Marks.marks.append("end")

    rigger = Rigger({"plugins": {"w": {"plugin": "work"}}})
    rigger.register_plugin(Work, "work")
    rigger.start()
    rigger.fire_hook("upload").result(WAIT)
    rigger.stop(WAIT)  # at once: the hook is still on the wire
    assert Marks.marks == ["start", "end"]
    assert rigger.stats()["background"]["done"] == 1
    assert coroutine_threads() == []


def test_a_lane_hook_past_io_timeout_is_cancelled_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Slow(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("upload", self.upload, bg="io")

        async def upload(self) -> None:
            await asyncio.Event().wait()  # never set: only the time-out ends it

    rigger = Rigger({"io_timeout": 0.2, "plugins": {"s": {"plugin": "slow"}}})
    rigger.register_plugin(Slow, "slow")
    with rigger:
        rigger.fire_hook("upload").result(WAIT)
        assert rigger.wait_background(WAIT)
        stats = rigger.stats()["background"]
    assert stats["failed"] == 1 and stats["done"] == 0
    assert "did not end within io_timeout (0.2 s) and was cancelled" in caplog.text


def test_a_failing_lane_hook_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    class Fails(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("upload", self.upload, bg="io")

        async def upload(self) -> None:
            raise ConnectionError("dashboard down")

    rigger = Rigger({"plugins": {"f": {"plugin": "fails"}}})
    rigger.register_plugin(Fails, "fails")
    with rigger:
        rigger.fire_hook("upload").result(WAIT)
        assert rigger.wait_background(WAIT)
        assert rigger.stats()["background"]["failed"] == 1
        [failure] = rigger.stats()["recent_failures"]
    assert "ConnectionError: dashboard down" in failure["traceback"]
    assert "backgrounded hook 'upload' of instance 'f' failed (the main process)" in caplog.text


def test_with_a_journal_an_event_is_done_only_once_its_lane_hooks_are(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"

    def run(release: bool) -> None:
        Lane.release = threading.Event()
        rigger = Rigger({"journal": str(journal), "plugins": {"lane": {"plugin": "lane"}}})
        rigger.register_plugin(Lane, "lane")
        with rigger:
            rigger.fire_hook("upload", name="x").result(WAIT)
            if release:
                Lane.release.set()
                assert rigger.wait_background(WAIT)
        if not release:  # stop() abandoned the hook: its event stays pending
            Lane.release.set()

    Lane_stop = Rigger.stop

    def stop_at_once(self: Rigger, timeout: float | None = None) -> None:
        Lane_stop(self, 0.2 if timeout is None else timeout)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Rigger, "stop", stop_at_once)
        run(release=False)
    store = JournalStore.open(journal)
    try:
        assert [e.hook for e in store.pending()] == ["upload"]
    finally:
        store.close()
    run(release=True)  # the replay runs it again, and this time its hook ends
    store = JournalStore.open(journal)
    try:
        assert store.pending() == []
    finally:
        store.close()


def test_where_a_hook_may_run_is_checked_when_it_is_bound() -> None:
    class Wrong(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            pass

        def plain(self) -> None:
            pass

        async def coro(self) -> None:
            pass

    plugin = Wrong("w", {})
    with pytest.raises(TypeError, match="runs an async def hook; this one is not"):
        plugin.register_plugin_hook("e", plugin.plain, bg="io")
    with pytest.raises(TypeError, match="cannot run in the worker pool"):
        plugin.register_plugin_hook("e", plugin.coro, bg=True)
    with pytest.raises(TypeError, match="bg must be False, True or 'io'"):
        plugin.register_plugin_hook("e", plugin.coro, bg="threads")  # type: ignore[arg-type]


def test_background_io_needs_async_hooks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    rigger = Rigger({"plugins": {"p": {"plugin": "plain", "background": "io"}}})
    rigger.register_plugin(Plain, "plain")
    with pytest.raises(PluginError, match="has background: io, which runs async def hooks"):
        rigger.start()


class Poster(RiggerBasePlugin):
    """An I/O-lane hook that POSTs to the test's server."""

    url: ClassVar[str] = ""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("post", self.post, bg="io")

    async def post(self, i: int) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.post(Poster.url, json=i) as r:
            assert r.status == 200
            await r.read()


class CountingServer:
    """A real aiohttp server on loopback, in a thread of its own, that counts the
    requests in flight: each waits until ``peak`` of them are in, so a lane that let more
    in at once would be seen."""

    def __init__(self, peak: int) -> None:
        from aiohttp import web

        self.peak = peak
        self.in_flight = 0
        self.most = 0
        self.served = 0
        self.loop = asyncio.new_event_loop()
        self.full: asyncio.Event | None = None

        async def handle(request: web.Request) -> web.Response:
            assert self.full is not None
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.peak:
                self.full.set()
            await asyncio.wait_for(self.full.wait(), WAIT)
            self.in_flight -= 1
            self.served += 1
            return web.Response(text="ok")

        async def serve() -> int:
            self.full = asyncio.Event()
            app = web.Application()
            app.router.add_post("/", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return int(self.runner.addresses[0][1])

        self.thread = threading.Thread(target=self.loop.run_forever, name="test-http-server")
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(WAIT)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


def test_the_lane_never_has_more_than_io_concurrency_hooks_in_flight() -> None:
    pytest.importorskip("aiohttp", reason="needs the http extra: pip install 'rigger_mp[http]'")
    server = CountingServer(peak=4)
    try:
        Poster.url = f"http://127.0.0.1:{server.port}/"
        rigger = Rigger({"io_concurrency": 4, "plugins": {"p": {"plugin": "poster"}}})
        rigger.register_plugin(Poster, "poster")
        with rigger:
            tasks = [rigger.fire_hook("post", i=i) for i in range(20)]
            for task in tasks:
                task.result(WAIT)
            assert rigger.wait_background(WAIT)
            assert rigger.stats()["background"] == {
                "queued": 0,
                "running": 0,
                "done": 20,
                "failed": 0,
                "abandoned": 0,
            }
    finally:
        server.close()
    assert server.served == 20
    assert server.most == 4  # reached, and never passed


def test_systemexit_in_an_async_hook_fails_its_event_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Exits(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("go", self.go)
            self.register_plugin_hook("upload", self.upload, bg="io")

        async def go(self) -> None:
            raise SystemExit("hook exits")

        async def upload(self) -> None:
            raise KeyboardInterrupt

    rigger = Rigger({"plugins": {"e": {"plugin": "exits"}, "p": {"plugin": "plain"}}})
    rigger.register_plugin(Exits, "exits")
    rigger.register_plugin(Plain, "plain")
    with rigger:
        exc = rigger.fire_hook("go").exception(WAIT)
        assert isinstance(exc, RuntimeError) and isinstance(exc.__cause__, SystemExit)
        assert str(exc).endswith("Exits.go) raised SystemExit: hook exits")
        rigger.fire_hook("upload").result(WAIT)
        assert rigger.wait_background(WAIT)
        assert rigger.stats()["background"]["failed"] == 1
        assert isinstance(rigger.fire_hook("go").exception(WAIT), Exception)  # still runs
    assert "failed (the main process):" in caplog.text and "KeyboardInterrupt" in caplog.text


def test_check_configured_keeps_an_async_hook_async() -> None:
    class Conf(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("go", self.go)
            self.register_plugin_hook("upload", self.upload, bg="io")  # refused if not async

        @RiggerBasePlugin.check_configured
        async def go(self, item: str) -> tuple[None, dict[str, Any]]:
            await asyncio.sleep(0)
            return None, {"went": [item]}

        @RiggerBasePlugin.check_configured
        async def upload(self, item: str) -> tuple[None, dict[str, Any]]:
            await asyncio.sleep(0)
            return None, {"uploaded": [item]}

    rigger = Rigger({"plugins": {"c": {"plugin": "conf"}}})
    rigger.register_plugin(Conf, "conf")
    with rigger:
        for item in ("before", "after"):
            if item == "after":
                assert rigger.wait_background(WAIT)  # the lane hook ran unconfigured
                rigger.configure_plugin("c")
            rigger.fire_hook("go", item=item).result(WAIT)
            rigger.fire_hook("upload", item=item).result(WAIT)
        assert rigger.wait_background(WAIT)
        assert rigger.stats()["background"]["failed"] == 0
    assert rigger.global_data["went"] == ["after"]
    assert rigger.global_data["uploaded"] == ["after"]


class LateCallbacks:
    """A coroutine thread as the real one may behave: a coroutine's future is already done
    when ``submit`` returns, its done callback not yet called (the loop's thread is about
    to call it)."""

    def __init__(self) -> None:
        self.later: list[Callable[[], None]] = []

    def submit(
        self, coroutine: Coroutine[Any, Any, Any], done: Callable[[Future[Any]], None]
    ) -> Future[Any]:
        coroutine.close()
        future: Future[Any] = Future()
        future.set_result(None)
        self.later.append(lambda: done(future))
        return future


class Reports:
    """A ResultSink that keeps what it is told."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, list[int], int]] = []

    def completed(
        self,
        count: int,
        updates: list[Mapping[str, Any]],
        failures: list[Failure],
        ids: Sequence[int] = (),
    ) -> None:
        self.reports.append((count, list(ids), len(failures)))

    def fire(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        raise AssertionError("not expected")


def test_a_lane_hook_that_ends_as_stop_begins_is_reported_not_lost() -> None:
    coroutines = LateCallbacks()
    lane = IoLane({}, coroutines, concurrency=2, timeout=WAIT)  # type: ignore[arg-type]
    sink = Reports()
    lane.start(sink)
    lane.submit([WorkItem(1, "i", "upload", pickle.dumps({}))])
    # It had ended, so stop() does not hand it back as abandoned: its end is reported.
    assert lane.stop(abandon=True, timeout=0) == []
    for call in coroutines.later:
        call()
    assert sink.reports == [(1, [1], 0)]


def test_background_io_with_a_plain_hook_gives_advice_that_works() -> None:
    class Mixed(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("go", self.go, bg=False)  # bg=False is the default

        def go(self) -> None:
            pass

    rigger = Rigger({"plugins": {"m": {"plugin": "mixed", "background": "io"}}})
    rigger.register_plugin(Mixed, "mixed")
    with pytest.raises(PluginError, match="has background: io") as info:
        rigger.start()
    # bg=False does not take a hook out of its instance's background: not advised.
    assert "bg=False" not in str(info.value)
    assert "bg='io'" in str(info.value)
