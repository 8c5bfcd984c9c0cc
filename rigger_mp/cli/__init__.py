"""The ``rigger-mp`` command: one module per subcommand, parsed in :mod:`.commands`.

``rigger_mp.cli:main`` is the console script; it imports the parser only when called.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rigger-mp`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    cwd_last()
    from .commands import main as run

    return run(argv)


def cwd_last() -> None:
    """Put the working directory last on ``sys.path`` if it is not on it at all.

    A console script's ``sys.path`` starts with the script's own directory (the venv's
    ``bin``), not the working directory, so ``rigger-mp serve`` could not import a plugin
    module in the working directory (a ``package.module:Class`` of the config) that
    ``python -m rigger_mp serve`` imports. Last, as ``python -m rigger_mp`` puts it (see
    :mod:`rigger_mp.__main__`): a ``json.py`` or ``hmac.py`` there never shadows a
    standard or installed module, here or in the worker processes, which inherit this
    ``sys.path``.
    """
    cwd = os.getcwd()
    if not any(entry in ("", cwd) for entry in sys.path):
        sys.path.append(cwd)
