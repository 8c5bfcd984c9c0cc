"""The plugin API: the base class a plugin author subclasses, and what a plugin host uses.

A host is the main process or a worker process: each builds plugin instances from their
class, imported by its ``package.module:Class`` path (:func:`import_class`), and runs
their hooks (:class:`PluginHook`).
"""

from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar

from ..errors import PluginError
from ..naming import describe
from .calling import Callee, is_async_callable

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .config import InstanceConfig

F = TypeVar("F", bound=Callable[..., Any])

ConfigKeys = Mapping[str, type | tuple[type, ...]]
"""What a plugin class declares in ``config_keys``: key -> type, or a tuple of types."""


class Dispatcher:
    """What a plugin may ask of the dispatcher that loaded it."""

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Future[dict[str, Any]]:
        raise NotImplementedError


_binding_watchers: weakref.WeakKeyDictionary[Dispatcher, Callable[[], None]] = (
    weakref.WeakKeyDictionary()
)


def watch_bindings(dispatcher: Dispatcher, changed: Callable[[], None]) -> None:
    """Call ``changed`` whenever a plugin of ``dispatcher`` binds a hook (a dispatcher
    that caches who runs for an event forgets it then). Kept only while ``dispatcher``
    lives, and no method of its public API: the plugin tells it through this table."""
    _binding_watchers[dispatcher] = changed


IO_LANE: Final = "io"
"""``bg`` (or an instance's ``background``) for the I/O lane: an ``async def`` hook run on
the dispatcher's coroutine thread without holding up the events behind it."""

Background = bool | Literal["io"]
"""Where a hook runs: False in its event's stages, True in the worker pool, "io" in the
I/O lane."""


@dataclass(frozen=True)
class PluginHook:
    """One plugin's binding of an event: the callee and where it runs (see Background)."""

    event: str
    callee: Callee
    bg: Background


def check_lane(label: str, callee: Callee, bg: Any) -> None:
    """TypeError unless ``bg`` is a place where ``callee`` can run: the I/O lane takes only
    ``async def`` hooks, and a worker process does not run coroutines."""
    if bg not in (False, True, IO_LANE):
        raise TypeError(f"{label}: bg must be False, True or {IO_LANE!r}, not {bg!r}")
    if bg == IO_LANE and not callee.is_async:
        raise TypeError(f"{label}: bg={IO_LANE!r} runs an async def hook; this one is not")
    if bg is True and callee.is_async:
        raise TypeError(
            f"{label}: an async def hook cannot run in the worker pool (bg=True); use "
            f"bg={IO_LANE!r} to run it without holding up the events behind it"
        )


class RiggerBasePlugin:
    """Base class of plugins.

    Subclasses bind their hooks in :meth:`plugin_initialize`, which runs once per
    instance. ``ident`` is the instance's name in the config and ``data`` its mapping.

    ``config_keys`` declares the keys an instance of the plugin accepts and their types
    (``type(None)`` in a tuple allows null; ``plugin``, ``enabled`` and ``background``
    are always allowed): ``start()`` and ``serve --check`` then reject an unknown key
    or a wrong type (see :mod:`rigger_mp.core.plugin_config`). ``None``, the default,
    declares nothing and accepts any key. A subclass that adds keys extends its base's
    mapping: ``config_keys = {**Base.config_keys, "extra": int}``.
    """

    config_keys: ClassVar[ConfigKeys | None] = None

    def __init__(
        self, ident: str, data: Mapping[str, Any], rigger: Dispatcher | None = None
    ) -> None:
        self.ident = ident
        self.data = data
        self.callbacks: dict[str, PluginHook] = {}
        self.configured = False
        self._rigger = rigger
        self.plugin_initialize()

    def plugin_initialize(self) -> None:
        """Bind hooks here with :meth:`register_plugin_hook`."""

    def register_plugin_hook(
        self, event: str, callback: Callable[..., Any] | None = None, bg: Background = False
    ) -> None:
        """Bind ``callback`` (default: the method named like ``event``) to ``event``.

        One callable per event per plugin; a second binding replaces the first.
        ``bg=True`` runs the hook in the worker pool instead of the event's thread;
        ``bg="io"`` runs an ``async def`` hook in the I/O lane: on the dispatcher's
        coroutine thread, without holding up the events behind it.
        """
        if not isinstance(event, str) or not event:
            raise TypeError(f"plugin {self.ident!r}: event name must be a non-empty string")
        if callback is None:
            callback = getattr(self, event, None)
            if callback is None:
                raise TypeError(
                    f"plugin {self.ident!r} ({type(self).__name__}) has no method named "
                    f"{event!r} to bind; pass callback="
                )
        label = f"hook {event!r} of instance {self.ident!r} ({describe(callback)})"
        callee = Callee(callback, label)
        check_lane(label, callee, bg)
        self.callbacks[event] = PluginHook(event, callee, bg)
        if self._rigger is not None:
            changed = _binding_watchers.get(self._rigger)
            if changed is not None:
                changed()

    def plugin_stop(self, timeout: float | None) -> None:
        """Called once by the dispatcher's ``stop()``, after the events have drained:
        finish what the plugin does off the event thread (a report being written), within
        ``timeout`` seconds (``None``: no bound). Also called, with no event run, when the
        start that built the instance failed (a later instance, the journal, the pool).
        Does nothing by default."""

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Future[dict[str, Any]]:
        """Fire an event from inside a hook; it runs after the current event."""
        if self._rigger is None:
            raise RuntimeError(f"plugin {self.ident!r} is not attached to a dispatcher")
        return self._rigger.fire_hook(hook_name, **kwargs)

    def configure(self, *args: Any, **kwargs: Any) -> None:
        """Mark the plugin configured; override to take settings (riggerlib's API)."""
        self.configured = True

    @staticmethod
    def check_configured(func: F) -> F:
        """Decorate a hook so that it does nothing until the plugin is configured."""

        if is_async_callable(func):  # stays async def: awaited, and allowed in the I/O lane

            @functools.wraps(func)
            async def awaited(self: RiggerBasePlugin, *args: Any, **kwargs: Any) -> Any:
                if self.configured:
                    return await func(self, *args, **kwargs)
                return None

            return awaited  # type: ignore[return-value]

        @functools.wraps(func)
        def inner(self: RiggerBasePlugin, *args: Any, **kwargs: Any) -> Any:
            if self.configured:
                return func(self, *args, **kwargs)
            return None

        return inner  # type: ignore[return-value]


@dataclass(frozen=True)
class PluginInstance:
    """A loaded plugin instance: riggerlib's ``RiggerPluginInstance``."""

    ident: str
    obj: RiggerBasePlugin
    data: Mapping[str, Any]
    config: InstanceConfig


def import_class(path: str) -> type[RiggerBasePlugin]:
    """Import ``package.module:Class`` and check that it is a plugin class."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise PluginError(f"{path!r} is not of the form 'package.module:Class'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, RiggerBasePlugin)):
        raise PluginError(f"{path!r} is {obj!r}, not a subclass of RiggerBasePlugin")
    return obj
