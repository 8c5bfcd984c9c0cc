"""Plugins: registration, instances from config, lookup by name or import path."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import pytest

from rigger_mp import PluginError, Rigger, RiggerBasePlugin


class Recorder(RiggerBasePlugin):
    """Records each call with its instance ident and the config it was given."""

    initialized: ClassVar[list[str]] = []

    def plugin_initialize(self) -> None:
        Recorder.initialized.append(self.ident)
        self.register_plugin_hook("ping")  # the method named like the event
        self.register_plugin_hook("renamed", self.other)

    def ping(self) -> tuple[None, dict[str, Any]]:
        return None, {"pinged": [self.ident]}

    def other(self) -> tuple[None, dict[str, Any]]:
        return None, {"other": [self.data.get("colour")]}


class Configurable(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("work")
        self.settings: dict[str, Any] = {}

    def configure(self, *args: Any, **kwargs: Any) -> None:
        self.settings = kwargs
        self.configured = True

    @RiggerBasePlugin.check_configured
    def work(self, item: str) -> tuple[None, dict[str, Any]]:
        return None, {"worked": [(item, self.settings.get("tag"))]}


@pytest.fixture(autouse=True)
def _reset() -> None:
    Recorder.initialized.clear()


def test_one_class_backs_many_instances_and_disabled_never_run() -> None:
    config = {
        "plugins": {
            "a": {"plugin": "rec", "colour": "red"},
            "b": {"plugin": "rec", "enabled": True, "colour": "blue"},
            "off": {"plugin": "rec", "enabled": False},
        }
    }
    rigger = Rigger(config)
    rigger.register_plugin(Recorder, "rec")
    with rigger:
        rigger.fire_hook("ping").result()
        result = rigger.fire_hook("renamed").result()
    assert sorted(Recorder.initialized) == ["a", "b"]
    assert sorted(rigger.global_data["pinged"]) == ["a", "b"]
    assert sorted(result["other"]) == ["blue", "red"]
    assert rigger.get_instance_obj("off") is None
    obj = rigger.get_instance_obj("a")
    assert isinstance(obj, Recorder)
    assert obj.ident == "a"
    assert rigger.get_instance_data("b") == {"plugin": "rec", "enabled": True, "colour": "blue"}


def test_plugin_by_import_path() -> None:
    config = {"plugins": {"r": {"plugin": f"{__name__}:Recorder"}}}
    with Rigger(config) as rigger:
        rigger.fire_hook("ping").result()
    assert rigger.global_data["pinged"] == ["r"]


def test_unknown_plugin_names_instance_and_plugin() -> None:
    rigger = Rigger({"plugins": {"mine": {"plugin": "nosuch"}}})
    rigger.register_plugin(Recorder, "rec")
    with pytest.raises(PluginError) as info:
        rigger.start()
    assert "'mine'" in str(info.value)
    assert "'nosuch'" in str(info.value)
    assert "rec" in str(info.value)
    assert not rigger.running


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:Nope", "has no attribute 'Nope'"),
        (f"{__name__}:test_plugin_by_import_path", "not a subclass of RiggerBasePlugin"),
        (":Thing", "not of the form"),
    ],
)
def test_bad_import_paths(path: str, fragment: str) -> None:
    rigger = Rigger({"plugins": {"inst": {"plugin": path}}})
    with pytest.raises(PluginError) as info:
        rigger.start()
    assert fragment in str(info.value)
    assert "'inst'" in str(info.value)


def test_plugin_initialize_failure_names_instance() -> None:
    class Broken(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            raise ValueError("no disk")

    rigger = Rigger({"plugins": {"b": {"plugin": "broken"}}})
    rigger.register_plugin(Broken, "broken")
    with pytest.raises(PluginError, match=r"instance 'b'.*ValueError: no disk"):
        rigger.start()


def test_register_plugin_rejects_non_plugins_and_taken_names() -> None:
    rigger = Rigger()
    with pytest.raises(PluginError):
        rigger.register_plugin(dict, "d")  # type: ignore[arg-type]
    rigger.register_plugin(Recorder, "rec")
    rigger.register_plugin(Recorder, "rec")  # the same class again is harmless
    with pytest.raises(PluginError, match="already taken"):
        rigger.register_plugin(Configurable, "rec")


def test_hook_name_without_method_is_a_clear_error() -> None:
    class NoMethod(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("missing_method")

    rigger = Rigger({"plugins": {"n": {"plugin": "n"}}})
    rigger.register_plugin(NoMethod, "n")
    with pytest.raises(PluginError, match="no method named 'missing_method'"):
        rigger.start()


def test_second_binding_of_an_event_replaces_the_first() -> None:
    class Twice(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev", lambda: (None, {"first": True}))
            self.register_plugin_hook("ev", lambda: (None, {"second": True}))

    rigger = Rigger({"plugins": {"t": {"plugin": "t"}}})
    rigger.register_plugin(Twice, "t")
    with rigger:
        result = rigger.fire_hook("ev").result()
    assert "second" in result and "first" not in result


def test_check_configured_and_configure_plugin() -> None:
    rigger = Rigger({"plugins": {"c": {"plugin": "conf"}}})
    rigger.register_plugin(Configurable, "conf")
    with rigger:
        rigger.fire_hook("work", item="before").result()
        rigger.configure_plugin("c", tag="T")
        rigger.fire_hook("work", item="after").result()
        with pytest.raises(PluginError, match="no enabled instance named 'zzz'"):
            rigger.configure_plugin("zzz")
    assert rigger.global_data["worked"] == [("after", "T")]


def test_hook_bound_after_start_is_seen_by_later_events() -> None:
    rigger = Rigger({"plugins": {"r": {"plugin": "rec"}}})
    rigger.register_plugin(Recorder, "rec")
    with rigger:
        assert "late" not in rigger.fire_hook("late_event").result()
        obj = rigger.get_instance_obj("r")
        assert obj is not None
        obj.register_plugin_hook("late_event", lambda: ({"late": True}, None))
        assert rigger.fire_hook("late_event").result()["late"] is True


def test_hook_bound_after_start_replaces_the_cached_plan_of_its_event() -> None:
    rigger = Rigger({"plugins": {"r": {"plugin": "rec"}}})
    rigger.register_plugin(Recorder, "rec")
    rigger.register_hook_callback("late_event", "pre", lambda: None)  # so its plan is cached
    with rigger:
        assert "late" not in rigger.fire_hook("late_event").result()
        assert rigger.stats()["plans_cached"] == 1
        obj = rigger.get_instance_obj("r")
        assert obj is not None
        obj.register_plugin_hook("late_event", lambda: ({"late": True}, None))
        assert rigger.fire_hook("late_event").result()["late"] is True


def test_riggerlib_style_parse_config_and_log_message(caplog: pytest.LogCaptureFixture) -> None:
    rigger = Rigger({"plugins": {"r": {"plugin": "rec"}}})
    rigger.register_plugin(Recorder, "rec")
    assert rigger.initialized is False
    rigger.parse_config()
    try:
        assert rigger.initialized is True
        assert rigger.config == {"plugins": {"r": {"plugin": "rec"}}}
        with caplog.at_level(logging.INFO, logger="rigger_mp"):
            rigger.log_message("hello from a port")
        assert "hello from a port" in caplog.text
    finally:
        rigger.stop()
