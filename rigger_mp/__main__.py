"""``python -m rigger_mp``: the same as the ``rigger-mp`` command."""

import os
import sys

# `python -m` puts the working directory first on sys.path. Moved last, a hmac.py or
# json.py there never shadows a standard or installed module, here or in the worker
# processes (which get this sys.path), while a plugin module there that a config names
# still imports, as it does under the `rigger-mp` script (whose sys.path lacks it).
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from .cli.commands import main

raise SystemExit(main())
