"""The import graph of rigger_mp: no cycles, and the process roles depend one way.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a cycle
hidden there still ties the modules together.
"""

from __future__ import annotations

import ast
from graphlib import TopologicalSorter
from pathlib import Path

import rigger_mp

ROOT = Path(rigger_mp.__file__).parent


def module_files() -> dict[str, Path]:
    """``rigger_mp.x.y`` -> its file, for every module and package of rigger_mp."""
    files = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names ``node`` in module ``name`` imports (a module, or a module's name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    target = ".".join(base + ([node.module] if node.module else []))
    return [f"{target}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Each rigger_mp module -> the rigger_mp modules it imports anywhere in its code."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported(name, path, node):
                while target and target not in files:  # a name in a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
    return graph


def test_the_graph_sees_imports_in_functions_and_under_type_checking() -> None:
    deps = import_graph()["rigger_mp.core.rigger"]
    assert "rigger_mp.server.supervisor" in deps  # imported inside _start_server
    assert "rigger_mp.core.port" in import_graph()["rigger_mp.pool.background"]


def test_no_import_cycle() -> None:
    TopologicalSorter(import_graph()).prepare()  # CycleError names the cycle


def test_the_pool_and_the_server_do_not_import_the_facade() -> None:
    importers = {name for name, deps in import_graph().items() if "rigger_mp.core.rigger" in deps}
    assert not {n for n in importers if n.startswith(("rigger_mp.pool", "rigger_mp.server"))}
    assert not {n for n in importers if n.startswith("rigger_mp.core.")}


def test_the_worker_does_not_import_the_pool_that_starts_it() -> None:
    graph = import_graph()
    assert "rigger_mp.pool.processes" in graph["rigger_mp.pool.local"]
    assert "rigger_mp.pool.worker" in graph["rigger_mp.pool.processes"]
    assert not {"rigger_mp.pool.local", "rigger_mp.pool.processes"} & graph["rigger_mp.pool.worker"]


DISPATCHER_INTERFACE = {
    "rigger_mp.core.port",  # the port: what the pool side and the intake may ask
    "rigger_mp.core.config",  # the config type they are started with
    "rigger_mp.core.plugin",  # the plugin API a worker hosts plugins through
    "rigger_mp.core.task",  # what the port's accept_batch returns
}


def test_the_pool_and_the_server_use_core_only_for_the_dispatchers_interface() -> None:
    uses = {
        dep
        for name, deps in import_graph().items()
        if name.startswith(("rigger_mp.pool", "rigger_mp.server"))
        for dep in deps
        if dep.startswith("rigger_mp.core")
    }
    assert uses <= DISPATCHER_INTERFACE, sorted(uses - DISPATCHER_INTERFACE)


def test_the_rigger_keeps_only_its_public_api() -> None:
    """What the pool side and the intake need is the port's, not the Rigger's."""
    from rigger_mp import Rigger
    from rigger_mp.compat import Rigger as CompatRigger
    from rigger_mp.core.dispatcher_port import DispatcherPort

    internal = {
        "accept_batch",
        "server_gone",
        "adopt_thread",
        "on_event_thread",
        "backlog",
        "accepted_count",
        "events_running",
        "report_failure",
        "plugin_hooks_changed",
    }
    assert not internal & set(dir(Rigger))
    assert not internal & set(dir(CompatRigger))
    assert {"accept_batch", "server_gone"} <= set(dir(DispatcherPort))
