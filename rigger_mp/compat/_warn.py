"""One warning per kind of riggerlib behaviour that compat keeps although it is unsafe."""

from __future__ import annotations

import threading

from .. import printable

logger = printable.logger("rigger_mp.compat")

_seen: set[str] = set()
_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    with _lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.warning("rigger_mp.compat: %s", message)
