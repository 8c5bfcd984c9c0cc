"""Issue #13 end to end: a ``rigger-mp serve`` with a journal, SIGKILLed, started again.

Four clients fire 5,000 events each with ``fire_many`` (in chunks: a chunk whose replies
all came back is what the client heard ``ok`` for); the serve process (the main one) is
SIGKILLed mid-burst; a second serve on the same journal replays. Every event heard ``ok``
must reach the hook at least once (the hook appends a line per run to a file), and the
runs beyond one are no more than the events pending in the journal at the kill: those
accepted and not done, the only ones that may run twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from rigger_mp.client import RiggerClient
from rigger_mp.journal import JournalStore
from tests.conftest import assert_processes_gone
from tests.test_cli import Served, env, rigger_mp

CLIENTS = 4
EVENTS = 5_000
CHUNK = 250
KILL_AFTER = 4_000
"""Events heard ``ok`` (by all clients) when the serve process is killed."""


def write_config(
    tmp_path: Path, background: bool = False, name: str = "rigger.yaml", **fg: Any
) -> Path:
    plugins: dict[str, Any] = {
        "fg": {"plugin": "tests.journal_plugins:Counted", "path": str(tmp_path / "runs"), **fg}
    }
    if background:
        plugins["bg"] = {
            "plugin": "tests.journal_plugins:Counted",
            "path": str(tmp_path / "runs"),
            "tag": "bg",
            "background": True,
        }
    config = {"journal": str(tmp_path / "j.db"), "workers": 1, "plugins": plugins}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def serve(tmp_path: Path, config: Path) -> Served:
    return Served("-c", str(config), "--artifacts", str(tmp_path / "art"), cwd=tmp_path)


def serve_until_killed(tmp_path: Path, config: Path) -> None:
    """A serve whose config makes it SIGKILL itself (a poison event, a replay cut short)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rigger_mp", "serve", "--port", "0", "-c", str(config)],
        env=env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.wait(timeout=60) == -signal.SIGKILL


def burst_and_kill(served: Served) -> set[int]:
    """Fire from 4 clients; SIGKILL serve once KILL_AFTER were heard; the keys heard ok."""
    heard: set[int] = set()
    lock = threading.Condition()

    def client(c: int) -> None:
        rc = RiggerClient("127.0.0.1", int(served.port), timeout=30)
        try:
            for start in range(0, EVENTS, CHUNK):
                keys = [c * EVENTS + i for i in range(start, start + CHUNK)]
                rc.fire_many([("ev", {"k": k}) for k in keys])
                with lock:
                    heard.update(keys)
                    lock.notify_all()
        except (OSError, ConnectionError):
            pass  # the kill: what this chunk heard is not counted
        finally:
            rc.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    with lock:
        lock.wait_for(lambda: len(heard) >= KILL_AFTER or not any(t.is_alive() for t in threads))
    served.proc.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join()
    served.proc.communicate()
    assert_processes_gone(served.children)
    with lock:
        assert len(heard) < CLIENTS * EVENTS, "the burst ended before the kill"
        return set(heard)


def pending_count(tmp_path: Path) -> int:
    store = JournalStore.open(tmp_path / "j.db")
    try:
        return store.counts()[0]
    finally:
        store.close()


def runs(tmp_path: Path, tag: str = "fg") -> Counter[int]:
    path = tmp_path / "runs"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(int(line.split()[1]) for line in lines if line.split()[0] == tag)


def restart_and_finish(tmp_path: Path, config: Path) -> dict[str, Any]:
    """serve again: wait for an event fired after the replay, then terminate; its stats."""
    served = serve(tmp_path, config)
    try:
        rc = RiggerClient("127.0.0.1", int(served.port), timeout=60)
        assert rc.fire_hook("ev", wait_for_task=True, k=-1)  # runs after every replayed one
        stats = rc.stats()
        rc.close()
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()
    return stats


def check(tmp_path: Path, heard: set[int], in_flight: int, tag: str = "fg") -> None:
    seen = runs(tmp_path, tag)
    missing = heard - set(seen)
    assert not missing, f"{len(missing)} event(s) acked and never run, e.g. {sorted(missing)[:5]}"
    extra = sum(n - 1 for k, n in seen.items() if k >= 0)
    assert extra <= in_flight, (extra, in_flight)


def test_sigkill_mid_burst_loses_no_acked_event(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    heard = burst_and_kill(serve(tmp_path, config))
    in_flight = pending_count(tmp_path)
    assert in_flight > 0  # the kill found work queued: the replay has something to do
    stats = restart_and_finish(tmp_path, config)
    check(tmp_path, heard, in_flight)
    replayed = [line for line in (tmp_path / "runs").read_text().splitlines() if line[-2:] == " 2"]
    assert len(replayed) == in_flight  # each replayed event saw rigger_attempt == 2
    assert stats["journal"]["pending"] >= 0 and stats["server"]["process"]["journal"]["commits"]
    assert pending_count(tmp_path) == 0


def test_sigkill_during_the_replay_too(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    heard = burst_and_kill(serve(tmp_path, config))
    first = pending_count(tmp_path)
    assert first > 10
    # The second start dies after 10 replayed events: a crash in the middle of the replay.
    serve_until_killed(tmp_path, write_config(tmp_path, name="dying.yaml", kill_after_replays=10))
    second = pending_count(tmp_path)
    assert second <= first
    restart_and_finish(tmp_path, config)
    check(tmp_path, heard, first + second)
    assert max(int(line.split()[2]) for line in (tmp_path / "runs").read_text().splitlines()) == 3
    assert pending_count(tmp_path) == 0


def test_sigkill_with_backgrounded_hooks_in_flight(tmp_path: Path) -> None:
    config = write_config(tmp_path, background=True)
    heard = burst_and_kill(serve(tmp_path, config))
    in_flight = pending_count(tmp_path)
    restart_and_finish(tmp_path, config)
    check(tmp_path, heard, in_flight, "fg")
    check(tmp_path, heard, in_flight, "bg")  # an event is done only once its bg hook is
    assert pending_count(tmp_path) == 0


def test_a_poison_event_ends_in_the_dead_letters(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    served = serve(tmp_path, config)
    RiggerClient("127.0.0.1", int(served.port)).fire_hook("poison")
    assert served.proc.wait(timeout=30) == -signal.SIGKILL
    served.kill()
    # journal_max_attempts (3) runs in all: the live one, then one replay per start.
    for _ in range(2):
        serve_until_killed(tmp_path, config)
    served = serve(tmp_path, config)  # the fourth start dead-letters it and serves
    assert served.cmd("terminate").returncode == 0
    status, _, err = served.finish()
    assert status == 0
    assert "moved to the dead letters" in err
    listed = rigger_mp("journal", "list", "-j", str(tmp_path / "j.db"), "--json")
    assert listed.returncode == 0, listed.stderr
    text = listed.stdout
    assert "poison" in text and json.loads(text)
    assert [line for line in (tmp_path / "runs").read_text().splitlines()] == [
        "poison 0 1",
        "poison 0 2",
        "poison 0 3",
    ]


def test_serve_refuses_a_corrupt_journal_naming_it(tmp_path: Path) -> None:
    (tmp_path / "j.db").write_bytes(b"not a journal at all" * 300)
    config = write_config(tmp_path)
    result = rigger_mp("serve", "--port", "0", "-c", str(config))
    assert result.returncode == 1
    assert str(tmp_path / "j.db") in result.stderr


def test_serve_keeps_a_journal_by_default_beside_the_artifacts(tmp_path: Path) -> None:
    served = Served("--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    try:
        stats = RiggerClient("127.0.0.1", int(served.port)).stats()
        assert stats["journal"]["path"] == str(tmp_path / "art" / "rigger-journal.sqlite")
        assert stats["server"]["process"]["journal"]["path"] == stats["journal"]["path"]
        assert served.cmd("terminate").returncode == 0
        assert served.finish()[0] == 0
    finally:
        served.kill()
    off = Served("--artifacts", str(tmp_path / "art2"), "--no-journal", cwd=tmp_path)
    try:
        assert "journal" not in RiggerClient("127.0.0.1", int(off.port)).stats()
        assert off.cmd("terminate").returncode == 0
        assert off.finish()[0] == 0
    finally:
        off.kill()

