"""Artifact paths: made safe from test names, and kept inside the artifacts root."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigger_mp import Rigger
from rigger_mp.plugins.artifacts import READY_EVENT, TrustedRoot, artifact_dir, install


def test_names_become_safe_path_parts(tmp_path: Path) -> None:
    path = artifact_dir(tmp_path, "tests/../../etc", "test_x[../../a]")
    assert path == tmp_path / "tests" / "_" / "_" / "etc" / "test_x[.._.._a]"
    assert path.resolve().is_relative_to(tmp_path.resolve())


def test_a_run_id_puts_each_run_in_its_own_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rigger = Rigger()
    install(rigger, root)
    where = {"test_name": "t[1]", "test_location": "tests/test_m.py"}
    with rigger:
        run_a = rigger.fire_hook("start_test", run_id="runA", **where).result()
        run_b = rigger.fire_hook("finish_test", run_id="runB", **where).result()
        hostile = rigger.fire_hook("start_test", run_id="../../etc", **where).result()
        plain = rigger.fire_hook("start_test", **where).result()
    tests = root.absolute()
    assert run_a["artifact_path"] == str(tests / "runA" / "tests" / "test_m.py" / "t[1]")
    assert run_b["artifact_path"] == str(tests / "runB" / "tests" / "test_m.py" / "t[1]")
    assert hostile["artifact_path"] == str(tests / "_.._etc" / "tests" / "test_m.py" / "t[1]")
    assert plain["artifact_path"] == str(tests / "tests" / "test_m.py" / "t[1]")  # as before


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


def test_a_relative_path_is_made_absolute_against_the_root_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rigger = Rigger()
    install(rigger, root)
    with rigger:
        got = rigger.fire_hook("finish_test", test_name="t", artifact_path="m/t1").result()
        for path in (".", "", "m/..", str(root)):
            with pytest.raises(ValueError, match="is the artifacts root"):
                rigger.fire_hook("finish_test", test_name="t", artifact_path=path).result()
    assert got["artifact_path"] == str(root.absolute() / "m" / "t1")


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    rigger = Rigger()
    install(rigger, root)
    with rigger, pytest.raises(ValueError, match="outside the artifacts root"):
        rigger.fire_hook("start_test", test_name="t", artifact_path="link/x").result()


def test_the_root_in_the_locals_is_the_dispatchers_whatever_the_event_says(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    rigger = Rigger()
    install(rigger, root)
    with rigger:
        for event in ("start_test", "finish_test", READY_EVENT):
            got = rigger.fire_hook(event, test_name="t", artifacts_root="/").result()
            assert isinstance(got["artifacts_root"], TrustedRoot), event
            assert got["artifacts_root"] == str(root.absolute())
        with pytest.raises(ValueError, match="outside the artifacts root"):
            rigger.fire_hook(READY_EVENT, test_name="t", artifact_path="/etc").result()


def test_artifacts_ready_carries_the_run_id_of_its_finish_test(tmp_path: Path) -> None:
    rigger = Rigger()
    install(rigger, tmp_path / "root")
    seen: list[tuple[str, object]] = []

    def ready(test_name: str, run_id: object = None) -> None:
        seen.append((test_name, run_id))

    rigger.register_hook_callback(READY_EVENT, "post", ready)
    with rigger:
        rigger.fire_hook("finish_test", test_name="t1", run_id="r1", test_result="passed")
        rigger.fire_hook("finish_test", test_name="t2", test_result="passed")
    # stop() ran the artifacts_ready events the finish_tests fired
    assert seen == [("t1", "r1"), ("t2", None)]
