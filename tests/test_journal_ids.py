"""A tid and a seq name one event for the life of a journal file, across restarts.

Tids are made in two places: the main process (in-process fires) and the server process
(TCP fires, with the ``tid_prefix`` of its settings); both begin with the journal's boot
number. Seqs are given by the file itself and never go back, whatever was deleted.
"""

from __future__ import annotations

import signal
from pathlib import Path

from rigger_mp.client import RiggerClient
from rigger_mp.journal import JournalStore
from tests.test_cli import rigger_mp
from tests.test_journal_serve_crash import pending_at_kill, serve, write_config
from tests.test_journal_wired import make


def test_in_process_tids_and_seqs_are_new_at_every_start(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    named: dict[str, int] = {}  # tid -> seq, of every event fired
    for boot in (1, 2, 3):
        rigger = make(path).start()
        try:
            tasks = [rigger.fire_hook("ev", x=i) for i in range(5)]
            tasks += rigger.fire_many([("ev", {"x": i}) for i in range(5)])
            for task in tasks:
                task.result(timeout=10)
        finally:
            rigger.stop()
        assert all(task.tid.startswith(f"b{boot}-") for task in tasks)
        for task in tasks:
            assert task.tid not in named and task.seq is not None
            named[task.tid] = task.seq
    assert len(set(named.values())) == len(named) == 30
    assert sorted(named.values()) == list(range(1, 31))  # every event done: seqs still go on


def test_tcp_tids_and_seqs_are_never_given_twice_across_three_restarts(tmp_path: Path) -> None:
    """Each run ends SIGKILLed by a poison event (then purged), leaving rows pending."""
    config = write_config(tmp_path)
    heard: list[str] = []
    rows: dict[int, str] = {}  # seq -> tid of every row seen pending at a kill
    for run in range(4):
        served = serve(tmp_path, config)
        client = RiggerClient("127.0.0.1", int(served.port))
        try:
            client.fire_hook("ev", k=run * 100, wait_for_task=True)  # after the replay
            tids = client.fire_many([("ev", {"k": run * 100 + i}) for i in range(1, 21)])
            if run < 3:
                tids += client.fire_many([("poison", {}), ("ev", {"k": run * 100 + 50})])
        finally:
            client.close()
        heard += tids
        if run == 3:
            assert served.cmd("terminate").returncode == 0
            assert served.finish()[0] == 0
            break
        assert served.proc.wait(timeout=30) == -signal.SIGKILL
        served.kill()
        for entry in pending_at_kill(tmp_path):
            assert rows.setdefault(entry.seq, entry.tid) == entry.tid, (entry.seq, rows)
        poison = tids[-2]
        purged = rigger_mp("journal", "purge", poison, "-j", str(tmp_path / "j.db"))
        assert purged.returncode == 0, purged.stderr
    assert len(set(heard)) == len(heard) == 3 * 22 + 20
    assert len(set(rows.values())) == len(rows) >= 6  # a tid is one seq, a seq one tid
    store = JournalStore.open(tmp_path / "j.db")
    try:
        assert store.counts() == (0, 0)
        assert store.last_seq() >= max(rows)
    finally:
        store.close()
