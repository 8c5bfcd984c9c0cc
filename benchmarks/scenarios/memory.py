"""Memory: RSS of an idle dispatcher, and its growth after many events.

Each sample comes from a fresh child process (:mod:`benchmarks.scenarios._memory_child`),
so the harness's own imports do not count. Events are fired pipelined in batches of
10,000, waiting for the last of each batch; growth is RSS after the run (garbage collected)
minus RSS after a warm-up. The floor is a bare interpreter with the same dependencies
imported. The child's dispatcher runs the TCP server and two pool workers; they are its
children and count in the process-tree figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import SUBJECT, Measurement, RunContext, Scenario, Target

CHILD = Path(__file__).resolve().parent / "_memory_child.py"
REPO = Path(__file__).resolve().parents[2]
NAME = "memory.rss"


def _child(subject: str, events: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(CHILD), subject, str(events)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child ({subject}) exited {proc.returncode}:\n{proc.stderr}")
    doc: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc


def rss(ctx: RunContext) -> list[Measurement]:
    """Idle RSS against a bare interpreter, and RSS growth after many events."""
    events = ctx.pick(1_000_000, 20_000)
    runs = min(ctx.repeats, 3) if not ctx.quick else 2
    ours = [_child(SUBJECT, events, timeout=600) for _ in range(runs)]
    bare = [_child("bare", 0, timeout=60) for _ in range(runs)]
    procs = ours[0]["processes"]
    rate = sum(d["events"] / d["seconds"] for d in ours) / len(ours)
    growth_metric = f"RSS growth after {events:,} events"
    out = [
        Measurement(
            NAME, "RSS idle, dispatcher process", SUBJECT, "MB", [d["idle_mb"] for d in ours], False
        ),
        Measurement(
            NAME,
            "RSS idle, dispatcher process",
            "bare python",
            "MB",
            [d["idle_mb"] for d in bare],
            False,
            note="interpreter with PyYAML, psutil, threading imported",
        ),
        Measurement(
            NAME,
            "RSS idle, process tree",
            SUBJECT,
            "MB",
            [d["idle_tree_mb"] for d in ours],
            False,
            note=(
                f"{procs} processes: dispatcher, TCP server, 2 workers, their manager, "
                "and the stdlib forkserver and resource tracker"
            ),
        ),
        Measurement(
            NAME,
            growth_metric,
            SUBJECT,
            "MB",
            [d["growth_mb"] for d in ours],
            False,
            targets=(Target("<=", 5.0),),
            note=f"{runs} fresh processes; fired at ~{rate:,.0f} events/s",
        ),
        Measurement(
            NAME, "RSS peak during the run", SUBJECT, "MB", [d["peak_mb"] for d in ours], False
        ),
    ]
    return out


SCENARIOS: list[Scenario] = [
    Scenario(NAME, "RSS of the dispatcher idle, and its growth after many events", rss),
]
