"""The TCP intake.

In the server process (an asyncio loop): :mod:`.process` (its entry and settings),
:mod:`.acceptor` (the listening socket), :mod:`.connection` (one client of the JSON-lines
port), :mod:`.router` (the state the connections share: tids, acks, request ids,
backpressure, stop), :mod:`.throttle` (log records a client can cause), and, with the
``http`` extra, :mod:`.http` (the HTTP front). Connections and HTTP calls are the
:class:`~.reply_target.ReplyTarget` of their replies. Between the two processes: the pipes
(:mod:`.channel`) and what travels in them (:mod:`.pipe_messages`). In the main process:
:mod:`.supervisor` (the facade the Rigger uses; starts, restarts and stops the server
process), :mod:`.intake` (the thread that queues what the server sends), :mod:`.fences`
(what "every acked fire is queued" rests on) and :mod:`.status_window` (``task_status``).

Kept empty so that the server process, which imports :mod:`.process`, loads only the
server modules, the channel and the protocol (``tests/test_server_imports.py``)."""
