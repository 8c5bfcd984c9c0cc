"""Measure a fresh dispatcher's RSS, idle and after many events; run as a child process.

Usage: ``python _memory_child.py rigger_mp|bare EVENTS``. Prints one JSON line. A fresh
process is used so that the harness's own imports (matplotlib, pluggy, ...) do not count.

``bare`` is the floor: the same interpreter with rigger_mp's dependencies (PyYAML, psutil)
and the stdlib modules a dispatcher needs imported, doing nothing.

RSS is reported for this process and for its whole process tree (``tree``): the TCP server
process and the worker pool, once :func:`config` turns them on, are children and are
counted there without further change.
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from typing import Any

import psutil

from rigger_mp import Rigger, RiggerBasePlugin

MB = 2**20
BATCH = 10_000


def config() -> dict[str, Any]:
    """The dispatcher under test: TCP server on a free port and a pool of two workers
    (started because instance ``bg`` is backgrounded), so all their processes count."""
    return {
        "server_enabled": True,
        "server_port": 0,
        "workers": 2,
        "plugins": {
            "p1": {"plugin": "benchmarks_memory_trivial", "enabled": True},
            "bg": {"plugin": "benchmarks_memory_trivial", "background": True},
        },
    }


def rss() -> tuple[float, float, int]:
    """(RSS of this process, RSS of it and all its descendants, number of processes), MB."""
    me = psutil.Process()
    own = me.memory_info().rss
    total = own
    kids = me.children(recursive=True)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            total += kid.memory_info().rss
    return own / MB, total / MB, 1 + len(kids)


def settle() -> None:
    gc.collect()
    time.sleep(0.2)  # let the dispatcher's threads and children reach their idle state


def run_bare() -> dict[str, Any]:
    import concurrent.futures  # noqa: F401 (what a dispatcher imports)
    import queue  # noqa: F401
    import threading  # noqa: F401

    import yaml  # noqa: F401

    settle()
    own, tree, procs = rss()
    return {"idle_mb": own, "idle_tree_mb": tree, "processes": procs}


class Trivial(RiggerBasePlugin):
    """One trivial hook; at module level so that pool workers can import it."""

    def plugin_initialize(self) -> None:
        if self.data.get("background"):
            self.register_plugin_hook("bg_ev", self.ev)
        else:
            self.register_plugin_hook("ev", self.ev)

    def ev(self, x: int) -> None:
        return None


def run_rigger(events: int) -> dict[str, Any]:
    rigger = Rigger(config())
    rigger.register_plugin(Trivial, "benchmarks_memory_trivial")
    rigger.start()
    try:
        settle()
        own, tree, procs = rss()
        fire = rigger.fire_hook

        def batch(start: int, n: int) -> None:
            last = None
            for i in range(start, start + n):
                last = fire("ev", x=i)
            if last is not None:
                last.result()

        warm = min(events, 2 * BATCH)
        for s in range(0, warm, BATCH):
            batch(s, min(BATCH, warm - s))
        fire("bg_ev", x=0)
        rigger.wait_background()
        settle()
        before, _, _ = rss()
        trace = [before]
        started = time.perf_counter()
        for s in range(0, events, BATCH):
            batch(s, min(BATCH, events - s))
            if (s // BATCH) % 10 == 9:
                trace.append(rss()[0])
        elapsed = time.perf_counter() - started
        settle()
        after, after_tree, _ = rss()
        trace.append(after)
    finally:
        rigger.stop()
    return {
        "idle_mb": own,
        "idle_tree_mb": tree,
        "processes": procs,
        "before_mb": before,
        "after_mb": after,
        "after_tree_mb": after_tree,
        "growth_mb": after - before,
        "peak_mb": max(trace),
        "events": events,
        "seconds": elapsed,
    }


def main(argv: list[str]) -> int:
    subject, events = argv[0], int(argv[1])
    doc = run_bare() if subject == "bare" else run_rigger(events)
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
