"""Event data as the journal stores it: JSON when the value is plain JSON, else pickle.

The format marker (``json``, ``pickle`` or ``fire``) is stored beside the bytes. JSON is
chosen only when it gives back exactly what went in (dicts with str keys, lists, str,
int, finite float, bool, None, of those exact types): a tuple, an int key or an enum
would come back changed, so it is pickled instead. A TCP or HTTP fire is stored as the
message line it came in (``fire``: the server process already has those bytes and
validated them), and its ``data`` is taken out of it at replay.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from typing import Any

from .errors import JournalEncodeError

JSON = "json"
PICKLE = "pickle"
FIRE_LINE = "fire"
"""A fire message line, as received (JSON); the event's data is its ``data`` object."""
FORMATS = (JSON, PICKLE, FIRE_LINE)

_SCALARS = (str, int, bool, type(None))
_MAX_DEPTH = 200
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _plain(value: object, depth: int) -> bool:
    """Whether JSON round-trips ``value`` unchanged (exact types only).

    Scalars inside a dict or list are checked inline, not by a call each: event data is
    mostly a flat dict of them, and this runs for every in-process fire.
    """
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        items: Any = value.items()  # type: ignore[attr-defined]
    elif kind is list:
        items = enumerate(value)  # type: ignore[arg-type]
    else:
        return False
    for key, item in items:
        if kind is dict and type(key) is not str:
            return False
        sort = type(item)
        if sort in _SCALARS:
            continue
        if sort is float:
            if not math.isfinite(item):
                return False
        elif not _plain(item, depth + 1):
            return False
    return True


def encode(hook_name: str, data: Mapping[str, Any]) -> tuple[str, bytes]:
    """``(format, bytes)`` of an event's data; :class:`JournalEncodeError` if neither works."""
    if type(data) is dict and _plain(data, 0):
        return JSON, _dumps(data).encode()
    try:
        return PICKLE, pickle.dumps(dict(data), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        for key, value in data.items():
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                raise JournalEncodeError(
                    f"event {hook_name!r}: argument {key!r} ({type(value).__name__}) is "
                    f"neither JSON nor picklable, so it cannot be journaled: {exc}"
                ) from exc
        raise JournalEncodeError(
            f"event {hook_name!r}: its data cannot be pickled: {exc}"
        ) from exc


def decode(fmt: str, blob: bytes) -> dict[str, Any]:
    """The event data back from its stored form (unpickling runs the pickle's imports)."""
    if fmt == JSON:
        value = json.loads(blob)
    elif fmt == FIRE_LINE:
        message = json.loads(blob)
        if not isinstance(message, dict):
            raise ValueError(f"stored fire message is a {type(message).__name__}, not an object")
        value = message.get("data", {})
    elif fmt == PICKLE:
        value = pickle.loads(blob)
    else:
        raise ValueError(f"unknown data format {fmt!r}")
    if not isinstance(value, dict):
        raise ValueError(f"stored data is a {type(value).__name__}, not a mapping")
    return value
