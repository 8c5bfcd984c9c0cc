"""Import cycles between the modules of a package; exit 1 listing each one.

Every import counts: at the top level, inside functions and under ``if TYPE_CHECKING``,
since each is a dependency between the two modules even when it does not run at import
time (a cycle there is one lazy import away from an ImportError). Relative imports are
resolved; ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the
package, else to ``pkg``. Importing ``a.b.c`` is an edge to ``a.b.c`` alone: the parent
packages it also runs are not counted, or every ``__init__`` re-export would be a cycle.

Usage: ``python .ci/check_imports.py [PACKAGE_DIR ...]`` (default: ``rigger_mp``).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``where`` (``file:line``), in context ``how``."""

    source: str
    target: str
    where: str
    how: str


def modules(package_dir: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package."""
    root = package_dir.resolve().parent
    found = {}
    for path in sorted(package_dir.resolve().rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    nodes: list[ast.stmt], how: str = "top level"
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement among ``nodes`` with the context it runs in."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, how
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, "in a function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.body, "under TYPE_CHECKING")
            yield from _imports(node.orelse, how)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, ()):
                    if isinstance(child, ast.stmt):
                        yield from _imports([child], how)
                    else:  # an except handler or a match case: statements inside
                        yield from _imports(child.body, how)


def edges(name: str, path: Path, known: dict[str, Path]) -> Iterator[Edge]:
    """The imports of module ``name`` that name a module of the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    for node, how in _imports(tree.body):
        where = f"{path}:{node.lineno}"
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        for target in dict.fromkeys(targets):
            if target in known and target != name:
                yield Edge(name, target, where, how)


def cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str]) -> int:
    """Check each package directory in ``argv``; 1 if any has a cycle."""
    status = 0
    for package_dir in argv or ["rigger_mp"]:
        known = modules(Path(package_dir))
        graph = {name: list(edges(name, path, known)) for name, path in known.items()}
        for component in cycles(graph):
            status = 1
            members = set(component)
            print(f"import cycle among {len(component)} modules: {', '.join(component)}")
            for name in component:
                for edge in graph[name]:
                    if edge.target in members:
                        print(f"  {edge.source} -> {edge.target}  ({edge.where}, {edge.how})")
    if status == 0:
        print(f"no import cycles in {', '.join(argv or ['rigger_mp'])}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
