"""The seed's per-test log plugin: one small log file per test in its artifact directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

from ..core.plugin import ConfigKeys, RiggerBasePlugin


class TestLog(RiggerBasePlugin):
    """Writes ``<ident>.log`` into ``artifact_path``: the test's name and start time, then
    its result.
    """

    __test__ = False  # not a pytest test class, whatever its name says
    config_keys: ClassVar[ConfigKeys] = {}  # no keys of its own

    def plugin_initialize(self) -> None:
        self.register_plugin_hook("start_test", self.start_test)
        self.register_plugin_hook("finish_test", self.finish_test)

    def start_test(self, test_name: str, artifact_path: str) -> None:
        Path(artifact_path).mkdir(parents=True, exist_ok=True)
        with open(Path(artifact_path) / f"{self.ident}.log", "w") as log:
            log.write(f"{test_name}\nstarted {time.time():.3f}\n")

    def finish_test(self, artifact_path: str, test_result: str) -> None:
        Path(artifact_path).mkdir(parents=True, exist_ok=True)
        with open(Path(artifact_path) / f"{self.ident}.log", "a") as log:
            log.write(f"{test_result}\n")
