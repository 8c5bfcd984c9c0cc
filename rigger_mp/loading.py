"""Finding plugin classes: registered names, built-in names, then ``package.module:Class``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from .errors import PluginError
from .plugin import RiggerBasePlugin
from .plugins import BUILTIN

PluginClass = type[RiggerBasePlugin]


def import_class(path: str) -> PluginClass:
    """Import ``package.module:Class`` and check that it is a plugin class."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise PluginError(f"{path!r} is not of the form 'package.module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, RiggerBasePlugin)):
        raise PluginError(f"{path!r} is {obj!r}, not a subclass of RiggerBasePlugin")
    return obj


def resolve_plugin(name: str, ident: str, registered: Mapping[str, PluginClass]) -> PluginClass:
    """The class behind plugin ``name`` for instance ``ident``."""
    if name in registered:
        return registered[name]
    path = BUILTIN.get(name, name)
    if ":" in path:
        try:
            return import_class(path)
        except PluginError as exc:
            raise PluginError(f"instance {ident!r}: plugin {name!r}: {exc}") from exc
    known = ", ".join(sorted({*registered, *BUILTIN})) or "none"
    raise PluginError(
        f"instance {ident!r}: unknown plugin {name!r} (registered plugins: {known}; "
        "or give an importable 'package.module:Class')"
    )
