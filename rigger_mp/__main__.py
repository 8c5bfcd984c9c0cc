"""``python -m rigger_mp``: the same as the ``rigger-mp`` command."""

from .cli.commands import main

raise SystemExit(main())
