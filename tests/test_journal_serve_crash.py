"""Issue #13 end to end: a ``rigger-mp serve`` with a journal, SIGKILLed, started again.

Clients fire 5,000 events each with ``fire_many`` (in chunks: a chunk whose replies all
came back is what the client heard ``ok`` for); the serve process (the main one) is
SIGKILLed mid-burst; a second serve on the same journal replays. Every event heard ``ok``
must reach the hook at least once (the hook appends a line per run to a file). Only an
event running at the kill runs twice: the run map says which events had finished, their
done marks not yet committed, and those are not run again. The done marks themselves are
committed within DONE_LINGER of the event's end, plus the commits that hold the file.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from rigger_mp.client import RiggerClient
from rigger_mp.journal import Entry, JournalStore
from rigger_mp.journal.committer import DONE_LINGER
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


def burst_and_kill(served: Served, clients: int = CLIENTS, before_kill: Any = None) -> set[int]:
    """Fire from ``clients`` clients; SIGKILL serve once KILL_AFTER were heard; the keys
    heard ok. ``before_kill()`` runs just before the signal."""
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

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    kill_after = KILL_AFTER * clients // CLIENTS
    with lock:
        lock.wait_for(lambda: len(heard) >= kill_after or not any(t.is_alive() for t in threads))
    if before_kill is not None:
        before_kill()
    served.proc.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join()
    served.proc.communicate()
    assert_processes_gone(served.children)
    with lock:
        assert len(heard) < clients * EVENTS, "the burst ended before the kill"
        return set(heard)


def pending_count(tmp_path: Path) -> int:
    """Events pending once the run map of the dead dispatcher is counted (an owner open)."""
    store = JournalStore.open(tmp_path / "j.db")
    try:
        return store.counts()[0]
    finally:
        store.close()


def pending_at_kill(tmp_path: Path) -> list[Entry]:
    """The rows as the dead dispatcher left them (a non-owner open counts no run map)."""
    store = JournalStore.open(tmp_path / "j.db", owner=False)
    try:
        return store.pending()
    finally:
        store.close()


def run_lines(tmp_path: Path, tag: str = "fg") -> list[list[str]]:
    """The hook's lines, split: tag, k, attempt (and when an ``ev`` ended)."""
    path = tmp_path / "runs"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split() for line in lines if line.split()[0] == tag]


def runs(tmp_path: Path, tag: str = "fg") -> Counter[int]:
    return Counter(int(fields[1]) for fields in run_lines(tmp_path, tag))


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


def check(tmp_path: Path, heard: set[int], running: int, tag: str = "fg") -> None:
    """Every event heard ok ran; at most ``running`` started twice (those running at a
    kill), and each saw ``rigger_attempt`` 2 when it did, every other replayed event 1."""
    seen = runs(tmp_path, tag)
    missing = heard - set(seen)
    assert not missing, f"{len(missing)} event(s) acked and never run, e.g. {sorted(missing)[:5]}"
    twice = {k for k, n in seen.items() if k >= 0 and n > 1}
    assert all(seen[k] == 2 for k in twice), twice
    # Those that started again (one that was killed before this hook ran is among them).
    again = {int(f[1]) for f in run_lines(tmp_path, tag) if f[2] == "2"}
    assert twice <= again and len(again) <= running, (twice, again, running)


def test_sigkill_mid_burst_loses_no_acked_event(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    heard = burst_and_kill(serve(tmp_path, config))
    assert pending_count(tmp_path) > 0  # the kill found work queued: the replay has some
    stats = restart_and_finish(tmp_path, config)
    check(tmp_path, heard, running=1)  # the one running at the kill, if one was
    assert stats["journal"]["pending"] >= 0 and stats["server"]["process"]["journal"]["commits"]
    assert pending_count(tmp_path) == 0


def test_sigkill_during_the_replay_too(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    heard = burst_and_kill(serve(tmp_path, config))
    first = pending_count(tmp_path)
    assert first > 10
    before = len(run_lines(tmp_path))
    # The second start dies in the 10th replayed event: a crash in the middle of the replay.
    serve_until_killed(tmp_path, write_config(tmp_path, name="dying.yaml", kill_after_replays=10))
    replayed = run_lines(tmp_path)[before:]
    assert len(replayed) == 10 and replayed[-1][2] == "1"  # the 10th had not started before
    assert pending_count(tmp_path) == first - 9  # the 9 that finished are not pending
    restart_and_finish(tmp_path, config)
    check(tmp_path, heard, running=2)  # one running at each kill
    assert runs(tmp_path)[int(replayed[-1][1])] == 2
    assert pending_count(tmp_path) == 0


def test_done_marks_come_within_done_linger_under_a_16_client_burst(tmp_path: Path) -> None:
    """From the hooks' own clock: at the kill, no event that had ended more than
    DONE_LINGER and the commits a done mark may wait behind (the main process's one under
    way, the server process's holding the file) and its own before it is still pending;
    after the restart, an event that ran again had ended less than that before the kill,
    or was running. The commits are the longest each process made in this run."""
    config = write_config(tmp_path)
    served = serve(tmp_path, config)
    longest: list[float] = []

    def before_kill() -> None:
        client = RiggerClient("127.0.0.1", int(served.port), timeout=30)
        stats = client.stats()
        client.close()
        main, server = stats["journal"], stats["server"]["process"]["journal"]
        longest.extend((main["max_commit_seconds"], server["max_commit_seconds"]))
        longest.append(time.monotonic())

    heard = burst_and_kill(served, clients=16, before_kill=before_kill)
    main_commit, server_commit, killed = longest
    bound = DONE_LINGER + 2 * main_commit + server_commit
    ended = {int(fields[1]): float(fields[3]) for fields in run_lines(tmp_path)}
    pending = pending_at_kill(tmp_path)
    assert len(pending) > 100  # the kill found a backlog
    late = [
        (e.tid, round(killed - ended[k], 3))
        for e in pending
        if (k := e.data()["k"]) in ended and killed - ended[k] >= bound
    ]
    assert not late, (bound, late[:10])
    restart_and_finish(tmp_path, config)
    check(tmp_path, heard, running=1)
    twice = [k for k, n in runs(tmp_path).items() if n > 1]
    assert all(killed - ended[k] < bound for k in twice if k in ended), (bound, twice)


def test_sigkill_with_backgrounded_hooks_in_flight(tmp_path: Path) -> None:
    config = write_config(tmp_path, background=True)
    heard = burst_and_kill(serve(tmp_path, config))
    in_flight = pending_count(tmp_path)  # running, or waiting on its backgrounded hook
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

