"""A poison event takes nobody with it: a real ``rigger-mp serve`` SIGKILLed by one event.

Ten ordinary events, one whose hook SIGKILLs the main process, then fifty ordinary ones,
pipelined on one connection. An attempt is a run that started and did not finish (the
run map says which), so the poison alone is counted at each start; the ten before it had
finished and do not run again; the fifty behind it never started, so they are never
dead-lettered and run, in order, once the poison is gone (dead-lettered, or purged).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from rigger_mp.client import RiggerClient
from tests.test_cli import rigger_mp
from tests.test_journal_serve_crash import (
    run_lines,
    runs,
    serve,
    serve_until_killed,
    write_config,
)

BEFORE, AFTER = 10, 50


def fire_poisoned_burst(tmp_path: Path, config: Path) -> list[str]:
    """Serve, pipeline 10 + poison + 50 on one connection; the tids heard; serve died."""
    served = serve(tmp_path, config)
    events: list[tuple[str, dict[str, Any]]] = [("ev", {"k": k}) for k in range(BEFORE)]
    events.append(("poison", {}))
    events += [("ev", {"k": k}) for k in range(BEFORE, BEFORE + AFTER)]
    client = RiggerClient("127.0.0.1", int(served.port))
    try:
        tids = client.fire_many(events)  # every ack comes before the poison can run
    finally:
        client.close()
    assert served.proc.wait(timeout=30) == -signal.SIGKILL
    served.kill()
    return tids


def journal_list(tmp_path: Path) -> list[dict[str, Any]]:
    listed = rigger_mp("journal", "list", "-j", str(tmp_path / "j.db"), "--json")
    assert listed.returncode == 0, listed.stderr
    events: list[dict[str, Any]] = json.loads(listed.stdout)["events"]
    return events


def finish(tmp_path: Path, config: Path) -> str:
    """Serve again until an event fired now has run (after every replayed one); stderr."""
    served = serve(tmp_path, config)
    try:
        client = RiggerClient("127.0.0.1", int(served.port), timeout=60)
        assert client.fire_hook("ev", wait_for_task=True, k=-1)
        client.close()
        assert served.cmd("terminate").returncode == 0
        status, _, err = served.finish()
        assert status == 0, err
    finally:
        served.kill()
    return err


def assert_the_others_ran_once_in_order(tmp_path: Path, poison_runs: int) -> None:
    lines = run_lines(tmp_path, "fg")
    seen = runs(tmp_path)
    assert [seen[k] for k in range(BEFORE + AFTER)] == [1] * (BEFORE + AFTER)
    assert all(fields[2] == "1" for fields in lines)  # none had a run that did not finish
    everything = (tmp_path / "runs").read_text().splitlines()
    poison = [n for n, line in enumerate(everything) if line.startswith("poison")]
    assert len(poison) == poison_runs
    behind = [n for n, line in enumerate(everything) if line.split()[:1] == ["fg"]]
    behind = [n for n in behind if BEFORE <= int(everything[n].split()[1]) < BEFORE + AFTER]
    assert min(behind) > poison[-1]  # not one ran before the poison was gone
    assert [int(everything[n].split()[1]) for n in behind] == list(range(BEFORE, BEFORE + AFTER))


def test_a_poison_event_alone_is_dead_lettered_and_the_events_behind_it_run(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    tids = fire_poisoned_burst(tmp_path, config)
    assert len(set(tids)) == BEFORE + 1 + AFTER
    for _ in range(2):  # the replays: the poison runs first, and kills again
        serve_until_killed(tmp_path, config)
    err = finish(tmp_path, config)  # journal_max_attempts (3) runs: dead-lettered at this start
    moved = "1 event(s) moved to the dead letters after 3 attempt(s) without finishing"
    assert f"{moved}: {tids[BEFORE]} ('poison')" in err
    assert [line for line in (tmp_path / "runs").read_text().splitlines() if "poison" in line] == [
        "poison 0 1",
        "poison 0 2",
        "poison 0 3",
    ]
    assert_the_others_ran_once_in_order(tmp_path, poison_runs=3)
    [dead] = journal_list(tmp_path)
    assert (dead["state"], dead["tid"], dead["hook"], dead["attempts"]) == (
        "dead",
        tids[BEFORE],
        "poison",
        3,
    )
    assert dead["last_error"].startswith("the dispatcher died or stopped during each of its 3 run")


def test_purging_a_pending_poison_event_lets_the_next_start_run_the_rest(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    tids = fire_poisoned_burst(tmp_path, config)
    listed = journal_list(tmp_path)
    # The ten before it had finished: the run map says so, their rows are gone.
    assert [(e["state"], e["tid"], e["attempts"]) for e in listed] == [
        ("pending", tids[BEFORE], 1),
        *[("pending", tid, 0) for tid in tids[BEFORE + 1 :]],
    ]
    purged = rigger_mp("journal", "purge", tids[BEFORE], "-j", str(tmp_path / "j.db"))
    assert purged.returncode == 0, purged.stderr
    assert f"pending {tids[BEFORE]} (poison)" in purged.stdout
    finish(tmp_path, config)
    assert_the_others_ran_once_in_order(tmp_path, poison_runs=1)
    assert journal_list(tmp_path) == []
