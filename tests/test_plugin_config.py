"""Plugin instance keys are checked against what the plugin class declares.

A declared plugin (every built-in) rejects an unknown key, naming the file, the instance,
the key, its line and the nearest known key, and a key of the wrong type, in ``start()``
and in ``rigger-mp serve --check``; a plugin that declares nothing accepts any key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from rigger_mp import ConfigError, Rigger, RiggerBasePlugin
from rigger_mp.core.plugin import ConfigKeys
from rigger_mp.core.plugin_config import key_line, matches, type_names
from tests.test_cli import rigger_mp

ARCHIVE_TYPO = """\
server_port: 0
plugins:
  log:
    plugin: testlog
  archiver:
    plugin: archive
    format: gz
    levle: 9
"""


class Declared(RiggerBasePlugin):
    """A third-party plugin that declares its keys."""

    config_keys: ClassVar[ConfigKeys] = {"colour": str, "ratio": float, "limit": (int, type(None))}


class Undeclared(RiggerBasePlugin):
    """A third-party plugin written before ``config_keys`` existed."""


def start_fails(config: Any, **plugins: type[RiggerBasePlugin]) -> str:
    """Start a Rigger on ``config``; return the ConfigError's message."""
    rigger = Rigger(config)
    for name, cls in plugins.items():
        rigger.register_plugin(cls, name)
    with pytest.raises(ConfigError) as caught:
        rigger.start()
    return str(caught.value)


def test_typo_in_a_builtin_instance_key_fails_start_naming_file_key_line_and_suggestion(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text(ARCHIVE_TYPO)
    message = start_fails(str(path))
    assert message == (
        f"{path}: instance 'archiver' (plugin archive): unknown key 'levle' on line 8; "
        "did you mean 'level'?"
    )


def test_the_same_config_without_the_typo_starts(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text(ARCHIVE_TYPO.replace("levle", "level") + "    background: false\n")
    rigger = Rigger(str(path)).start()
    try:
        assert set(rigger.instances) == {"log", "archiver"}
    finally:
        rigger.stop()


def test_enabled_typo_is_caught_with_the_instance_key_suggested(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text("plugins:\n  log:\n    plugin: testlog\n    enabeld: false\n")
    message = start_fails(str(path))
    assert message == (
        f"{path}: instance 'log' (plugin testlog): unknown key 'enabeld' on line 4; "
        "did you mean 'enabled'?"
    )


def test_a_mapping_config_names_the_config_and_no_line() -> None:
    config = {"plugins": {"rep": {"plugin": "report", "max_test": 5}}}
    assert start_fails(config) == (
        "the config: instance 'rep' (plugin report): unknown key 'max_test'; "
        "did you mean 'max_tests'?"
    )


def test_an_unknown_key_with_no_near_match_lists_the_known_keys() -> None:
    config = {"plugins": {"d": {"plugin": "declared", "zzzzzz": 1}}}
    assert start_fails(config, declared=Declared) == (
        "the config: instance 'd' (plugin declared): unknown key 'zzzzzz'; "
        "known keys: background, colour, enabled, limit, plugin, ratio"
    )


def test_a_disabled_instance_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text("plugins:\n  a:\n    plugin: archive\n    enabled: false\n    fromat: xz\n")
    assert "unknown key 'fromat' on line 5; did you mean 'format'?" in start_fails(str(path))


def test_wrong_type_names_key_type_wanted_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text(
        "plugins:\n  archiver:\n    plugin: archive\n    background: false\n"
        "    remove_originals: 'yes'\n"
    )
    assert start_fails(str(path)) == (
        f"{path}: instance 'archiver' (plugin archive): key 'remove_originals' on line 5 "
        "must be bool, not str ('yes')"
    )


def test_wrong_type_in_a_third_party_declaration() -> None:
    config = {"plugins": {"d": {"plugin": "declared", "limit": "ten"}}}
    assert start_fails(config, declared=Declared) == (
        "the config: instance 'd' (plugin declared): key 'limit' must be int or null, "
        "not str ('ten')"
    )


def test_declared_third_party_keys_of_the_right_type_pass() -> None:
    config = {"plugins": {"d": {"plugin": "declared", "colour": "red", "ratio": 2, "limit": None}}}
    rigger = Rigger(config)
    rigger.register_plugin(Declared, "declared")
    rigger.start()
    try:
        assert rigger.instances["d"].data["ratio"] == 2
    finally:
        rigger.stop()


def test_undeclared_third_party_plugin_keys_pass(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text("plugins:\n  u:\n    plugin: undeclared\n    levle: 9\n    anything: [1]\n")
    rigger = Rigger(str(path))
    rigger.register_plugin(Undeclared, "undeclared")
    rigger.start()
    try:
        assert rigger.instances["u"].data["levle"] == 9
    finally:
        rigger.stop()


@pytest.mark.parametrize(
    ("value", "wanted", "ok"),
    [
        (True, int, False),
        (3, int, True),
        (3, float, True),
        (3.5, float, True),
        (False, float, False),
        (True, bool, True),
        (None, (str, type(None)), True),
        (None, str, False),
        (3.5, int, False),
    ],
)
def test_matches_treats_bool_as_not_a_number(value: Any, wanted: Any, ok: bool) -> None:
    assert matches(value, wanted) is ok


def test_type_names() -> None:
    assert type_names((str, type(None))) == "str or null"
    assert type_names(int) == "int"


def test_key_line_is_none_when_the_file_or_the_key_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text(ARCHIVE_TYPO)
    assert key_line(str(path), "archiver", "levle") == 8
    assert key_line(str(path), "archiver", "nope") is None
    assert key_line(str(path), "nobody", "levle") is None
    assert key_line(str(tmp_path / "gone.yaml"), "archiver", "levle") is None


@pytest.mark.parametrize("check", [["--check"], []], ids=["check", "serve"])
def test_serve_check_rejects_a_typo_naming_file_instance_key_line_and_suggestion(
    tmp_path: Path, check: list[str]
) -> None:
    """``serve -c FILE`` says it as ``serve --check`` does (it used to say "the config",
    with no line: it starts a Rigger on FILE's mapping)."""
    path = tmp_path / "rigger.yaml"
    path.write_text(ARCHIVE_TYPO)
    done = rigger_mp("serve", *check, "-c", str(path))
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines()[-1] == (
        f"rigger-mp serve: config error: {path}: instance 'archiver' (plugin archive): "
        "unknown key 'levle' on line 8; did you mean 'level'?"
    )
    assert done.stdout == ""


def test_serve_check_rejects_a_wrong_type_and_accepts_the_fixed_file(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text("plugins:\n  rep:\n    plugin: report\n    max_tests: many\n")
    done = rigger_mp("serve", "--check", "-c", str(path))
    assert done.returncode == 2, done
    assert (
        f"{path}: instance 'rep' (plugin report): key 'max_tests' on line 4 must be int, "
        "not str ('many')" in done.stderr
    )
    path.write_text("plugins:\n  rep:\n    plugin: report\n    max_tests: 10\n")
    done = rigger_mp("serve", "--check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert f"{path}: ok; 1 plugin instance(s): rep (report)" in done.stdout
