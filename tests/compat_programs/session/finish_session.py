# mypy: ignore-errors
# ruff: noqa
"""The session's end, riggerlib style: finish_session with its result, then terminate."""

import json
import sys

from riggerlib import RiggerClient

client = RiggerClient("127.0.0.1", int(sys.argv[1]))
client.ready = True
output = client.fire_hook("finish_session", grab_result=True)
print(json.dumps(sorted(output)))
client.terminate()
