"""Run one riggerlib 3.1.6 measurement; executed by the peer venv's Python, not the harness's.

Usage: ``python -I _riggerlib_runner.py latency|throughput EVENTS REPEATS``. Prints one JSON
line on stdout: ``{"samples": [...], "version": ..., "shims": [...], "calls": ...}``.
Latency samples are the median µs per repeat; throughput samples are events/s per repeat.

riggerlib 3.1.6 needs, on Python 3.10+ with PyYAML 6, two shims applied before import:
``collections.Mapping`` (and friends) aliased to ``collections.abc``, and ``yaml.load``
defaulting ``Loader`` to ``SafeLoader``. Used as its README shows, it also needs
``initialized = True`` (else ``process_hook`` returns nothing) and ``global_data = {}`` (never
set by the class). Its ``fire_hook`` returns nothing, so completion is awaited with
``_global_queue.join()``, which returns once the queue thread called ``task_done`` for
every event. Its queue threads are non-daemon and poll a shutdown flag every 0.1 s: they
are told to stop, joined briefly, and the process then exits with ``os._exit``.
"""

from __future__ import annotations

import collections
import collections.abc
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

SHIMS: list[str] = []


def apply_shims() -> None:
    """Make riggerlib 3.1.6 importable on Python 3.10+ with PyYAML 6."""
    aliased = []
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            aliased.append(name)
    if aliased:
        SHIMS.append("collections." + "/".join(aliased) + " = collections.abc.*")

    import yaml

    original = yaml.load

    def load(stream: Any, Loader: Any = None, **kwargs: Any) -> Any:
        return original(stream, Loader=Loader or yaml.SafeLoader, **kwargs)

    yaml.load = load
    SHIMS.append("yaml.load(Loader=SafeLoader by default)")


def make_rigger(config_dir: str, calls: list[int]) -> Any:
    """A parsed, initialised riggerlib Rigger with one enabled trivial instance."""
    riggerlib = importlib.import_module("riggerlib")

    def plugin_initialize(self: Any) -> None:
        self.register_plugin_hook("ev", self.ev)

    def ev(self: Any, x: int) -> None:
        calls[0] += 1

    plugin = type(
        "TrivialPlugin",
        (riggerlib.RiggerBasePlugin,),
        {"plugin_initialize": plugin_initialize, "ev": ev},
    )
    path = os.path.join(config_dir, "riggerlib.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("plugins:\n  p1:\n    plugin: trivial\n    enabled: true\n")
    rigger = riggerlib.Rigger(path)
    rigger.register_plugin(plugin, "trivial")
    rigger.parse_config()
    rigger.initialized = True
    rigger.global_data = {}
    return rigger


def stop(rigger: Any) -> None:
    """Tell riggerlib's polling threads to end and give them one poll period to do so."""
    rigger._global_queue_shutdown = True
    rigger._background_queue_shutdown = True
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(timeout=0.5)


def measure(rigger: Any, kind: str, events: int, repeats: int) -> list[float]:
    """One sample per repeat: median µs per fire-and-wait, or events/s pipelined."""
    fire = rigger.fire_hook
    wait = rigger._global_queue.join
    samples: list[float] = []
    if kind == "latency":
        for i in range(2):  # warm up
            fire("ev", x=i)
            wait()
        for _ in range(repeats):
            each = []
            for i in range(events):
                start = time.perf_counter()
                fire("ev", x=i)
                wait()
                each.append((time.perf_counter() - start) * 1e6)
            samples.append(statistics.median(each))
    elif kind == "throughput":
        for i in range(min(events, 200)):  # warm up
            fire("ev", x=i)
        wait()
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(events):
                fire("ev", x=i)
            wait()
            samples.append(events / (time.perf_counter() - start))
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return samples


def main(argv: list[str]) -> int:
    kind, events, repeats = argv[0], int(argv[1]), int(argv[2])
    apply_shims()
    version = importlib.import_module("importlib.metadata").version("riggerlib")
    calls = [0]
    with tempfile.TemporaryDirectory() as tmp:
        rigger = make_rigger(tmp, calls)
        try:
            before = calls[0]
            samples = measure(rigger, kind, events, repeats)
            expected = events * repeats
            if calls[0] - before < expected:
                raise SystemExit(f"riggerlib ran {calls[0] - before} hooks, expected {expected}")
        finally:
            stop(rigger)
    out = {"samples": samples, "version": version, "shims": SHIMS, "calls": calls[0]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:  # report, then exit without waiting on riggerlib's threads
        import traceback

        traceback.print_exc()
        code = 1
    sys.stderr.flush()
    os._exit(code)  # riggerlib's threads are non-daemon; never wait on them
