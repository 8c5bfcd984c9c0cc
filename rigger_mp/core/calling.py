"""Calling a hook or callback with the namespace: argument selection and result checking.

A :class:`Callee` is built once, when a callable is registered, so that each call only
looks names up: locals first, then globals.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import HookArgumentError, HookReturnError

Updates = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]

_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Callee:
    """A callable with its parameter names read once from its signature."""

    __slots__ = ("func", "is_async", "label", "names", "required", "takes_all")

    def __init__(self, func: Callable[..., Any], label: str) -> None:
        if not callable(func):
            raise TypeError(f"{label}: {func!r} is not callable")
        self.func = func
        self.label = label
        self.is_async = is_async_callable(func)
        """An ``async def`` callable: awaited on the dispatcher's coroutine thread."""
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{label}: cannot read the signature of {func!r}: {exc}") from exc
        names: list[str] = []
        required: list[str] = []
        self.takes_all = False
        for param in params:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                self.takes_all = True
            elif param.kind in _KEYWORD_KINDS:
                names.append(param.name)
                if param.default is inspect.Parameter.empty:
                    required.append(param.name)
            elif param.default is inspect.Parameter.empty and (
                param.kind is inspect.Parameter.POSITIONAL_ONLY
            ):
                raise TypeError(
                    f"{label}: parameter {param.name!r} is positional-only; rigger_mp passes "
                    "namespace values by keyword"
                )
        self.names = tuple(names)
        self.required = frozenset(required)

    def arguments(self, local: Mapping[str, Any], glob: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for one call: each named parameter, locals over globals."""
        if self.takes_all:
            merged = dict(glob)
            merged.update(local)
            return merged
        kwargs: dict[str, Any] = {}
        missing: list[str] | None = None
        for name in self.names:
            if name in local:
                kwargs[name] = local[name]
            elif name in glob:
                kwargs[name] = glob[name]
            elif name in self.required:
                if missing is None:
                    missing = []
                missing.append(name)
        if missing:
            raise HookArgumentError(
                f"{self.label} is missing required argument(s) {', '.join(missing)}: "
                "not in the event locals nor in the globals"
            )
        return kwargs

    def call(self, local: Mapping[str, Any], glob: Mapping[str, Any]) -> Updates:
        """Call with arguments from the namespace; return its checked ``(locals, globals)``."""
        result = self.func(**self.arguments(local, glob))
        return (None, None) if result is None else self.check(result)

    def check(self, result: Any) -> Updates:
        """Accept ``None`` or a pair of mappings (either may be ``None``)."""
        if result is None:
            return None, None
        if isinstance(result, (tuple, list)) and len(result) == 2:
            local, glob = result
            if (local is None or isinstance(local, Mapping)) and (
                glob is None or isinstance(glob, Mapping)
            ):
                return local, glob
        text = repr(result)
        if len(text) > 80:
            text = text[:77] + "..."
        raise HookReturnError(
            f"{self.label} returned {text}; expected None or a pair "
            "(local_updates, global_updates) of mappings or None"
        )

    def __repr__(self) -> str:
        return f"<Callee {self.label}>"


def is_async_callable(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` returns a coroutine to await: an ``async def`` function or
    method, or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an instance's own __call__
    return call is not None and inspect.iscoroutinefunction(call)
