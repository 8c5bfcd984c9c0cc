"""The dispatcher in the main process: the facade, the event thread, the stages of an
event, plans, tasks, the plugin API, config, plugin loading, the journal's side, and the
port that the pool side and the TCP intake are given. Nothing here starts a process;
:mod:`rigger_mp.pool` and :mod:`rigger_mp.server` do."""
