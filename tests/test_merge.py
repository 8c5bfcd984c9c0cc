"""recursive_update: mappings merge, lists extend, anything else replaces."""

from __future__ import annotations

from typing import Any

from rigger_mp import recursive_update


def test_nested_mappings_merge_key_by_key() -> None:
    target: dict[str, Any] = {"a": {"x": 1, "y": {"deep": 1}}, "b": 2}
    recursive_update(target, {"a": {"y": {"deeper": 2}, "z": 3}})
    assert target == {"a": {"x": 1, "y": {"deep": 1, "deeper": 2}, "z": 3}, "b": 2}


def test_list_extends_list() -> None:
    target: dict[str, Any] = {"items": [1, 2]}
    recursive_update(target, {"items": [3]})
    assert target == {"items": [1, 2, 3]}


def test_other_values_replace() -> None:
    target: dict[str, Any] = {"a": {"x": 1}, "b": [1], "c": "old"}
    recursive_update(target, {"a": 5, "b": "text", "c": None})
    assert target == {"a": 5, "b": "text", "c": None}


def test_mapping_replaces_a_scalar() -> None:
    target: dict[str, Any] = {"a": 1}
    recursive_update(target, {"a": {"x": 1}})
    assert target == {"a": {"x": 1}}


def test_merged_values_are_copies_of_the_updates() -> None:
    update_list = [1]
    update_map = {"inner": [1]}
    target: dict[str, Any] = {}
    recursive_update(target, {"l": update_list, "m": update_map})
    recursive_update(target, {"l": [2], "m": {"inner": [2]}})
    assert update_list == [1]
    assert update_map == {"inner": [1]}
    assert target == {"l": [1, 2], "m": {"inner": [1, 2]}}


def test_none_and_empty_updates_leave_target_alone() -> None:
    target: dict[str, Any] = {"a": 1}
    assert recursive_update(target, None) is target
    assert recursive_update(target, {}) == {"a": 1}
