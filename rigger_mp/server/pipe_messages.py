"""What the server process and the main process send each other over their two pipes.

Both pipes carry frames of :mod:`rigger_mp.server.channel`, each holding one object: a
list (a batch of requests, or of replies) or one of the lone messages below. Every
message is declared here, once::

    server process ── requests pipe ──▶ main process
      Ready(pid)                          the first object: listening
      [Fires | StatusRequest | StatsRequest | InfoRequest | TerminateRequest, ...]
                                          what one read of a connection produced
      FencePassed(n)                      every fire acked before Fence n came is ahead

    server process ◀── reply pipe ───── main process
      ServerSettings                      the first object
      Replies                             reply lines, by request id (rid)
      StatsReply                          the stats asked
      Fence(n, quiesce) / Stop()          control

Named tuples; fires and replies go as one :class:`Fires` or :class:`Replies` per batch,
a column per field: a named tuple costs its class's ``__reduce__`` when pickled (a
Python call per object, five to twenty times a plain tuple's cost), so one per fire or
reply would tax the hot path; one per batch costs less than the plain tuples did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from ..protocol import DEDUP_WINDOW, MAX_HOOK_NAME, MAX_JSON_DEPTH

NO_REPLY: Final = -1
"""The rid of a fire the server process acked itself: the main process sends no reply."""


# -- server process -> main process ------------------------------------------------------


class Ready(NamedTuple):
    """The server process listens (the first object on the requests pipe)."""

    pid: int


class Fires(NamedTuple):
    """A run of fires the server process accepted, in order: fire i is
    ``(rids[i], hook_names[i], data[i], modes[i], tids[i])``."""

    rids: list[int]
    """:data:`NO_REPLY` for a fire already acked; else the request its reply answers."""
    hook_names: list[str]
    data: list[dict[str, Any]]
    modes: list[int]
    """:data:`rigger_mp.protocol.ACK`, ``GRAB`` or ``WAIT``."""
    tids: list[str]
    seqs: list[int] | None = None
    """With a journal: each fire's journal seq (the server process committed it)."""


class StatusRequest(NamedTuple):
    """``task_status`` of ``tid``."""

    rid: int
    tid: str


class StatsRequest(NamedTuple):
    """``stats``: the dispatcher's counters. The server process asks at most one at a
    time (its :class:`~.stats_snapshot.StatsSnapshot` answers every request meanwhile),
    so the reply needs no rid."""


class InfoRequest(NamedTuple):
    """``info``: where the dispatcher runs (host, pid, artifacts root)."""

    rid: int


class TerminateRequest(NamedTuple):
    """``terminate``: stop the dispatcher once drained; the reply comes then."""

    rid: int


class FencePassed(NamedTuple):
    """Every fire acked before :class:`Fence` ``n`` came is ahead of this in the pipe."""

    n: int


Request = Fires | StatusRequest | StatsRequest | InfoRequest | TerminateRequest
"""An item of a batch on the requests pipe."""


# -- main process -> server process ------------------------------------------------------


class Replies(NamedTuple):
    """Reply lines: ``lines[i]`` answers request ``rids[i]``."""

    rids: list[int]
    lines: list[bytes]

    def add(self, rid: int, line: bytes) -> None:
        self.rids.append(rid)
        self.lines.append(line)

    @staticmethod
    def join(batches: list[Replies]) -> Replies:
        """One batch holding the replies of ``batches``, in order."""
        return Replies(
            [rid for batch in batches for rid in batch.rids],
            [line for batch in batches for line in batch.lines],
        )


class StatsReply(NamedTuple):
    """The dispatcher's stats for the :class:`StatsRequest` asked; the server process adds
    its own counters. ``error``: the error line that replaces stats too large to send."""

    stats: dict[str, Any] | None
    error: bytes | None = None


class Fence(NamedTuple):
    """Send :class:`FencePassed` ``n`` back behind every fire acked so far; with
    ``quiesce``, refuse every fire from now on."""

    n: int
    quiesce: bool


class Stop(NamedTuple):
    """Stop: accept nothing more, answer what is in flight, exit."""


@dataclass(frozen=True)
class Restored:
    """A restarting dispatcher's open runs for the live view, read by the main process
    before it queued the journal's replay: what the run plugins' state files held then
    (``found``), and the run events of the replay (``replayed``), which reach the plugins
    on the event thread and never pass through a server process. Read later, the state
    files would hold a part of the replay that had run by then, and the board would be
    fed that part twice."""

    found: tuple[Any, ...]
    """:class:`~rigger_mp.plugins.run_state.Found`, one per open run (not imported here:
    the server process loads the plugins' modules only with the HTTP front)."""
    replayed: tuple[tuple[str, dict[str, Any]], ...]
    not_shown: int = 0
    """Replayed run events left out, past the bytes the live view reads back."""


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
    """The journal file: fires are committed to it before they are acked."""
    journal_sync: str = "normal"
    http_max_connections: int = 256
    """HTTP connections open at once (the HTTP front, when its socket is passed)."""
    http_address: str = "127.0.0.1"
    http_allowed_hosts: tuple[str, ...] = ()
    """Host names the HTTP front answers to besides loopback and ``http_address``."""
    live_max_tests: int = 100_000
    """Tests the live run view lists over the runs it holds (the rest are counted)."""
    live_max_subscribers: int = 16
    """Live streams (pages following the runs) open at once."""
    live_run_timeout: float = 3600.0
    """Seconds after its last event when the live view ends an open run: the report's
    ``run_timeout`` (:func:`~rigger_mp.plugins.run_keeper.run_timeout_of`)."""
    # -- connection bounds: the config keys of the same names --
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
    dedup_window: int = DEDUP_WINDOW
    """Fire ids kept to answer a resent fire with its first tid (:mod:`.dedup`)."""
    # -- uploads (``attach``): the config keys of the same names --
    artifacts_root: str | None = None
    """Where uploaded files go (the dispatcher's artifacts root); None: ``attach`` is refused."""
    restored: Restored | None = None
    """For the first server process of a dispatcher with the HTTP front, an artifacts
    root and a journal replay to run; None: the live view reads the state files itself
    (no replay, or a replaced server process)."""
    max_attach_bytes: int = 512 * 1024 * 1024
    """The largest file one ``attach`` may upload."""
    max_run_bytes: int = 20 * 1024**3
    """The bytes of the completed uploads of one run id, together."""
    min_free_disk_bytes: int = 1024**3
    """An upload that would leave less free space under the root is refused."""
