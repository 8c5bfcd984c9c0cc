"""What the server process and the main process send each other over their two pipes.

Both pipes carry frames of :mod:`rigger_mp.server.channel`. The first frame on the reply
pipe is the :class:`ServerSettings`; the first on the requests pipe is ``(READY, pid)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Server -> main: lists of (rid, kind, ...) items; or the READY or FENCE object alone.
FIRE: Final = 0  # (rid, FIRE, hook_name, data, mode, tid); rid is NO_REPLY once acked here
SEQ: Final = 6  # with a journal, a FIRE item has its journal seq here, after its tid
STATUS: Final = 1  # (rid, STATUS, tid)
STATS: Final = 2  # (rid, STATS)
TERMINATE: Final = 3  # (rid, TERMINATE)
READY: Final = "ready"  # the first object sent: ("ready", pid)
FENCE: Final = "fence"  # ("fence", n): every fire acked before request n came is ahead
NO_REPLY: Final = -1

# Main -> server: lists of (rid, kind, payload) items; or a control object alone.
R_LINE: Final = 1  # payload: an encoded reply line
R_STATS: Final = 2  # payload: rigger.stats(); the server adds its own counters
# ("fence", n, quiesce): send ("fence", n) back; if quiesce, refuse every fire from now on.
STOP: Final = "stop"

@dataclass(frozen=True)
class ServerSettings:
    """What the server process needs from the config."""

    token: str | None
    max_message_bytes: int
    idle_timeout: float
    stop_grace: float = 10.0
    """After a stop, how long connections may take to receive their last replies."""
    tid_prefix: str = ""
    """Put before this process's fire counter to make a tid: unique per server process."""
    accepting: bool = True
    """False for a process started while the dispatcher stops: every fire is refused."""
    journal: str | None = None
    """The journal file: fires are committed to it before they are acked (issue #13)."""
    journal_sync: str = "normal"
