"""A short run of the main job in one process: the seed's per-test log plugin.

``python -m rigger_mp.demo [--tests N]`` fires ``start_test``/``finish_test`` for N
tests through a Rigger whose pre callback works out each test's artifact path, and
prints what it did.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from .plugin import RiggerBasePlugin
from .rigger import Rigger


class TestLog(RiggerBasePlugin):
    """Writes a log per test: its name and start time, then its result."""

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_test", self.start_test)
        self.register_plugin_hook("finish_test", self.finish_test)

    def start_test(self, test_name: str, artifact_path: str) -> None:
        Path(artifact_path).mkdir(parents=True, exist_ok=True)
        with open(Path(artifact_path) / f"{self.ident}.log", "w") as log:
            log.write(f"{test_name}\nstarted {time.time():.3f}\n")

    def finish_test(
        self, artifact_path: str, test_result: str
    ) -> tuple[None, dict[str, Any]]:
        with open(Path(artifact_path) / f"{self.ident}.log", "a") as log:
            log.write(f"{test_result}\n")
        return None, {"results": {test_result: 1}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigger_mp.demo", description=__doc__)
    parser.add_argument("--tests", type=int, default=2000, help="tests to simulate")
    parser.add_argument("--dir", help="where artifacts go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="rigger_mp-demo-"))
    counts: dict[str, int] = {}

    def artifact_path(test_name: str, test_location: str) -> tuple[dict[str, Any], None]:
        return {"artifact_path": str(root / test_location / test_name)}, None

    def tally(test_result: str) -> None:
        counts[test_result] = counts.get(test_result, 0) + 1

    rigger = Rigger({"plugins": {"testlog": {"plugin": "testlog"}}})
    rigger.register_plugin(TestLog, "testlog")
    rigger.register_hook_callback("start_test", "pre", artifact_path)
    rigger.register_hook_callback("finish_test", "pre", artifact_path)
    rigger.register_hook_callback("finish_test", "post", tally)
    started = time.perf_counter()
    with rigger:
        for n in range(args.tests):
            where = {"test_name": f"test_{n}", "test_location": f"tests/mod_{n % 10}"}
            rigger.fire_hook("start_test", **where)
            rigger.fire_hook("finish_test", test_result="passed" if n % 7 else "failed", **where)
    elapsed = time.perf_counter() - started
    events = rigger.stats()["events"]
    print(
        f"{events['done']} events in {elapsed:.2f}s ({events['done'] / elapsed:,.0f} events/s), "
        f"{events['failed']} failed; results {counts}; artifacts under {root}"
    )
    return 0 if events["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
