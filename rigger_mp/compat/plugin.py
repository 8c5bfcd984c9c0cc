"""riggerlib 3.1.6's ``RiggerBasePlugin`` on top of rigger_mp's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..core.plugin import Background, Dispatcher
from ..core.plugin import RiggerBasePlugin as _RiggerBasePlugin
from ._warn import warn_once
from .rigger import Rigger


class RiggerBasePlugin(_RiggerBasePlugin):
    """A plugin as riggerlib built it: ``(ident, data, rigger)``, ``self._rigger_instance``.

    Under a compat :class:`Rigger`, ``data`` is the instance's own mapping from the
    program's config, and the hooks of an instance with ``background: true`` run on
    the compat background thread, as riggerlib ran them.
    """

    def __init__(
        self, ident: str, data: Mapping[str, Any], _rigger_instance: Dispatcher | None = None
    ) -> None:
        if isinstance(_rigger_instance, Rigger):
            data = _rigger_instance.instance_data(ident, data)
        self._rigger_instance = _rigger_instance
        super().__init__(ident, data, _rigger_instance)

    def register_plugin_hook(
        self, event: str, callback: Callable[..., Any] | None = None, bg: Background = False
    ) -> None:
        """Bind ``callback`` (default: the method named like ``event``) to ``event``.

        ``bg`` is ignored, as riggerlib 3.1.6 ignored it: only an instance's
        ``background: true`` backgrounds its hooks.
        """
        if bg:
            warn_once(
                "bg-ignored",
                f"plugin {self.ident!r}: register_plugin_hook({event!r}, bg=True) runs the "
                "hook in the event's thread, as riggerlib 3.1.6 did (it ignored bg); "
                "set background: true on the instance, or use rigger_mp.RiggerBasePlugin, "
                "whose bg=True runs the hook in the worker pool",
            )
        if callback is None:
            callback = getattr(self, event)
        rigger = self._rigger_instance
        if isinstance(rigger, Rigger):
            callback = rigger.backgrounded(self.ident, callback)
        super().register_plugin_hook(event, callback)

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Any:
        """Fire an event from a hook; ``grab_result`` is refused with a logged error."""
        rigger = self._rigger_instance
        if "grab_result" in kwargs:
            if isinstance(rigger, Rigger):
                rigger.log_message("ERROR: Cannot grab result of a nested hook")
            kwargs.pop("grab_result")
        return super().fire_hook(hook_name, **kwargs)
