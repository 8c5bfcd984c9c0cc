"""``rigger-mp journal``: list, show, retry, purge; refused while a dispatcher holds it."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import pytest

from rigger_mp.cli.commands import main
from rigger_mp.journal import JournalStore, encode
from tests._runs import died_running


class Outcome(enum.Enum):
    """Not plain data: its events are pickled."""

    PASSED = "passed"


def journal_with_events(path: Path) -> None:
    """Pending: tcp1-1 (marshalled) and 2 (pickled); dead: 1, which used up its attempts."""
    store = JournalStore.open(path)
    try:
        store.commit([("1", "start_test", *encode("start_test", {"test_name": "old"}))])
    finally:
        store.close()
    died_running(path, 1)  # its one run did not finish
    store = JournalStore.open(path)
    try:
        store.claim_replay(max_attempts=1)
        store.commit(
            [
                ("tcp1-1", "start_test", *encode("start_test", {"test_name": "t"})),
                ("2", "finish_test", *encode("finish_test", {"result": Outcome.PASSED})),
            ]
        )
    finally:
        store.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["journal", *args])
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    return json.loads(out)


def test_list_shows_pending_and_dead(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.db"
    journal_with_events(path)
    events = run_json(capsys, "list", "-j", str(path))["events"]
    assert [(e["state"], e["tid"], e["hook"], e["attempts"]) for e in events] == [
        ("pending", "tcp1-1", "start_test", 0),
        ("pending", "2", "finish_test", 0),
        ("dead", "1", "start_test", 1),
    ]
    assert all(e["age_seconds"] >= 0 for e in events)
    last_error = "the dispatcher died or stopped during each of its 1 run(s)"
    assert events[2]["last_error"].startswith(last_error)
    assert "last_error" not in events[0]
    status, out, _ = run(capsys, "list", "-j", str(path))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["state", "seq", "tid", "hook", "age", "attempts", "last", "error"]
    assert lines[1].split()[:3] == ["pending", "2", "tcp1-1"] and "3 event(s)" in lines[-1]
    assert lines[3].split()[:3] == ["dead", "1", "1"] and last_error in lines[3]


def test_show_prints_json_data_and_pickles_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.db"
    journal_with_events(path)
    store = JournalStore.open(path)
    try:  # marshalled, not plain JSON
        store.commit([("3", "finish_test", *encode("finish_test", {"result": ("passed", 1)}))])
    finally:
        store.close()
    [shown] = run_json(capsys, "show", "tcp1-1", "-j", str(path))
    assert shown["format"] == "marshal" and shown["data"] == {"test_name": "t"}
    [tupled] = run_json(capsys, "show", "3", "-j", str(path))  # no --unpickle needed
    assert tupled["format"] == "marshal" and tupled["data"] == repr({"result": ("passed", 1)})
    status, out, _ = run(capsys, "show", "3", "-j", str(path))
    assert status == 0 and "data (marshal, not plain JSON): {'result': ('passed', 1)}" in out
    [pickled] = run_json(capsys, "show", "2", "-j", str(path))
    assert pickled["format"] == "pickle" and pickled["data"] is None and pickled["bytes"] > 0
    [unpickled] = run_json(capsys, "show", "2", "--unpickle", "-j", str(path))
    assert unpickled["data"] == repr({"result": Outcome.PASSED})
    status, out, _ = run(capsys, "show", "2", "-j", str(path))
    assert status == 0 and "not unpickled: --unpickle shows it" in out
    status, _, err = run(capsys, "show", "nope", "-j", str(path))
    assert status == 1 and f"no event with tid nope in journal {path}" in err


def test_retry_and_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "j.db"
    journal_with_events(path)
    assert run_json(capsys, "retry", "1", "-j", str(path)) == {"retried": ["1"]}
    store = JournalStore.open(path)
    run_, dead = store.claim_replay(max_attempts=1)  # the retried one runs first, attempts reset
    store.close()
    assert [(e.tid, e.attempts) for e in run_] == [("1", 0), ("tcp1-1", 0), ("2", 0)]
    assert dead == []
    died_running(path, 1, 2, 3)  # each of the three started once and did not finish
    store = JournalStore.open(path)
    assert [e.tid for e in store.claim_replay(max_attempts=1)[1]] == ["1", "tcp1-1", "2"]
    store.close()
    assert run_json(capsys, "retry", "--all-dead", "-j", str(path)) == {
        "retried": ["1", "tcp1-1", "2"]
    }
    died_running(path, 2, 3)
    store = JournalStore.open(path)
    store.claim_replay(max_attempts=1)
    store.close()
    assert run_json(capsys, "purge", "--dead", "-j", str(path)) == {"purged": 2}
    assert [e["tid"] for e in run_json(capsys, "list", "-j", str(path))["events"]] == ["1"]
    status, _, err = run(capsys, "retry", "9", "-j", str(path))
    assert status == 1 and "no dead event with tid 9" in err


def test_purge_by_tid_deletes_pending_and_dead_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.db"
    journal_with_events(path)
    status, _, err = run(capsys, "purge", "2", "nope", "-j", str(path))
    assert status == 1 and "no event with tid nope" in err  # all or nothing
    assert len(run_json(capsys, "list", "-j", str(path))["events"]) == 3
    purged = run_json(capsys, "purge", "2", "1", "-j", str(path))["purged"]
    assert [(e["state"], e["tid"]) for e in purged] == [("pending", "2"), ("dead", "1")]
    assert [e["tid"] for e in run_json(capsys, "list", "-j", str(path))["events"]] == ["tcp1-1"]
    status, out, _ = run(capsys, "purge", "tcp1-1", "-j", str(path))
    assert status == 0 and "1 event(s) deleted" in out and "pending tcp1-1 (start_test)" in out
    store = JournalStore.open(path)
    try:
        assert store.counts() == (0, 0)
        assert list(store.commit([("n", "ev", *encode("ev", {}))])) == [4]  # seqs not reused
    finally:
        store.close()


def test_refused_while_a_dispatcher_holds_the_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "j.db"
    journal_with_events(path)
    holder = JournalStore.open(path)  # what a running dispatcher's main process holds
    try:
        for command in (["list"], ["purge", "tcp1-1"]):
            status, out, err = run(capsys, *command, "-j", str(path))
            assert status == 1 and not out
            assert f"journal {path} is in use by another dispatcher" in err
    finally:
        holder.close()
    assert len(run_json(capsys, "list", "-j", str(path))["events"]) == 3  # nothing purged


def test_a_missing_or_corrupt_journal_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "list", "-j", str(tmp_path / "none.db"))
    assert status == 1 and f"no journal at {tmp_path / 'none.db'}" in err
    (tmp_path / "bad.db").write_bytes(b"not sqlite at all" * 100)
    status, _, err = run(capsys, "list", "-j", str(tmp_path / "bad.db"))
    assert status == 1 and f"journal {tmp_path / 'bad.db'}" in err and "not a database" in err


@pytest.mark.parametrize("command", ["list", "show", "retry", "purge"])
def test_every_journal_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["journal", command, "--help"])
    assert exit_info.value.code == 0
    assert f"rigger-mp journal {command}" in capsys.readouterr().out


def test_purge_and_retry_need_a_choice(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["purge", "-j", "x.db"], ["retry", "-j", "x.db"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["journal", *args])
        assert exit_info.value.code == 2
    capsys.readouterr()
