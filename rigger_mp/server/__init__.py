"""The TCP intake: the asyncio server process (:mod:`.process`), the pipes to it
(:mod:`.channel`, :mod:`.messages`), and the main process's side (:mod:`.supervisor`).

Kept empty so that the server process, which imports :mod:`.process`, loads only the
server modules, the channel and the protocol."""
