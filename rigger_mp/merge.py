"""Merging namespace updates: the one rule every stage of every event uses.

The main process, the pool side and compat merge with it alike, so it belongs to no role.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any


def recursive_update(
    target: MutableMapping[str, Any], updates: Mapping[str, Any] | None
) -> MutableMapping[str, Any]:
    """Merge ``updates`` into ``target`` in place and return ``target``.

    Nested mappings merge key by key, a list extends a list, anything else replaces.
    Mappings and lists taken from ``updates`` are copied, so later merges never write
    into a caller's data.
    """
    if not updates:
        return target
    for key, value in updates.items():
        current = target.get(key)
        if isinstance(value, Mapping):
            if isinstance(current, MutableMapping):
                recursive_update(current, value)
            else:
                target[key] = recursive_update({}, value)
        elif isinstance(value, list):
            if isinstance(current, list):
                current.extend(value)
            else:
                target[key] = list(value)
        else:
            target[key] = value
    return target
