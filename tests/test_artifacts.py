"""Artifact paths: made safe from test names, and kept inside the artifacts root."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigger_mp import Rigger
from rigger_mp.plugins.artifacts import artifact_dir, install


def test_names_become_safe_path_parts(tmp_path: Path) -> None:
    path = artifact_dir(tmp_path, "tests/../../etc", "test_x[../../a]")
    assert path == tmp_path / "tests" / "_" / "_" / "etc" / "test_x[.._.._a]"
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_client_artifact_path_inside_root_is_kept_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = Rigger()
    install(rigger, root)
    inside = str(root / "mine" / "t1")
    with rigger:
        kept = rigger.fire_hook("start_test", test_name="t1", artifact_path=inside).result()
        made = rigger.fire_hook("start_test", test_name="t2", test_location="m.py").result()
        with pytest.raises(ValueError, match="outside the artifacts root"):
            rigger.fire_hook("start_test", test_name="t3", artifact_path="/etc").result()
        with pytest.raises(ValueError, match="outside the artifacts root"):
            rigger.fire_hook("start_test", test_name="t4", artifact_path="../escape").result()
    assert kept["artifact_path"] == inside
    assert made["artifact_path"] == str(root.absolute() / "m.py" / "t2")
