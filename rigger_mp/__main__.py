"""``python -m rigger_mp``: the same as the ``rigger-mp`` command."""

from .cli import main

raise SystemExit(main())
