"""Checking a plugin instance's keys against what its plugin class declares.

A plugin class declares the keys it accepts in ``config_keys`` (key -> type or tuple of
types; ``type(None)`` allows null). The instance-level keys every instance has
(``plugin``, ``enabled``, ``background``: see :mod:`rigger_mp.core.config`) are always
allowed. A class that declares nothing (``config_keys = None``, the default) accepts
any key, so third-party plugins written before the declaration existed keep working.

An unknown key or a wrong type is a :class:`ConfigError` naming the source (the file, or
"the config" for a mapping), the instance, its plugin, the key, the line in the file
and, for an unknown key, the nearest known key. Lines come from composing the YAML file
again (``yaml.compose`` keeps each node's ``start_mark``), only once a fault is found.
"""

from __future__ import annotations

import difflib
from typing import Any

from ..errors import ConfigError
from .config import _INSTANCE_KEYS, InstanceConfig, yaml_line
from .plugin import ConfigKeys, RiggerBasePlugin

INSTANCE_KEYS = frozenset(_INSTANCE_KEYS)
"""Keys every instance may have, whatever its plugin declares."""


def is_file_source(source: str) -> bool:
    """Whether a :attr:`RiggerConfig.source` names a file (not ``<mapping>``/``<defaults>``)."""
    return not (source.startswith("<") and source.endswith(">"))


def check_instance_keys(cls: type[RiggerBasePlugin], spec: InstanceConfig, source: str) -> None:
    """Raise :class:`ConfigError` if ``spec`` has a key ``cls`` does not declare, or a
    declared key of the wrong type; do nothing if ``cls`` declares no keys."""
    declared: ConfigKeys | None = cls.config_keys
    if declared is None:
        return
    where = f"instance {spec.ident!r} (plugin {spec.plugin})"
    for key, value in spec.data.items():
        if key in INSTANCE_KEYS:
            continue  # config.py checked these
        if key not in declared:
            known = sorted({*declared, *INSTANCE_KEYS})
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            raise ConfigError(
                f"{_origin(source)}: {where}: unknown key {key!r}"
                f"{_on_line(source, spec.ident, key)}; {hint}"
            )
        wanted = declared[key]
        if not matches(value, wanted):
            raise ConfigError(
                f"{_origin(source)}: {where}: key {key!r}{_on_line(source, spec.ident, key)} "
                f"must be {type_names(wanted)}, not {type(value).__name__} ({_short(value)})"
            )


def matches(value: Any, wanted: type | tuple[type, ...]) -> bool:
    """``isinstance`` as a config means it: a bool is not an int, an int is a float."""
    for t in wanted if isinstance(wanted, tuple) else (wanted,):
        if t is int or t is float:
            if isinstance(value, bool):
                continue
            if isinstance(value, int) or (t is float and isinstance(value, float)):
                return True
        elif isinstance(value, t):
            return True
    return False


def type_names(wanted: type | tuple[type, ...]) -> str:
    """``int``, ``str or null``: the types a key takes, as an error message says them."""
    types = wanted if isinstance(wanted, tuple) else (wanted,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _origin(source: str) -> str:
    return source if is_file_source(source) else "the config"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _on_line(source: str, ident: str, key: Any) -> str:
    line = key_line(source, ident, key) if is_file_source(source) else None
    return "" if line is None else f" on line {line}"


def key_line(path: str, ident: str, key: Any) -> int | None:
    """The 1-based line of ``plugins.<ident>.<key>`` in the YAML file ``path``, if found."""
    return yaml_line(path, "plugins", ident, str(key))


def located(source: str, ident: str, key: str) -> str:
    """Where ``plugins.<ident>.<key>`` is, for an error message: ``FILE, line N``, the
    file alone when the key is not found there, or "the config" for a mapping."""
    line = key_line(source, ident, key) if is_file_source(source) else None
    return _origin(source) + ("" if line is None else f", line {line}")
