"""The README's first command: the in-process demo of the main job."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigger_mp import demo


def test_demo_writes_a_log_per_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--tests", "20", "--dir", str(tmp_path)]) == 0
    logs = sorted(tmp_path.glob("tests/mod_*/test_*/testlog.log"))
    assert len(logs) == 20
    assert logs[0].read_text().splitlines()[-1] in ("passed", "failed")
    out = capsys.readouterr().out
    assert "40 events" in out and "0 failed" in out
