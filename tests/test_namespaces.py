"""Namespaces: what each callable receives and how its returned updates merge."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import pytest

from rigger_mp import HookArgumentError, HookReturnError, Rigger, RiggerBasePlugin


class SeedTest(RiggerBasePlugin):
    """The seed's per-test log plugin, recording what each stage received."""

    seen: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_test", self.start_test)
        self.register_plugin_hook("finish_test", self.finish_test)

    def start_test(self, test_name: str, test_location: str, artifact_path: str) -> None:
        SeedTest.seen.append(
            (
                "hook",
                {
                    "test_name": test_name,
                    "test_location": test_location,
                    "artifact_path": artifact_path,
                },
            )
        )
        with open(f"{artifact_path}-{self.ident}.log", "w") as log:
            log.write(test_name + "\n")

    def finish_test(self, artifact_path: str, test_result: str) -> None:
        with open(f"{artifact_path}-{self.ident}.log", "a") as log:
            log.write(test_result + "\n")


def test_the_eight_steps_of_the_seed_example(tmp_path: Path) -> None:
    SeedTest.seen.clear()
    seen_pre: list[dict[str, Any]] = []
    seen_post: list[dict[str, Any]] = []

    def pre(test_name: str, test_location: str) -> tuple[dict[str, Any], None]:
        # Steps 1-2: the locals hold what was fired; the pre callback gets both names.
        seen_pre.append({"test_name": test_name, "test_location": test_location})
        # Step 3: it adds artifact_path to the locals.
        return {"artifact_path": str(tmp_path / test_location / test_name)}, None

    def post(test_name: str, test_location: str, artifact_path: str) -> None:
        seen_post.append(
            {"test_name": test_name, "test_location": test_location, "artifact_path": artifact_path}
        )

    rigger = Rigger({"plugins": {"test": {"plugin": "test", "enabled": True}}})
    rigger.register_plugin(SeedTest, "test")
    rigger.register_hook_callback("start_test", "pre", pre)
    rigger.register_hook_callback("start_test", "post", post)
    (tmp_path / "var").mkdir()
    with rigger:
        result = rigger.fire_hook("start_test", test_name="my_test", test_location="var").result()
    expected_path = str(tmp_path / "var" / "my_test")
    assert seen_pre == [{"test_name": "my_test", "test_location": "var"}]
    # Step 4: the locals now hold artifact_path; step 5: the hook gets all three.
    assert SeedTest.seen == [
        (
            "hook",
            {"test_name": "my_test", "test_location": "var", "artifact_path": expected_path},
        )
    ]
    # Steps 6-8: the hook made no updates; the post callback gets all three.
    assert seen_post == [
        {"test_name": "my_test", "test_location": "var", "artifact_path": expected_path}
    ]
    assert result == {
        "test_name": "my_test",
        "test_location": "var",
        "artifact_path": expected_path,
    }
    assert (tmp_path / "var" / "my_test-test.log").read_text() == "my_test\n"


def _rigger_with_hook(hook: Any, config: dict[str, Any] | None = None) -> Rigger:
    class Plugin(RiggerBasePlugin):
        def plugin_initialize(self) -> None:
            self.register_plugin_hook("ev", hook)

    rigger = Rigger({"plugins": {"p": {"plugin": "p"}}, **(config or {})})
    rigger.register_plugin(Plugin, "p")
    return rigger


def test_locals_override_globals_and_only_named_parameters_are_passed() -> None:
    received: dict[str, Any] = {}

    def hook(a: int, b: int, c: int = 3) -> None:
        received.update(a=a, b=b, c=c)

    rigger = _rigger_with_hook(hook)
    rigger.global_data.update(a=100, b=200, unrelated="x")
    with rigger:
        rigger.fire_hook("ev", a=1, extra="ignored").result()
    assert received == {"a": 1, "b": 200, "c": 3}


def test_var_keyword_parameter_receives_the_whole_merged_view() -> None:
    received: dict[str, Any] = {}

    def hook(a: int, **kwargs: Any) -> None:
        received.update(kwargs, a=a)

    rigger = _rigger_with_hook(hook)
    rigger.global_data.update(a=0, g=1)
    with rigger:
        rigger.fire_hook("ev", a=5, l=2).result()
    assert received == {"a": 5, "g": 1, "l": 2}


def test_updates_merge_into_locals_and_globals_and_result_overlays_locals() -> None:
    def hook(count: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"count": count + 1, "shared": "local"}, {"shared": "global", "seen": [count]}

    rigger = _rigger_with_hook(hook)
    with rigger:
        first = rigger.fire_hook("ev", count=1).result()
        rigger.fire_hook("ev", count=10).result()
    assert first["count"] == 2
    assert first["shared"] == "local"  # locals overlay globals in the result
    assert rigger.global_data == {"shared": "global", "seen": [1, 10]}
    assert "count" not in rigger.global_data  # event locals die with the event


def test_missing_argument_is_raised_to_the_waiter_naming_callable_and_names() -> None:
    def hook(needed: int, also_needed: int) -> None:
        raise AssertionError("must not be called")

    rigger = _rigger_with_hook(hook)
    with rigger:
        task = rigger.fire_hook("ev", unrelated=1)
        with pytest.raises(HookArgumentError) as info:
            task.result()
        # The thread lives on: the next event runs.
        assert rigger.fire_hook("other").result() == {}
    message = str(info.value)
    assert "hook 'ev' of instance 'p'" in message
    assert "needed, also_needed" in message
    assert rigger.stats()["events"]["failed"] == 1


def test_missing_argument_is_logged_when_squashed(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def hook(needed: int) -> None:
        calls.append(needed)

    rigger = _rigger_with_hook(hook, {"squash_exceptions": True})
    with caplog.at_level(logging.ERROR, logger="rigger_mp"), rigger:
        result = rigger.fire_hook("ev", other=1).result()
    assert result == {"other": 1}
    assert calls == []
    assert "missing required argument(s) needed" in caplog.text
    assert rigger.stats()["events"]["done"] == 1


@pytest.mark.parametrize("bad", [5, "text", (1, 2, 3), ({"a": 1},), ([1], None), (None, 7)])
def test_bad_return_values_are_errors_naming_the_callable(bad: Any) -> None:
    rigger = _rigger_with_hook(lambda: bad)
    with rigger:
        with pytest.raises(HookReturnError) as info:
            rigger.fire_hook("ev").result()
        assert rigger.fire_hook("ev2").result() == {}
    assert "hook 'ev' of instance 'p'" in str(info.value)
    assert "expected None or a pair" in str(info.value)


def test_pair_with_nones_and_lists_of_two_are_accepted() -> None:
    rigger = _rigger_with_hook(lambda: [None, {"g": 1}])
    with rigger:
        assert rigger.fire_hook("ev").result() == {"g": 1}


def test_positional_only_parameters_are_refused_at_registration() -> None:
    def hook(a: int, /) -> None:
        return None

    rigger = _rigger_with_hook(hook)
    with pytest.raises(Exception, match="positional-only"):
        rigger.start()


def test_callbacks_of_a_stage_see_the_namespace_as_the_stage_began() -> None:
    seen: list[Any] = []

    def pre_a(value: int) -> tuple[dict[str, Any], None]:
        seen.append(value)
        return {"value": value + 1}, None

    def pre_b(value: int) -> tuple[dict[str, Any], None]:
        seen.append(value)
        return {"other": value}, None

    def post(value: int, other: int) -> None:
        seen.append((value, other))

    rigger = Rigger()
    rigger.register_hook_callback("ev", "pre", pre_a)
    rigger.register_hook_callback("ev", "pre", pre_b)
    rigger.register_hook_callback("ev", "post", post)
    with rigger:
        rigger.fire_hook("ev", value=1).result()
    assert seen == [1, 1, (2, 1)]
