# mypy: ignore-errors
# ruff: noqa
"""A riggerlib server script whose main() returns: the process serves until terminate."""

import sys

from riggerlib import Rigger


def greet(name):
    return {"greeting": "hello " + name}, None


def main(port):
    rigger = Rigger(None)
    rigger.config = {"server_enabled": True, "server_port": int(port)}
    rigger.parse_config()
    rigger.global_data = {}
    rigger.register_hook_callback("greet", "pre", greet)
    rigger.initialized = True
    print("serving", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
