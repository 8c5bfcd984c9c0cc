"""Readable names of callables, for messages and labels.

The main process, the pool side and compat name hooks and jobs alike, so it belongs to no role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def describe(func: Callable[..., Any]) -> str:
    """A readable name for a callable: its qualified name where it has one."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else repr(func)
