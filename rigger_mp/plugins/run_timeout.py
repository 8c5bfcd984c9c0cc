"""How long an open run may go quiet: the ``run_timeout`` key of the plugins that keep
runs (``report``, ``junit``), its default and its check, and the one a reader of the same
runs (the live view, in the server process) ends them by.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..errors import PluginError

DEFAULT_RUN_TIMEOUT: Final = 3600.0
"""Default of ``run_timeout``: seconds without an event after which an open run ends."""
RUN_PLUGINS: Final = ("report", "junit")
"""The built-in plugins that keep runs, each with its own ``run_timeout``."""


def run_timeout(data: Mapping[str, Any], where: str) -> float:
    """An instance's ``run_timeout`` (seconds > 0), or the default; else PluginError."""
    value = data.get("run_timeout", DEFAULT_RUN_TIMEOUT)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise PluginError(f"{where}: run_timeout must be a number of seconds > 0")
    return float(value)


def run_timeout_of(instances: Iterable[tuple[str, bool, Mapping[str, Any]]]) -> float:
    """The ``run_timeout`` the live view ends runs by: the longest of the enabled run
    plugins' (``(plugin, enabled, data)`` each, by plugin name), so that the page ends a
    run once each of its files has, and an event that still counts for one of them is
    still shown in the same run; else the default. A value the plugin refuses is left out
    (that plugin does not start)."""
    found = []
    for plugin, enabled, data in instances:
        if enabled and plugin in RUN_PLUGINS:
            try:
                found.append(run_timeout(data, plugin))
            except PluginError:
                continue
    return max(found, default=DEFAULT_RUN_TIMEOUT)
