"""Plans: who runs for an event name, stage by stage, worked out once and cached.

The event thread asks its planner (the Rigger's bindings of now) on a cache miss and
keeps the plan until a binding changes; names nothing is bound to share one empty plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from .calling import Callee
from .plugin import PluginHook, PluginInstance

Backgrounded = tuple[PluginInstance, PluginHook]


class Plan(NamedTuple):
    """The callables one event name runs, stage by stage."""

    pre: tuple[Callee, ...]
    foreground: tuple[Callee, ...]
    background: tuple[Backgrounded, ...]
    post: tuple[Callee, ...]


def make_plan(
    instances: Mapping[str, PluginInstance],
    pre: Mapping[str, Mapping[str, Callee]],
    post: Mapping[str, Mapping[str, Callee]],
    hook_name: str,
) -> Plan:
    """Who runs for ``hook_name``: its pre and post callbacks, and the instances' hooks
    bound to it, split into foreground and backgrounded ones."""
    foreground: list[Callee] = []
    background: list[Backgrounded] = []
    for instance in instances.values():
        hook = instance.obj.callbacks.get(hook_name)
        if hook is None:
            continue
        if hook.bg or instance.config.background:
            background.append((instance, hook))
        else:
            foreground.append(hook.callee)
    return Plan(
        tuple(pre.get(hook_name, {}).values()),
        tuple(foreground),
        tuple(background),
        tuple(post.get(hook_name, {}).values()),
    )


EMPTY_PLAN: Final = Plan((), (), (), ())
"""The plan of every name nothing is bound to: shared, never cached, so that clients
firing names no one listens to cannot fill the plan cache."""
MAX_CACHED_PLANS: Final = 10_000
"""Default of ``max_cached_plans``: plans kept, the least recently used dropped first."""


def new_plan(
    planner: Callable[[str], Plan], plans: OrderedDict[str, Plan], hook_name: str, cap: int
) -> Plan:
    """``hook_name``'s plan on a cache miss, kept in ``plans`` (least recently used
    dropped beyond ``cap``) until a binding changes; the shared :data:`EMPTY_PLAN`,
    uncached, if nothing is bound. ``plans`` is the cache taken before the miss: a
    binding changed meanwhile drops it, and this plan with it."""
    plan = planner(hook_name)
    if not (plan.pre or plan.foreground or plan.background or plan.post):
        return EMPTY_PLAN
    plans[hook_name] = plan
    if len(plans) > cap:
        plans.popitem(last=False)
    return plan
