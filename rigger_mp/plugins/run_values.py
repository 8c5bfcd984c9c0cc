"""The values of a run's events, each checked and bounded: a client's text, numbers,
durations, markers, attachments, captured sections, crash place and environment.

Every value may come from the network: each is checked, cut to a bound and kept as plain
data (the pages escape it where they show it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_TEXT: Final = 1000
"""Longest test name, location, path or reason kept (characters)."""
MAX_SHORT: Final = 200
"""Longest worker id, host name, run id, marker or phase kept (characters)."""
MAX_ITEMS: Final = 64
"""Most markers, sections, attachments and attempts kept per test."""
MAX_NAMES: Final = 256
"""Most distinct hosts and workers named per run."""
SECTION_KINDS: Final = frozenset({"stdout", "stderr", "log"})
DEFAULT_MAX_CAPTURE_BYTES: Final = 256 * 1024
BUCKETS: Final = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0)
"""Upper bounds (seconds) of the duration chart's bars; the last bar is above 300 s."""
CUT_NOTE: Final = "\n[... cut: {key} ({limit:,} bytes) reached]"
"""Ends a cut text (its bytes are not counted against the bound: at most one a text)."""


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """A client's value as a bounded string."""
    return (value if isinstance(value, str) else str(value))[:limit]


def optional_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A client's string, bounded; ``None`` for anything that is not a string."""
    return value[:limit] if isinstance(value, str) else None


def seconds(value: Any) -> float | None:
    """A duration a client sent, if it is a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def count(value: Any, top: int = 1_000_000) -> int | None:
    """A client's non-negative integer, if it is one (and below ``top``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < top:
        return None
    return value


def cut(value: str, limit: int, key: str) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes (a whole character), with a note."""
    if len(value) * 4 <= limit:
        return value
    data = value.encode("utf-8", "replace")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore") + CUT_NOTE.format(key=key, limit=limit)


def bucket(took: float) -> int:
    """The duration chart's bar of ``took`` seconds (see :data:`BUCKETS`)."""
    return next((i for i, top in enumerate(BUCKETS) if took < top), len(BUCKETS))


def size(value: str) -> int:
    """``value``'s length in UTF-8 bytes."""
    return len(value.encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Crash:
    path: str
    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Section:
    when: str
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    size: int | None


@dataclass(frozen=True, slots=True)
class Environment:
    """What ``start_session`` said of the session, each value bounded."""

    python: str | None = None
    platform: str | None = None
    pytest: str | None = None
    plugins: tuple[tuple[str, str], ...] = ()
    command_line: tuple[str, ...] = ()
    host: str | None = None
    worker: str | None = None


def environment(value: Any) -> Environment:
    """An :class:`Environment` from a client's mapping (anything else: an empty one)."""
    if not isinstance(value, Mapping):
        return Environment()
    plugins = value.get("plugins")
    pairs = (
        tuple(
            (text(k, MAX_SHORT), text(v, MAX_SHORT)) for k, v in list(plugins.items())[:MAX_NAMES]
        )
        if isinstance(plugins, Mapping)
        else ()
    )
    args = value.get("command_line")
    return Environment(
        python=optional_text(value.get("python"), MAX_SHORT),
        platform=optional_text(value.get("platform"), MAX_SHORT),
        pytest=optional_text(value.get("pytest"), MAX_SHORT),
        plugins=tuple(sorted(pairs)),
        command_line=tuple(text(a) for a in args[:MAX_ITEMS]) if isinstance(args, list) else (),
        host=optional_text(value.get("host"), MAX_SHORT),
        worker=optional_text(value.get("worker"), MAX_SHORT),
    )


def artifact_path_of(value: Any) -> str | None:
    """A test's artifact directory as an event gave it (checked where it is used)."""
    return value if isinstance(value, str) and 0 < len(value) <= 4096 else None


def markers_of(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(text(m, MAX_SHORT) for m in value[:MAX_ITEMS] if isinstance(m, str))


def attachments_of(value: Any) -> tuple[Attachment, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value[:MAX_ITEMS]:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
            out.append(Attachment(text(item["name"]), count(item.get("size"), 1 << 62)))
    return tuple(out)


def sections_of(value: Any) -> list[Section]:
    if not isinstance(value, list):
        return []
    out = []
    for item in value[:MAX_ITEMS]:
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            kind = item.get("kind")
            out.append(
                Section(
                    text(item.get("when") or "", MAX_SHORT),
                    kind if isinstance(kind, str) and kind in SECTION_KINDS else "other",
                    item["text"][: 4 * DEFAULT_MAX_CAPTURE_BYTES],
                )
            )
    return out


def crash_of(value: Any) -> Crash | None:
    if not isinstance(value, Mapping):
        return None
    return Crash(
        text(value.get("path") or ""),
        count(value.get("line"), 1 << 31),
        text(value.get("message") or "", 4 * MAX_TEXT),
    )
