"""riggerlib 3.1.6's API on top of rigger_mp, for programs ported by changing one import.

``from riggerlib import Rigger, RiggerBasePlugin, RiggerClient, recursive_update`` becomes
``from rigger_mp.compat import ...``. Where riggerlib's behaviour was unsafe (silently
dropping a call, reporting a failure as a success), compat keeps it and logs a warning
once (logger ``rigger_mp.compat``) that says what the modern API does instead. The
docs' "Porting from riggerlib" page (``docs/porting.md``) lists every difference that
remains.
"""

from __future__ import annotations

from ..merge import recursive_update
from .client import RiggerClient
from .plugin import RiggerBasePlugin
from .rigger import Rigger

__all__ = ["Rigger", "RiggerBasePlugin", "RiggerClient", "recursive_update"]
