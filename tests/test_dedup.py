"""Idempotent fires: a fire's ``id``, the server's dedup window, and the client's resends.

A fire whose id the server accepted within its last ``dedup_window`` ids is answered with
the first fire's tid and ``"duplicate": true``, and does not run again: over TCP, over
HTTP, within and across ``fire_many`` batches, and across a restart with a journal.
``RiggerClient`` resends a fire whose reply was lost to a connection the far end cut
(a proxy here, that forwards the fire and drops the connection instead of the reply).
"""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rigger_mp import protocol as proto
from rigger_mp.client import DuplicateFire, RiggerClient
from rigger_mp.server.dedup import DedupWindow
from tests._tcp import HOST, WAIT, Raw, counter, make_rigger, port_of
from tests.conftest import Dispatchers


def fire(hook_name: str, fire_id: Any, **flags: Any) -> dict[str, Any]:
    return {"hook_name": hook_name, "data": flags.pop("data", {}), "id": fire_id, **flags}


def server_counters(port: int) -> dict[str, Any]:
    """The server process's own counters (``stats`` over TCP)."""
    with RiggerClient(HOST, port, timeout=WAIT) as client:
        counters: dict[str, Any] = client.stats()["server"]["process"]
    return counters


def ran(rigger: Any, port: int) -> None:
    """Return once every event fired before (on any connection) has run: a fire waited
    for runs after them."""
    with RiggerClient(HOST, port, timeout=WAIT) as client:
        assert client.fire_hook("count", wait_for_task=True, c="last")


def test_a_resent_id_gets_the_first_tid_and_does_not_run_again(dispatchers: Dispatchers) -> None:
    rigger = dispatchers.add(make_rigger())
    port = port_of(rigger)
    with Raw(port) as raw:
        first = raw.request(fire("count", "a", data={"c": 1}))
        assert first["ok"] and "duplicate" not in first
        assert raw.request(fire("count", "a", data={"c": 1})) == {
            "ok": True,
            "tid": first["tid"],
            "duplicate": True,
        }
        other = raw.request(fire("count", "b", data={"c": 1}))
        assert other["tid"] != first["tid"]
    with Raw(port) as raw:  # another connection: the same window
        again = raw.request(fire("count", "a", data={"c": 1}, wait_for_task=True))
        assert again == {"ok": True, "tid": first["tid"], "duplicate": True}
    ran(rigger, port)
    assert counter(rigger).seen[(1, None)] == 2  # "a" once, "b" once
    process = server_counters(port)
    assert process["duplicates"] == 2 and process["dedup_ids"] == 3  # with ran()'s fire


def test_a_duplicate_in_the_same_read_is_answered_too(dispatchers: Dispatchers) -> None:
    rigger = dispatchers.add(make_rigger())
    with Raw(port_of(rigger)) as raw:
        line = proto.encode_message(fire("count", "x", data={"c": 2}))
        raw.send(line * 3)  # one read: the first is accepted, the two others are duplicates
        replies = [raw.reply() for _ in range(3)]
    assert [r.get("duplicate", False) for r in replies] == [False, True, True]
    assert len({r["tid"] for r in replies}) == 1
    ran(rigger, port_of(rigger))
    assert counter(rigger).seen[(2, None)] == 1


@pytest.mark.parametrize(
    "bad",
    [5, "", "x" * (proto.MAX_FIRE_ID + 1), "tab\there", "é"],
    ids=["number", "empty", "too-long", "control", "not-ascii"],
)
def test_a_bad_id_is_bad_id(dispatchers: Dispatchers, bad: Any) -> None:
    rigger = dispatchers.add(make_rigger())
    with Raw(port_of(rigger)) as raw:
        reply = raw.request(fire("count", bad, data={"c": 3}))
        assert reply["ok"] is False and reply["error"]["code"] == proto.BAD_ID, reply
        assert raw.request({"op": "ping"}) == {"ok": True}  # the connection goes on
    client = RiggerClient(HOST, port_of(rigger))
    with pytest.raises(ValueError, match="printable ASCII"):
        client.fire_hook("count", fire_id=str(bad) if bad != 5 else "", c=3)
    client.close()


def test_the_oldest_id_is_forgotten_past_the_window(dispatchers: Dispatchers) -> None:
    rigger = dispatchers.add(make_rigger(dedup_window=3))
    port = port_of(rigger)
    with RiggerClient(HOST, port) as client:
        tids = client.fire_many(
            [("count", {"c": 4, "i": i}) for i in range(4)], ids=["a", "b", "c", "d"]
        )
        # "a" is the oldest of four ids in a window of three: forgotten, so it runs again.
        events = [("count", {"c": 4, "i": 0}), ("count", {"c": 4, "i": 3})]
        again = client.fire_many(events, ids=["a", "d"])
        assert again[0] not in tids and again[1] == tids[3]
    ran(rigger, port)
    seen = counter(rigger).seen
    assert [seen[(4, i)] for i in range(4)] == [2, 1, 1, 1]


def test_the_window_keeps_its_size_and_a_forgotten_id_comes_back_once() -> None:
    window = DedupWindow(2)
    assert window.claim("a", "t1") is None
    assert window.claim("a", "t9") == "t1" and window.duplicates == 1
    window.forget(["a"])
    assert window.claim("a", "t2") is None  # a resend after a failed commit: kept anew
    assert window.claim("b", "t3") is None  # the old place of "a" leaves, not its new one
    assert (window.seen("a"), window.seen("b"), len(window)) == ("t2", "t3", 2)
    assert window.claim("c", "t4") is None
    assert (window.seen("a"), len(window)) == (None, 2)
    none = DedupWindow(0)
    assert none.claim("a", "t1") is None and none.claim("a", "t2") is None
    assert none.seen("a") is None and len(none) == 0


def test_fire_many_ids_dedup_within_and_across_batches(dispatchers: Dispatchers) -> None:
    rigger = dispatchers.add(make_rigger())
    port = port_of(rigger)
    with RiggerClient(HOST, port) as client:
        events = [("count", {"c": 5, "i": i}) for i in range(100)]
        ids = [f"run-{i}" for i in range(100)]
        first = client.fire_many(events, ids=ids)
        assert client.fire_many(events, ids=ids) == first  # all 100 resent: none runs
        pair = [("count", {"c": 55, "i": i}) for i in range(2)]
        twice = client.fire_many(pair * 2, ids=["new-1", "new-2"] * 2)
        assert twice[:2] == twice[2:]
        with pytest.raises(ValueError, match="ids for"):
            client.fire_many(events, ids=ids[:3])
    ran(rigger, port)
    assert set(counter(rigger).seen[(5, i)] for i in range(100)) == {1}
    assert counter(rigger).seen[(55, 0)] == 1 and counter(rigger).seen[(55, 1)] == 1
    assert server_counters(port_of(rigger))["duplicates"] == 102


def test_http_fires_share_the_window(dispatchers: Dispatchers) -> None:
    from tests._http import Http, http_port, make_http_rigger

    rigger = dispatchers.add(make_http_rigger())
    with Http(http_port(rigger)) as client:
        status, first = client.fire("count", data={"c": 6}, id="h")
        assert status == 200 and first["ok"]
        status, again = client.fire("count", data={"c": 6}, id="h", grab_result=True)
        assert (status, again) == (200, {"ok": True, "tid": first["tid"], "duplicate": True})
        status, bad = client.fire("count", data={"c": 6}, id=7)
        assert status == 400 and bad["error"]["code"] == proto.BAD_ID
    with Raw(port_of(rigger)) as raw:  # and TCP's
        assert raw.request(fire("count", "h", data={"c": 6}))["tid"] == first["tid"]
    ran(rigger, port_of(rigger))
    assert counter(rigger).seen[(6, None)] == 1


def test_the_window_survives_a_restart_with_the_journal(
    dispatchers: Dispatchers, tmp_path: Path
) -> None:
    journal = str(tmp_path / "j.db")
    rigger = make_rigger(journal=journal)
    with RiggerClient(HOST, port_of(rigger)) as client:
        tids = client.fire_many([("count", {"c": 7, "i": i}) for i in range(3)], ids=list("xyz"))
    assert rigger.wait_background(WAIT)
    rigger.stop()
    assert counter(rigger).seen[(7, 0)] == 1
    again = dispatchers.add(make_rigger(journal=journal))
    with RiggerClient(HOST, port_of(again)) as client:
        events = [("count", {"c": 7, "i": i}) for i in range(3)]
        assert client.fire_many(events, ids=list("xyz")) == tids
        with pytest.raises(DuplicateFire, match=tids[0]):
            client.fire_hook("count", grab_result=True, fire_id="x", c=7, i=0)
        fresh = client.fire_hook("count", fire_id="w", c=7, i=9)
        assert fresh not in tids
    ran(again, port_of(again))
    assert sum(n for (c, _), n in counter(again).seen.items() if c == 7) == 1  # "w" alone


# -- the client's resends -------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to ``port`` that, on its first connection, forwards the client's bytes
    and ``keep`` reply lines, then closes both ends (the rest of the replies lost); later
    connections are forwarded whole."""

    def __init__(self, port: int, keep: int = 0, once: bool = False) -> None:
        self.target = port
        self.keep = keep
        self.once = once  # no connection after the first: the server seems gone
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        self.connections = 0
        self._stop = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="test-proxy")
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self._stop[0], selectors.EVENT_READ, "stop")
        peers: dict[socket.socket, tuple[socket.socket, bool]] = {}  # sock -> (other, reply side)
        counted: dict[socket.socket, int] = {}
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stop":
                        return
                    if key.data == "accept":
                        client, _ = self.listener.accept()
                        if self.once:
                            sel.unregister(self.listener)
                            self.listener.close()
                        server = socket.create_connection((HOST, self.target))
                        self.connections += 1
                        cutting = self.connections == 1
                        peers[client] = (server, False)
                        peers[server] = (client, True)
                        counted[server] = self.keep if cutting else -1
                        sel.register(client, selectors.EVENT_READ, "pipe")
                        sel.register(server, selectors.EVENT_READ, "pipe")
                        continue
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    other, replies = peers[sock]
                    data = sock.recv(65536)
                    left = counted.get(sock, -1)
                    if replies and left >= 0:
                        lines = data.split(b"\n")
                        if len(lines) - 1 > left:  # the cut: forward `left` lines only
                            other.sendall(b"".join(line + b"\n" for line in lines[:left]))
                            data = b""
                            self.cuts += 1
                        else:
                            counted[sock] = left - (len(lines) - 1)
                    if data:
                        other.sendall(data)
                        continue
                    for end in (sock, other):
                        sel.unregister(end)
                        end.close()
                        peers.pop(end, None)
        finally:
            for end in peers:
                end.close()
            sel.close()

    def close(self) -> None:
        self._stop[1].send(b"x")
        self._thread.join(WAIT)
        self.listener.close()
        for end in self._stop:
            end.close()


@pytest.fixture
def proxy_to(dispatchers: Dispatchers) -> Iterator[Any]:
    made: list[CuttingProxy] = []

    def make(port: int, keep: int = 0, once: bool = False) -> CuttingProxy:
        made.append(CuttingProxy(port, keep, once))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_a_fire_whose_reply_was_cut_is_resent_and_runs_once(
    dispatchers: Dispatchers, proxy_to: Any
) -> None:
    rigger = dispatchers.add(make_rigger())
    proxy = proxy_to(port_of(rigger))
    with RiggerClient(HOST, proxy.port, timeout=WAIT) as client:
        tid = client.fire_hook("count", c=8)
    assert proxy.cuts == 1 and proxy.connections == 2
    ran(rigger, port_of(rigger))
    assert counter(rigger).seen[(8, None)] == 1
    assert server_counters(port_of(rigger))["duplicates"] == 1
    assert tid.startswith("tcp")


def test_fire_many_resends_only_what_was_not_replied_to(
    dispatchers: Dispatchers, proxy_to: Any
) -> None:
    rigger = dispatchers.add(make_rigger())
    proxy = proxy_to(port_of(rigger), keep=10)
    with RiggerClient(HOST, proxy.port, timeout=WAIT) as client:
        tids = client.fire_many([("count", {"c": 9, "i": i}) for i in range(200)])
    assert proxy.cuts == 1 and len(set(tids)) == 200
    ran(rigger, port_of(rigger))
    assert {counter(rigger).seen[(9, i)] for i in range(200)} == {1}
    duplicates = server_counters(port_of(rigger))["duplicates"]
    assert 0 < duplicates <= 190  # those sent before the cut, whose replies were lost


def test_a_resend_that_finds_no_server_gives_up_naming_the_ids(
    dispatchers: Dispatchers, proxy_to: Any
) -> None:
    from rigger_mp.client import RiggerConnectionError

    rigger = dispatchers.add(make_rigger())
    proxy = proxy_to(port_of(rigger), once=True)  # after the cut, nothing answers
    client = RiggerClient(HOST, proxy.port, timeout=WAIT, resend_seconds=0.2)
    with pytest.raises(RiggerConnectionError) as caught:
        client.fire_hook("count", fire_id="lost-1", c=10)
    client.close()
    assert caught.value.fire_ids == ["lost-1"]
    assert "resend them with the ids" in str(caught.value)


# -- the journal's fire_ids ------------------------------------------------------------------


def test_the_journal_keeps_the_last_ids_and_an_older_file_gains_the_table(
    tmp_path: Path,
) -> None:
    import sqlite3

    from rigger_mp.journal import FIRE_LINE, JournalStore
    from rigger_mp.journal.fire_ids import TRIM_EVERY

    path = tmp_path / "j.db"
    store = JournalStore.open(path)
    total = 1200
    for start in range(0, total, 100):
        span = range(start, start + 100)
        rows = [(f"t{n}", "ev", FIRE_LINE, b"{}") for n in span]
        store.commit(rows, ids=[(f"id-{n}", f"t{n}") for n in span], keep_ids=3)
    assert store.recent_ids(3) == [(f"id-{n}", f"t{n}") for n in range(total - 3, total)]
    # The 11th commit took the numbering past TRIM_EVERY: cut to 3; the 12th added 100.
    assert TRIM_EVERY == 1024 and len(store.recent_ids(10_000)) == 3 + 100
    store.close()
    with sqlite3.connect(path) as db:  # a schema 3 file: no fire_ids
        db.execute("DROP TABLE fire_ids")
        db.execute("PRAGMA user_version = 3")
    db.close()
    store = JournalStore.open(path)
    assert store.recent_ids(5) == []
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    db.close()


def test_a_serve_sigkilled_and_restarted_does_not_run_a_resent_fire_again(tmp_path: Path) -> None:
    import signal

    from tests.test_journal_serve_crash import check, serve, write_config

    config = write_config(tmp_path)
    first = serve(tmp_path, config)
    events = [("ev", {"k": k}) for k in range(200)]
    ids = [f"fire-{k}" for k in range(200)]
    with RiggerClient(HOST, int(first.port), timeout=WAIT) as client:
        tids = client.fire_many(events, ids=ids)  # all acked: committed with their ids
    first.proc.send_signal(signal.SIGKILL)
    first.kill()
    second = serve(tmp_path, config)
    try:
        with RiggerClient(HOST, int(second.port), timeout=WAIT) as client:
            assert client.fire_many(events, ids=ids) == tids  # every one a duplicate
            assert client.fire_hook("ev", wait_for_task=True, k=-1)  # after the replay
            assert client.stats()["server"]["process"]["duplicates"] == 200
        assert second.cmd("terminate").returncode == 0
        assert second.finish()[0] == 0
    finally:
        second.kill()
    check(tmp_path, set(range(200)), running=1)  # once each (bar one running at the kill)
