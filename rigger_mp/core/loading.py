"""Finding plugin classes by name, along one lookup path.

1. names given to ``Rigger.register_plugin``;
2. the built-in plugins (:data:`rigger_mp.plugins.BUILTIN`) and the plugins other
   installed packages declare in the entry point group ``rigger_mp.plugins``
   (name -> ``package.module:Class``; rigger_mp declares its built-ins there too);
3. an importable ``package.module:Class`` written in the config.

Entry points are read when a name is looked up, not cached: a package installed while
the interpreter runs is found by the next ``start()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from .. import printable
from ..deadline import Deadline
from ..errors import PluginError
from ..naming import describe
from ..plugins import BUILTIN
from .config import InstanceConfig, RiggerConfig
from .plugin import Dispatcher, PluginInstance, RiggerBasePlugin, import_class
from .plugin_config import check_instance_keys, is_file_source, located

logger = printable.logger("rigger_mp")

PluginClass = type[RiggerBasePlugin]

ENTRY_POINT_GROUP = "rigger_mp.plugins"
"""The entry point group other packages use to provide plugins: ``name = "pkg.mod:Class"``."""


def discover_plugins() -> dict[str, dict[str, str]]:
    """Plugin name -> {``package.module:Class`` -> who provides it}.

    A name normally has one target; more than one means two installed packages claim
    the same name, which :func:`resolve_plugin` reports instead of picking one.
    """
    table: dict[str, dict[str, str]] = {
        name: {target: "rigger_mp (built-in)"} for name, target in BUILTIN.items()
    }
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        provider = f"package {dist.name}" if dist is not None else "an entry point"
        table.setdefault(ep.name, {}).setdefault(ep.value.strip(), provider)
    return table


def resolve_plugin(name: str, ident: str, registered: Mapping[str, PluginClass]) -> PluginClass:
    """The class behind plugin ``name`` for instance ``ident``."""
    if name in registered:
        return registered[name]
    discovered = discover_plugins()
    targets = discovered.get(name)
    if targets is not None and len(targets) > 1:
        claims = "; ".join(f"{who}: {target}" for target, who in sorted(targets.items()))
        raise PluginError(
            f"instance {ident!r}: plugin name {name!r} is provided by more than one "
            f"package ({claims}); write the 'package.module:Class' you mean instead"
        )
    path = next(iter(targets)) if targets else name
    if ":" in path:
        try:
            return import_class(path)
        except PluginError as exc:
            where = f" (from {targets[path]})" if targets else ""
            raise PluginError(f"instance {ident!r}: plugin {name!r}{where}: {exc}") from exc
    known = ", ".join(sorted({*registered, *discovered})) or "none"
    raise PluginError(
        f"instance {ident!r}: unknown plugin {name!r} (known plugins: {known}; "
        f"or give an importable 'package.module:Class'; packages provide plugins "
        f"through the entry point group {ENTRY_POINT_GROUP!r})"
    )


def instance_class(
    spec: InstanceConfig, source: str, registered: Mapping[str, PluginClass]
) -> PluginClass:
    """The class of instance ``spec``, its keys checked against what the class declares
    (``source`` is :attr:`RiggerConfig.source`, so that an error names the file)."""
    try:
        cls = resolve_plugin(spec.plugin, spec.ident, registered)
    except PluginError as exc:
        if not is_file_source(source):
            raise
        raise PluginError(f"{located(source, spec.ident, 'plugin')}: {exc}") from exc
    check_instance_keys(cls, spec, source)
    return cls


def check_config_keys(settings: RiggerConfig) -> None:
    """Check every instance's keys of a loaded file against its class, naming the file and
    line: for hosts (``serve``, the pytest plugin) that start a Rigger on the file's
    mapping, whose own check can name only "the config"."""
    for spec in settings.plugins.values():
        instance_class(spec, settings.source, {})


class InstanceLookup:
    """riggerlib's accessors of the built instances (a base of the Rigger)."""

    instances: dict[str, PluginInstance]

    def get_instance_obj(self, name: str) -> RiggerBasePlugin | None:
        """The plugin object of instance ``name``, or ``None``."""
        instance = self.instances.get(name)
        return instance.obj if instance else None

    def get_instance_data(self, name: str) -> Mapping[str, Any] | None:
        """The config mapping of instance ``name``, or ``None``."""
        instance = self.instances.get(name)
        return instance.data if instance else None

    def configure_plugin(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``configure(*args, **kwargs)`` on instance ``name``."""
        obj = self.get_instance_obj(name)
        if obj is None:
            raise PluginError(f"configure_plugin: no enabled instance named {name!r}")
        obj.configure(*args, **kwargs)


def build_instances(
    settings: RiggerConfig, registered: Mapping[str, PluginClass], rigger: Dispatcher
) -> dict[str, PluginInstance]:
    """The enabled instances of the config, each built from its plugin class.

    A plugin given to ``register_plugin`` that no instance of the config names is logged:
    it would never run, and nothing else would say so.
    """
    named = {spec.plugin for spec in settings.plugins.values()}
    for name in sorted(set(registered) - named):
        logger.warning(
            "plugin %r is registered but no instance in %s uses it, so it never "
            "runs (add plugins: {<instance>: {plugin: %s}} to the config)",
            name,
            settings.source,
            name,
        )
    instances: dict[str, PluginInstance] = {}
    try:
        for ident, spec in settings.plugins.items():
            cls = instance_class(spec, settings.source, registered)
            if not spec.enabled:
                continue
            try:
                obj = cls(ident, spec.data, rigger)
            except Exception as exc:
                raise PluginError(
                    f"instance {ident!r}: building plugin {spec.plugin!r} "
                    f"({describe(cls)}) failed: {type(exc).__name__}: {exc}"
                ) from exc
            instances[ident] = PluginInstance(ident, obj, spec.data, spec)
    except BaseException:
        stop_instances(instances, Deadline(UNDO_TIMEOUT))  # those built before it
        raise
    return instances


UNDO_TIMEOUT = 10.0
"""Seconds the plugins built by a start that failed have to stop in (``plugin_stop``)."""


def stop_instances(instances: Mapping[str, PluginInstance], deadline: Deadline) -> None:
    """Each instance's ``plugin_stop``, with what is left of ``deadline``: it ends its own
    work (a report being written, its threads, its open files); one that raises is logged."""
    for ident, instance in instances.items():
        try:
            instance.obj.plugin_stop(deadline.left())
        except Exception:
            logger.exception("plugin_stop of instance %r failed", ident)
