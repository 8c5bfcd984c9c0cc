"""Config: YAML path, mapping or defaults; every fault names the source and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigger_mp import ConfigError, PluginError, Rigger, load_config


def test_defaults() -> None:
    config = load_config(None)
    assert config.squash_exceptions is False
    assert config.threaded is False
    assert config.server_enabled is False
    assert config.server_address == "127.0.0.1"
    assert config.server_port == 21212
    assert config.plugins == {}


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text(
        "squash_exceptions: true\n"
        "threaded: true\n"
        "server_port: 0\n"
        "plugins:\n"
        "  test:\n"
        "    plugin: test\n"
        "    enabled: false\n"
        "    colour: blue\n"
    )
    config = load_config(path)
    assert config.squash_exceptions is True
    assert config.threaded is True
    assert config.server_port == 0
    instance = config.plugins["test"]
    assert (instance.plugin, instance.enabled, instance.background) == ("test", False, False)
    assert instance.data["colour"] == "blue"
    assert config.source == str(path)


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path).plugins == {}


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("threaded: true\nplugins:\n  a: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 4" in message or "line 3" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.yaml"
    path.write_text("threaded: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"threadded": True}, "unknown key 'threadded'"),
        ({"threaded": "yes"}, "threaded: expected a boolean"),
        ({"server_port": 70000}, "server_port: expected an integer from 0 to 65535"),
        ({"server_port": True}, "server_port: expected an integer"),
        ({"workers": 0}, "workers: expected a positive integer"),
        ({"start_method": "thread"}, "start_method: expected one of"),
        ({"plugins": ["a"]}, "plugins: expected a mapping"),
        ({"plugins": {"a": "test"}}, "plugins.a: expected a mapping"),
        ({"plugins": {"a": {"enabled": True}}}, "plugins.a: missing required key 'plugin'"),
        ({"plugins": {"a": {"plugin": "t", "enabled": 1}}}, "plugins.a.enabled: expected a"),
        ({"plugins": {"a": {"plugin": 3}}}, "plugins.a.plugin: expected a non-empty string"),
        ({"plugins": {3: {"plugin": "t"}}}, "instance names must be non-empty strings"),
        ({"http_allowed_hosts": "ci.example"}, "http_allowed_hosts: expected a list of host"),
        ({"http_allowed_hosts": ["ok", ""]}, "http_allowed_hosts: expected a list of host"),
        ({"http_allowed_hosts": [3]}, "http_allowed_hosts: expected a list of host"),
    ],
)
def test_bad_values_name_the_key(config: dict[object, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert "<mapping>" in str(info.value)


def test_bad_key_in_file_names_file_line_and_the_key_meant(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("threaded: false\nsquash_exception: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: unknown key 'squash_exception' on line 2; did you mean 'squash_exceptions'?"
    )


def test_a_key_like_no_other_lists_the_known_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"zzzzqqqq": 1})
    assert "unknown key 'zzzzqqqq'; known keys: auth_timeout, " in str(info.value)
    assert "did you mean" not in str(info.value)


def test_a_plugin_that_cannot_be_imported_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rigger.yaml"
    path.write_text("plugins:\n  thing:\n    enabled: true\n    plugin: nomodule_here:Thing\n")
    with pytest.raises(PluginError) as info:
        Rigger(str(path)).start()
    assert str(info.value).startswith(f"{path}, line 4: instance 'thing': plugin ")
    assert "cannot import module 'nomodule_here'" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_config_is_read_at_start_and_a_bad_one_leaves_nothing_running() -> None:
    rigger = Rigger({"threaded": "no"})
    with pytest.raises(ConfigError):
        rigger.start()
    assert not rigger.running
