"""Events nothing binds, and plugins no instance uses: said once, never silent."""

from __future__ import annotations

import logging

import pytest

from rigger_mp import Rigger, RiggerBasePlugin
from rigger_mp.core.plans import MAX_UNBOUND_NAMED


class Starter(RiggerBasePlugin):
    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_test", self.start_test)

    def start_test(self) -> None:
        pass


def unbound_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "binds" in r.getMessage()]


def test_an_event_nothing_binds_is_logged_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    rigger = Rigger({"plugins": {"s": {"plugin": "starter"}}})
    rigger.register_plugin(Starter, "starter")
    rigger.register_hook_callback("finish_test", "post", lambda: None)
    caplog.set_level(logging.WARNING, "rigger_mp")
    with rigger:
        for name in ("strat_test", "strat_test", "start_test", "finish_test", "strat_test"):
            rigger.fire_hook(name).result(10)
        assert rigger.stats()["bound_events"] == ["finish_test", "start_test"]
    lines = unbound_lines(caplog)
    assert len(lines) == 1, lines
    assert "no plugin or callback binds 'strat_test'" in lines[0]


def test_the_names_logged_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "rigger_mp")
    with Rigger() as rigger:
        tasks = [rigger.fire_hook(f"typo{i}") for i in range(MAX_UNBOUND_NAMED + 50)]
        for task in tasks:
            task.result(10)
    lines = unbound_lines(caplog)
    assert len(lines) == MAX_UNBOUND_NAMED + 1
    assert lines[-1] == (
        f"more than {MAX_UNBOUND_NAMED} event names that nothing binds; "
        "no more are logged"
    )


def test_a_registered_plugin_no_instance_uses_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "rigger_mp")
    rigger = Rigger({"plugins": {"used": {"plugin": "starter"}}})
    rigger.register_plugin(Starter, "starter")
    rigger.register_plugin(type("Forgotten", (Starter,), {}), "forgotten")
    with rigger:
        pass
    lines = [r.getMessage() for r in caplog.records if "registered but" in r.getMessage()]
    assert lines == [
        "plugin 'forgotten' is registered but no instance in <mapping> uses it, "
        "so it never runs (add plugins: {<instance>: {plugin: forgotten}} to the config)"
    ]
