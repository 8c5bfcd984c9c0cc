"""The journal behind a real server process (issue #13): a full disk, the file's size, and
what a server process that dies leaves committed.

The server process commits the TCP fires and the main process marks them done and
checkpoints: these tests run both, over a real socket, as ``rigger-mp serve`` does.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import RiggerBasePlugin
from rigger_mp import protocol as proto
from rigger_mp.client import RemoteError, RiggerClient
from rigger_mp.core.rigger import Rigger
from rigger_mp.journal import FIRE_LINE, MARSHAL, JournalStore, encode
from rigger_mp.journal.fire_ids import TRIM_EVERY
from rigger_mp.journal.store import WAL_LIMIT
from rigger_mp.protocol import DEDUP_WINDOW
from rigger_mp.server.intake import MAX_BACKLOG
from tests._disk import fill
from tests._tcp import instance, server_pid
from tests.conftest import Dispatchers


class Sizes(RiggerBasePlugin):
    """``ev(x)`` records ``x``; every 1,000th event, the journal's bytes on disk."""

    def plugin_initialize(self) -> None:
        self.seen: list[int] = []
        self.replays: list[bool] = []
        self.sizes: list[int] = []
        self.last = threading.Event()  # set by the event with x == -1
        self.register_plugin_hook("ev", self.ev)

    def ev(self, x: int, pad: str = "", rigger_replay: bool = False) -> None:
        self.seen.append(x)
        self.replays.append(rigger_replay)
        if x == -1:
            self.last.set()
        if x % 1000 == 0:
            path = str(self.data["journal"])
            self.sizes.append(sum(_size(path + end) for end in ("", "-wal")))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def serve(dispatchers: Dispatchers, journal: Path) -> Rigger:
    config = {
        "journal": str(journal),
        "server_enabled": True,
        "server_port": 0,
        "plugins": {"s": {"plugin": "sizes", "journal": str(journal)}},
    }
    return dispatchers.start(config, {"sizes": Sizes})


def sizes(rigger: Rigger) -> Sizes:
    return instance(rigger, "s", Sizes)


def test_a_full_disk_answers_journal_failed_and_those_fires_never_run(
    tiny_disk: Path, dispatchers: Dispatchers
) -> None:
    rigger = serve(dispatchers, tiny_disk / "j.db")
    assert rigger.server_port is not None
    client = RiggerClient("127.0.0.1", rigger.server_port)
    refused: list[Any] = []
    try:
        client.fire_hook("ev", x=1, grab_result=True)
        fill(tiny_disk)
        for x in range(2, 40):  # until a commit needs a page the disk does not have
            try:
                client.fire_hook("ev", x=x, pad="p" * 4000)
            except RemoteError as exc:
                refused.append((x, exc.code, str(exc)))
                break
        (tiny_disk / "filler").unlink()
        client.fire_hook("ev", x=100, grab_result=True)  # room again: accepted and run
        stats = client.stats()["server"]["process"]["journal"]
    finally:
        client.close()
        rigger.stop()
    assert len(refused) == 1, "the disk never filled"
    x, code, text = refused[0]
    assert code == proto.JOURNAL_FAILED and str(tiny_disk / "j.db") in text
    seen = sizes(rigger).seen
    assert x not in seen and seen[0] == 1 and seen[-1] == 100
    assert seen == [1, *range(2, x), 100]  # every fire that heard ok ran, in order
    assert stats["failed_fires"] == 1 and stats["failed_commits"] >= 1


def test_tcp_traffic_leaves_the_journal_the_size_of_what_is_pending(
    tmp_path: Path, dispatchers: Dispatchers
) -> None:
    """~44 MB of events through the server process's commits and the main process's done
    marks and checkpoints: the file and its WAL stay within what can be pending (without
    the main process's checkpoints the WAL reached 170 MB), and at rest hold no event,
    only the fire ids of the dedup window (the client gives every fire one)."""
    journal = tmp_path / "j.db"
    rigger = serve(dispatchers, journal)
    assert rigger.server_port is not None
    client = RiggerClient("127.0.0.1", rigger.server_port)
    pad = "p" * 180
    events = 200_000
    try:
        for start in range(0, events, 10_000):
            client.fire_many(("ev", {"x": x, "pad": pad}) for x in range(start, start + 10_000))
        client.fire_hook("ev", x=events, grab_result=True)  # runs after all of them
    finally:
        client.close()
        rigger.stop()
    plugin = sizes(rigger)
    assert len(plugin.seen) == events + 1
    passed = events * (len(pad) + 40)
    assert passed > 40 * 1024 * 1024
    assert len(plugin.sizes) == events // 1000 + 1
    # Pending at most: the main process's backlog (it stops reading beyond it) and what
    # the pipe holds, ~300 bytes a row on disk; plus a WAL up to its checkpoint, twice.
    bound = MAX_BACKLOG * 300 + 2 * WAL_LIMIT
    assert passed > 1.5 * bound
    assert max(plugin.sizes) < bound, plugin.sizes
    at_rest = _size(str(journal)) + _size(f"{journal}-wal")
    store = JournalStore.open(journal)
    try:
        kept = len(store.recent_ids(events))
        assert store.counts()[0] == 0
    finally:
        store.close()
    assert DEDUP_WINDOW <= kept <= DEDUP_WINDOW + TRIM_EVERY  # the window's, cut back
    assert at_rest < 256 * 1024 + kept * 64  # no event; ~50 bytes an id on disk



def test_fires_a_dead_server_committed_and_never_passed_on_run_after_its_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dispatchers: Dispatchers
) -> None:
    """A server process whose pipe was full held committed fires it had not yet written
    into it (nor acked). Three such rows are committed here through a second connection,
    as the server process commits them; then the server process is SIGKILLed. The main
    process queues them, in order and once, before its successor starts: they do not wait
    for the next start. One that does not decode is logged and left pending; delivered
    fires and an in-process row are left alone."""
    journal = tmp_path / "j.db"
    rigger = serve(dispatchers, journal)
    assert rigger.server_port is not None
    client = RiggerClient("127.0.0.1", rigger.server_port)
    side = JournalStore.open(journal, owner=False, checkpoints=False)
    try:
        client.fire_hook("ev", x=1, grab_result=True)  # delivered: never again
        three = [b'{"hook_name":"ev","data":{"x":2}}', b"{not json", b'{"data":{"x":-1}}']
        side.commit([(f"tcp1-{97 + i}", "ev", FIRE_LINE, line) for i, line in enumerate(three)])
        side.commit([("77", "ev", *encode("ev", {"x": 3}))])  # an in-process row: not the server's
        pid = server_pid(rigger)
        os.kill(pid, signal.SIGKILL)
        assert sizes(rigger).last.wait(30), "the undelivered fires did not run"
        client.close()
        client = RiggerClient("127.0.0.1", rigger.server_port)
        client.fire_hook("ev", x=4, grab_result=True)  # its successor serves
        assert server_pid(rigger) != pid
    finally:
        side.close()
        client.close()
        rigger.stop()
    plugin = sizes(rigger)
    assert plugin.seen == [1, 2, -1, 4] and not any(plugin.replays)
    assert "event tcp1-98 ('ev', seq 3) cannot be decoded, left pending" in caplog.text
    assert "died with 3 fire(s) committed and not yet passed on" in caplog.text
    left = JournalStore.open(journal)
    try:
        assert [(e.tid, e.fmt) for e in left.pending()] == [("tcp1-98", FIRE_LINE), ("77", MARSHAL)]
    finally:
        left.close()
