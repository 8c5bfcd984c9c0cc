"""The TCP intake.

In the server process: the asyncio server (:mod:`.process`), which speaks the wire
protocol. Between the two processes: the pipes (:mod:`.channel`) and what travels in
them (:mod:`.messages`). In the main process: :mod:`.supervisor` (the facade the Rigger
uses; starts, restarts and stops the server process), :mod:`.intake` (the thread that
queues what the server sends), :mod:`.fences` (what "every acked fire is queued"
rests on) and :mod:`.status_window` (``task_status``).

Kept empty so that the server process, which imports :mod:`.process`, loads only the
server modules, the channel and the protocol (``tests/test_server_imports.py``)."""
