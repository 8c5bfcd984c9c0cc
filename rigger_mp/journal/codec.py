"""Event data as the journal stores it: marshal when the value is plain data, else pickle.

The format marker (``marshal``, ``pickle``, ``fire``, or ``json`` from older files) is
stored beside the bytes. An in-process fire's data is marshalled when that gives back
exactly what went in: :func:`marshal.dumps` takes only the exact built-in types (dict,
list, tuple, set, str, bytes, int, float, bool, None, ...), refusing an enum, a str
subclass or an OrderedDict, which are pickled instead. It is one C call (0.3 us for a
small dict, against 2 to 5 us for the exactness walk plus ``json.dumps`` it replaces),
keeps tuples, int keys and NaN, and loading it runs no code (unlike pickle), so
``rigger-mp journal show`` prints it without ``--unpickle``: as JSON when it is plain
JSON, else as its ``repr``. Its format (:data:`MARSHAL_VERSION`, the same since Python
3.4) is not promised across Python versions: the journal is replayed by the same
Python after a restart; a row that no longer decodes is logged and dead-lettered at
the start that finds it, with the error. A TCP or HTTP fire is stored as the message line it
came in (``fire``: the server process already has those bytes and validated them), and
its ``data`` is taken out of it at replay.
"""

from __future__ import annotations

import json
import marshal
import math
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import JournalEncodeError

MARSHAL = "marshal"
JSON = "json"
"""Plain JSON: what earlier versions stored for plain data (still read)."""
PICKLE = "pickle"
FIRE_LINE = "fire"
"""A fire message line, as received (JSON); the event's data is its ``data`` object."""
FORMATS = (MARSHAL, JSON, PICKLE, FIRE_LINE)
MARSHAL_VERSION = 4

_SCALARS = (str, int, bool, type(None))
_MAX_DEPTH = 200


def plain_json(value: object, depth: int = 0) -> bool:
    """Whether JSON round-trips ``value`` unchanged (exact types only): how ``journal
    show`` prints marshalled data (the dispatcher's fires no longer check it)."""
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
        elif not plain_json(item, depth + 1):
            return False
    return True


def encode(hook_name: str, data: Mapping[str, Any]) -> tuple[str, bytes]:
    """``(format, bytes)`` of an event's data; :class:`JournalEncodeError` if neither works."""
    if type(data) is dict:
        try:  # ValueError: a type marshal does not take exactly (or nested too deep)
            return MARSHAL, marshal.dumps(data, MARSHAL_VERSION)
        except ValueError:
            pass
    try:
        return PICKLE, pickle.dumps(dict(data), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        for key, value in data.items():
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                raise JournalEncodeError(
                    f"event {hook_name!r}: argument {key!r} ({type(value).__name__}) is "
                    f"neither plain data nor picklable, so it cannot be journaled: {exc}"
                ) from exc
        raise JournalEncodeError(
            f"event {hook_name!r}: its data cannot be pickled: {exc}"
        ) from exc


def encode_rows(
    events: Iterable[tuple[str, str, Mapping[str, Any]]],
) -> list[tuple[str, str, str, bytes]]:
    """``(tid, hook, format, bytes)`` rows of ``(tid, hook, data)`` events: :func:`encode`
    each, with its marshal case inline (a ``fire_many`` batch: one C call per event)."""
    dumps, version = marshal.dumps, MARSHAL_VERSION
    rows = []
    for tid, hook_name, data in events:
        if type(data) is dict:
            try:
                rows.append((tid, hook_name, MARSHAL, dumps(data, version)))
                continue
            except ValueError:
                pass
        rows.append((tid, hook_name, *encode(hook_name, data)))
    return rows


def decode(fmt: str, blob: bytes) -> dict[str, Any]:
    """The event data back from its stored form (unpickling runs the pickle's imports)."""
    if fmt == MARSHAL:
        value = marshal.loads(blob)
    elif fmt == JSON:
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
