"""The task_status window without a server: what it remembers and the line it answers."""

from __future__ import annotations

import json

import pytest

from rigger_mp.core.task import Task
from rigger_mp.errors import ShuttingDown
from rigger_mp.server import status_window
from rigger_mp.server.status_window import StatusWindow


def status(window: StatusWindow, tid: str) -> dict[str, object]:
    reply = json.loads(window.status_line(tid))
    assert isinstance(reply, dict)
    return reply


def test_the_window_forgets_the_oldest_tasks_beyond_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(status_window, "STATUS_WINDOW", 3)
    window = StatusWindow()
    window.remember([Task(f"t{i}", "count") for i in range(2)])
    window.remember([Task(f"t{i}", "count") for i in range(2, 5)])
    assert len(window) == 3
    forgotten = status(window, "t1")
    assert forgotten["ok"] is False
    assert forgotten["error"]["code"] == "unknown_task"  # type: ignore[index]
    assert status(window, "t2") == {"ok": True, "tid": "t2", "status": "queued"}
    window.clear()
    assert len(window) == 0


def test_the_status_line_follows_the_task_from_queued_to_failed() -> None:
    window = StatusWindow()
    done, running, failed, stopped = (Task(t, "count") for t in ("d", "r", "f", "s"))
    window.remember([done, running, failed, stopped])
    assert running.set_running_or_notify_cancel()
    done.set_result({})
    failed.set_exception(ValueError("boom"))
    stopped.set_exception(ShuttingDown("stopping"))
    assert status(window, "d")["status"] == "done"
    assert status(window, "r")["status"] == "running"
    assert status(window, "f")["status"] == "failed"
    assert status(window, "f")["error"]["code"] == "hook_failed"  # type: ignore[index]
    assert status(window, "s")["error"]["code"] == "shutting_down"  # type: ignore[index]
