"""Lifecycles: each component keeps one enum, moved only along the edges it names.

A component (the event thread, which is the dispatcher's lifecycle, the server
supervisor, the worker pool, the background side) writes its phases
as an :class:`~enum.Enum` and its legal moves as a table ``{phase: phases it may go
to}``; each named transition calls :func:`move`, so an impossible move (a bug) fails at
once instead of leaving a mix of flags no one designed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum
from typing import TypeVar

P = TypeVar("P", bound=Enum)


def move(edges: Mapping[P, Collection[P]], current: P, to: P) -> P:
    """``to``, if ``edges`` lets ``current`` move there; else :class:`RuntimeError`."""
    if to not in edges.get(current, ()):
        raise RuntimeError(f"{type(current).__name__}: no move from {current.name} to {to.name}")
    return to
