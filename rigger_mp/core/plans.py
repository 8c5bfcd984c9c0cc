"""Plans: who runs for an event name, stage by stage, worked out once and cached.

The event thread asks its planner (the Rigger's bindings of now) on a cache miss and
keeps the plan until a binding changes; names nothing is bound to share one empty plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from .. import printable
from .calling import Callee
from .plugin import PluginHook, PluginInstance

logger = printable.logger("rigger_mp")

Backgrounded = tuple[PluginInstance, PluginHook]
Timed = Callable[[str, str, Callee], Callee]
"""Wraps instance ``name``'s hook bound to ``event`` so that its calls are timed."""


class Plan(NamedTuple):
    """The callables one event name runs, stage by stage."""

    pre: tuple[Callee, ...]
    foreground: tuple[Callee, ...]
    background: tuple[Backgrounded, ...]
    post: tuple[Callee, ...]
    aio: bool = False
    """Some callable of a stage is ``async def`` (worked out once, not per event)."""


def make_plan(
    instances: Mapping[str, PluginInstance],
    pre: Mapping[str, Mapping[str, Callee]],
    post: Mapping[str, Mapping[str, Callee]],
    hook_name: str,
    timed: Timed | None = None,
) -> Plan:
    """Who runs for ``hook_name``: its pre and post callbacks, and the instances' hooks
    bound to it, split into foreground and backgrounded ones; ``timed`` wraps each
    foreground hook (the instance's name and ``hook_name`` name it)."""
    foreground: list[Callee] = []
    background: list[Backgrounded] = []
    for name, instance in instances.items():
        hook = instance.obj.callbacks.get(hook_name)
        if hook is None:
            continue
        if hook.bg or instance.config.background:
            background.append((instance, hook))
        else:
            callee = hook.callee
            foreground.append(callee if timed is None else timed(name, hook_name, callee))
    stages = (
        tuple(pre.get(hook_name, {}).values()),
        tuple(foreground),
        tuple(post.get(hook_name, {}).values()),
    )
    aio = any(callee.is_async for stage in stages for callee in stage)
    return Plan(stages[0], stages[1], tuple(background), stages[2], aio)


EMPTY_PLAN: Final = Plan((), (), (), ())
"""The plan of every name nothing is bound to: shared, never cached, so that clients
firing names no one listens to cannot fill the plan cache."""
MAX_UNBOUND_NAMED: Final = 100
"""Event names that nothing binds logged (once each); past it one line says no more are."""
MAX_CACHED_PLANS: Final = 10_000
"""Default of ``max_cached_plans``: plans kept, the least recently used dropped first."""


def new_plan(
    planner: Callable[[str], Plan],
    plans: OrderedDict[str, Plan],
    hook_name: str,
    cap: int,
    unbound: Callable[[str], None],
) -> Plan:
    """``hook_name``'s plan on a cache miss, kept in ``plans`` (least recently used
    dropped beyond ``cap``) until a binding changes; the shared :data:`EMPTY_PLAN`,
    uncached, if nothing is bound (``unbound`` is told the name). ``plans`` is the cache
    taken before the miss: a binding changed meanwhile drops it, and this plan with it."""
    plan = planner(hook_name)
    if not (plan.pre or plan.foreground or plan.background or plan.post):
        unbound(hook_name)
        return EMPTY_PLAN
    plans[hook_name] = plan
    if len(plans) > cap:
        plans.popitem(last=False)
    return plan


class UnboundNames:
    """Logs, once per name, an event that nothing binds: most often a typo in a fire or
    a plugin left out of the config, which would otherwise run nothing in silence. At
    most :data:`MAX_UNBOUND_NAMED` names are kept (a client may invent any number)."""

    def __init__(self) -> None:
        self._named: set[str] = set()

    def warn(self, hook_name: str) -> None:
        """Log ``hook_name`` unless it was logged already or the cap was reached."""
        named = self._named
        if hook_name in named or len(named) > MAX_UNBOUND_NAMED:
            return
        named.add(hook_name)
        if len(named) > MAX_UNBOUND_NAMED:
            logger.warning(
                "more than %d event names that nothing binds; no more are logged",
                MAX_UNBOUND_NAMED,
            )
            return
        logger.warning(
            "no plugin or callback binds %r: its events run nothing "
            "(a typo in the name, or a plugin with no instance in the config?)",
            hook_name,
        )


def bound_events(
    instances: Mapping[str, PluginInstance],
    pre: Mapping[str, Mapping[str, Callee]],
    post: Mapping[str, Mapping[str, Callee]],
) -> list[str]:
    """The event names some plugin hook or callback is bound to now (in ``stats()``, so
    that a client can tell a typo from an event that runs nothing on purpose)."""
    names = {name for i in instances.values() for name in [*i.obj.callbacks]}
    for table in (pre, post):
        names.update(name for name, bound in [*table.items()] if bound)
    return sorted(names)


def callback_table(
    pre: dict[str, dict[str, Callee]], post: dict[str, dict[str, Callee]], ctype: str
) -> dict[str, dict[str, Callee]]:
    """The table of ``pre`` or ``post`` callbacks that ``ctype`` names; else ValueError."""
    if ctype == "pre":
        return pre
    if ctype == "post":
        return post
    raise ValueError(f"ctype must be 'pre' or 'post', not {ctype!r}")
