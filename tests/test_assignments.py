"""The modern Rigger never ignores an assignment riggerlib programs make (issue: porting)."""

from __future__ import annotations

from typing import Any

import pytest

from rigger_mp import Rigger, RiggerBasePlugin


class Reader(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("read", self.read)
        self.register_plugin_hook("boom", self.boom)
        self.register_plugin_hook("swap", self.swap)

    def read(self, colour: str) -> tuple[dict[str, Any], None]:
        return {"seen": colour}, None

    def boom(self) -> None:
        raise ValueError("boom")

    def swap(self) -> None:
        rigger = self._rigger
        assert isinstance(rigger, Rigger)
        rigger.global_data = {"colour": "from a hook"}


def make(config: dict[str, Any] | None = None) -> Rigger:
    rigger = Rigger(config if config is not None else {"plugins": {"r": {"plugin": "reader"}}})
    rigger.register_plugin(Reader, "reader")
    return rigger


def test_global_data_assigned_before_start_is_the_namespace() -> None:
    rigger = make()
    rigger.global_data = {"colour": "red"}
    with rigger:
        assert rigger.fire_hook("read").result(10)["seen"] == "red"


def test_global_data_assigned_while_running_replaces_the_namespace_in_order() -> None:
    rigger = make()
    with rigger:
        held = rigger.global_data
        rigger.global_data = {"colour": "blue"}
        assert rigger.fire_hook("read").result(10)["seen"] == "blue"
        rigger.global_data = {"colour": "green"}
        assert rigger.fire_hook("read").result(10)["seen"] == "green"
        assert rigger.global_data is held  # one dict: every component sees the new values
        assert held == {"colour": "green"}


def test_global_data_assigned_from_a_hook_takes_effect_for_the_next_event() -> None:
    rigger = make()
    rigger.global_data = {"colour": "old"}
    with rigger:
        rigger.fire_hook("swap").result(10)
        assert rigger.fire_hook("read").result(10)["seen"] == "from a hook"


@pytest.mark.parametrize("when", ["before", "after"])
def test_squash_exceptions_assigned_is_honoured(when: str) -> None:
    rigger = make()
    if when == "before":
        rigger.squash_exceptions = True
    with rigger:
        if when == "after":
            assert rigger.squash_exceptions is False  # the config's default
            rigger.squash_exceptions = True
        assert rigger.squash_exceptions is True
        rigger.fire_hook("boom").result(10)  # squashed: the event completes
        rigger.squash_exceptions = False
        with pytest.raises(ValueError, match="boom"):
            rigger.fire_hook("boom").result(10)


def test_config_assigned_before_start_is_read_by_start() -> None:
    rigger = make({})
    rigger.config = {"plugins": {"r": {"plugin": "reader"}}}
    with rigger:
        assert list(rigger.instances) == ["r"]
        assert rigger.config == {"plugins": {"r": {"plugin": "reader"}}}


def test_config_assigned_after_start_raises_naming_the_modern_way() -> None:
    rigger = make()
    with rigger, pytest.raises(AttributeError, match="configure_plugin"):
        rigger.config = {}


def test_initialized_is_read_only_and_says_to_call_start() -> None:
    rigger = make()
    with pytest.raises(AttributeError, match="start"):
        rigger.initialized = True
    assert rigger.initialized is False
    with rigger:
        assert rigger.initialized is True
