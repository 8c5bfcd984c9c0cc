# mypy: ignore-errors
# ruff: noqa
"""A riggerlib script with a background instance and no ``if __name__ == "__main__":``."""

import sys

from riggerlib import Rigger, RiggerBasePlugin


class Packer(RiggerBasePlugin):
    def plugin_initialize(self):
        self.register_plugin_hook("pack", self.pack)

    def pack(self, name):
        return None, {"packed": [name]}


rigger = Rigger(None)
rigger.config = {"plugins": {"packer": {"plugin": "packer", "enabled": True, "background": True}}}
rigger.register_plugin(Packer, "packer")
rigger.parse_config()
rigger.global_data = {"packed": []}
rigger.initialized = True
for name in ("a", "b", "c"):
    rigger.fire_hook("pack", name=name)
try:
    rigger.stop_server()
except SystemExit:
    pass
print("packed", " ".join(rigger.global_data["packed"]))
sys.stdout.flush()
