"""What the server process and the main process send each other over their two pipes.

Both pipes carry frames of :mod:`rigger_mp.server.channel`. The first frame on the reply
pipe is the :class:`ServerSettings`; the first on the requests pipe is ``(READY, pid)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..protocol import MAX_HOOK_NAME, MAX_JSON_DEPTH

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
    """Put before this process's fire counter to make a tid: unique per server process
    (with a journal, the journal's boot number goes first: unique for the file's life)."""
    accepting: bool = True
    """False for a process started while the dispatcher stops: every fire is refused."""
    journal: str | None = None
    """The journal file: fires are committed to it before they are acked (issue #13)."""
    journal_sync: str = "normal"
    http_max_connections: int = 256
    """HTTP connections open at once (the HTTP front, when its socket is passed)."""
    http_address: str = "127.0.0.1"
    http_allowed_hosts: tuple[str, ...] = ()
    """Host names the HTTP front answers to besides loopback and ``http_address``."""
    # -- connection bounds (issue #11); the config keys of the same names --
    max_connections: int | None = None
    """Connections served at once; past it a new one gets a ``busy`` line and is closed.
    None: min(1024, half the server process's soft RLIMIT_NOFILE)."""
    drain_timeout: float = 30.0
    """A client whose unread replies stay above the high-water mark (or that is being
    closed with replies unread) this long is aborted."""
    auth_timeout: float = 10.0
    """With a token: a connection not authenticated this long after it opened is closed."""
    max_auth_failures: int = 5
    """Wrong tokens on one connection; the last one's reply says it closes."""
    max_protocol_errors: int = 100
    """Error replies (bad_json, bad_request, unauthorized...) on one connection before it
    is closed after the last one."""
    max_messages_per_turn: int = 256
    """Messages of one connection handled per event-loop turn: the rest of a read waits
    for the next turn, so other connections are served in between."""
    max_buffered_replies_bytes: int = 64 * 1024 * 1024
    """Reply bytes buffered for all clients together; above it no connection is read
    until they drain to half of it."""
    max_json_depth: int = MAX_JSON_DEPTH
    """Passed to :func:`rigger_mp.protocol.parse`."""
    max_hook_name_length: int = MAX_HOOK_NAME
    """Passed to :func:`rigger_mp.protocol.parse`."""
