"""riggerlib 3.1.6's ``RiggerClient``: what it returned, over rigger_mp's TCP protocol.

riggerlib's client spoke ZeroMQ to riggerlib's server; this one speaks rigger_mp's JSON
lines to a rigger_mp (or compat) dispatcher, and returns what riggerlib's returned:
``None`` when nothing came back, the output for ``grab_result``, ``True`` for
``wait_for_task``, riggerlib's reply dicts for ``task_status`` and ``task_delete``.
"""

from __future__ import annotations

import os
from typing import Any

from ..client import RemoteError
from ..client import RiggerClient as _RiggerClient
from ..protocol import TOKEN_ENV
from ._warn import warn_once

# riggerlib's Task.QUEUED, RUNNING, FINISHED; a failed event was FINISHED there.
_STATUS = {"queued": 0, "running": 1, "done": 2, "failed": 2}


class RiggerClient:
    """riggerlib's ``RiggerClient(address, port)``; nothing is sent until ``ready`` is set.

    The token, if the dispatcher has one, is read from ``$RIGGER_MP_TOKEN``.
    """

    def __init__(self, address: str, port: int | str) -> None:
        self.address = address
        self.port = str(port)
        self._client = _RiggerClient(address, int(port), token=os.environ.get(TOKEN_ENV))
        self._ready = False

    @property
    def ready(self) -> bool:
        """riggerlib sent nothing until a program set this; its setter ignored the value."""
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = True  # riggerlib's setter set True whatever it was given

    def _unready(self, what: str) -> None:
        warn_once(
            "client-not-ready",
            f"RiggerClient.{what}: ready was never set, so nothing is sent and None is "
            "returned, as riggerlib did; set client.ready = True (rigger_mp.RiggerClient "
            "has no such flag)",
        )

    def _failed(self, what: str, exc: Exception) -> None:
        warn_once(
            f"client-error:{what}",
            f"RiggerClient.{what}: {type(exc).__name__}: {exc}; None is returned, as "
            "riggerlib returned it (rigger_mp.RiggerClient raises)",
        )

    def fire_hook(
        self, hook_name: str, grab_result: bool = False, wait_for_task: bool = False, **kwargs: Any
    ) -> Any:
        """Fire an event: None; with ``grab_result`` its output; with ``wait_for_task`` True.

        A failed event gives ``{}`` or ``True``, as riggerlib's did; anything else that
        goes wrong gives None.
        """
        if not self._ready:
            self._unready("fire_hook")
            return None
        try:
            out = self._client.fire_hook(
                hook_name, grab_result=grab_result, wait_for_task=wait_for_task, **kwargs
            )
        except RemoteError as exc:
            if exc.code == "hook_failed" and (grab_result or wait_for_task):
                warn_once(
                    "client-hook-failed",
                    f"event {hook_name!r} failed on the dispatcher ({exc.message}); "
                    "riggerlib's client reported that as {} (grab_result) or True "
                    "(wait_for_task), and so does compat's; rigger_mp.RiggerClient raises "
                    "RemoteError",
                )
                return {} if grab_result else True
            self._failed("fire_hook", exc)
            return None
        except Exception as exc:
            self._failed("fire_hook", exc)
            return None
        return out if grab_result or wait_for_task else None

    def task_status(self, tid: str, grab_result: bool = False) -> dict[str, Any] | None:
        """riggerlib's reply: ``{"message": "OK", "tid", "status": 0|1|2}`` or NOT FOUND.

        rigger_mp keeps no outputs for ``grab_result`` here: ``fire_hook(grab_result=True)``
        returns the output itself.
        """
        if not self._ready:
            self._unready("task_status")
            return None
        try:
            reply = self._client.task_status(tid)
        except RemoteError as exc:
            if exc.code == "unknown_task":
                return {"message": "NOT FOUND"}
            self._failed("task_status", exc)
            return None
        except Exception as exc:
            self._failed("task_status", exc)
            return None
        return {"message": "OK", "tid": tid, "status": _STATUS[reply["status"]]}

    def task_delete(self, tid: str) -> dict[str, Any] | None:
        """riggerlib's ``{"message": "OK", "tid"}``: rigger_mp forgets old tasks by itself."""
        if not self._ready:
            self._unready("task_delete")
            return None
        try:
            self._client.ping()
        except Exception as exc:
            self._failed("task_delete", exc)
            return None
        return {"message": "OK", "tid": tid}

    def terminate(self) -> None:
        """Stop the dispatcher (returns once it drained); None, as riggerlib returned."""
        if not self._ready:
            self._unready("terminate")
            return
        try:
            self._client.terminate()
        except Exception as exc:
            self._failed("terminate", exc)

    def close(self) -> None:
        """Close the connection (riggerlib had none to close; rigger_mp keeps one open)."""
        self._client.close()
