"""The dispatcher in the main process: the facade, the event loop, stages, tasks, plugins,
config and plugin loading. Nothing here starts a process; :mod:`rigger_mp.pool` and
:mod:`rigger_mp.server` do."""
