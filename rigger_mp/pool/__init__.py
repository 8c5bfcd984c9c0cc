"""Backgrounded hooks: the pool interface, the local ``multiprocessing`` pool, the worker
process, and the dispatcher's side of it (:mod:`.background`)."""
