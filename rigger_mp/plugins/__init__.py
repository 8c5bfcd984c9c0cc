"""Plugins that ship with rigger_mp, known to the config by a short name.

:data:`BUILTIN` is the one place that maps those names to classes; the loader consults
it after the names given to ``Rigger.register_plugin``. Classes are named as
``package.module:Class`` so that nothing is imported until an instance asks for it.
The same names are declared in the ``rigger_mp.plugins`` entry point group of
``pyproject.toml``, the group through which other packages provide plugins.
"""

from __future__ import annotations

BUILTIN: dict[str, str] = {
    "archive": "rigger_mp.plugins.archive:ArchivePlugin",
    "junit": "rigger_mp.plugins.junit:JUnitPlugin",
    "report": "rigger_mp.plugins.report:ReportPlugin",
    "testlog": "rigger_mp.plugins.testlog:TestLog",
}
"""Built-in plugin name -> importable ``package.module:Class``."""
