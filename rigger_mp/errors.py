"""The exceptions rigger_mp raises; every one derives from :class:`RiggerError`."""

from __future__ import annotations


def describe_error(exc: BaseException) -> str:
    """``Type: message`` (or the type alone) for a reply or a log line."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RiggerError(Exception):
    """Base class of every error rigger_mp raises itself."""


class ConfigError(RiggerError):
    """The configuration is malformed: the message names the file, the key and the fault."""


class PluginError(RiggerError):
    """A plugin could not be found, imported or built."""


class HookArgumentError(RiggerError, TypeError):
    """A callable needs parameters that neither the event locals nor the globals hold."""


class HookReturnError(RiggerError, TypeError):
    """A callable returned something other than ``None`` or ``(locals, globals)``."""


class ShuttingDown(RiggerError):
    """The dispatcher is not accepting events (not started, stopping or stopped)."""


class WouldDeadlock(RiggerError, RuntimeError):
    """A hook waited on an event that can only run after the hook itself returns."""


class BackgroundError(RiggerError):
    """A backgrounded hook failed in a worker process, or its worker died running it.

    The message names the instance, the event, the worker's pid and carries the
    traceback text from the worker (the exception itself stays in the worker).
    """


class UnsafePath(RiggerError, ValueError):
    """A path was refused: it is absolute or climbs out with ``..`` where a relative one is
    needed, lies outside its root, or a symbolic link stands where a file or directory is
    to be created (see :mod:`rigger_mp.safe_paths`). The message names the path."""
