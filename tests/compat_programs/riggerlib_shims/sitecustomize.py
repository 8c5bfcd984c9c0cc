# mypy: ignore-errors
"""On PYTHONPATH for the riggerlib 3.1.6 runs only: its two shims for Python 3.10+.

benchmarks/peers/_riggerlib_runner.py's: collections.Mapping (and friends) aliased to
collections.abc, and yaml.load's Loader defaulting to SafeLoader. Applied at interpreter
start, so the program, pytest and its xdist workers all get them.
"""

import os
import sys

_PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                      "benchmarks", "peers")
sys.path.insert(0, _PEERS)
try:
    from _riggerlib_runner import apply_shims
finally:
    sys.path.remove(_PEERS)
apply_shims()
