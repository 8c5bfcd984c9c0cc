"""The ``rigger-mp`` command: one module per subcommand, parsed in :mod:`.commands`.

``rigger_mp.cli:main`` is the console script; it imports the parser only when called.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rigger-mp`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    from .commands import main as run

    return run(argv)
