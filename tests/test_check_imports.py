""".ci/check_imports.py: import cycles, counting every import, run on small packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "check_imports.py"


def check(tmp_path: Path, files: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Write the package ``pkg`` from ``files`` (path -> source) and run the script on it."""
    for name, source in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for package in {p.parent for p in (tmp_path / "pkg").rglob("*.py")}:
        (package / "__init__.py").touch()
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "pkg")],
        capture_output=True,
        text=True,
        timeout=60,
    )


CYCLES = {
    "in a function": {
        "a.py": "x = 1\ndef f():\n    from . import b\n",
        "b.py": "from .a import x\n",
    },
    "under TYPE_CHECKING": {
        "a.py": "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from pkg.b import y\n",
        "b.py": "import pkg.a\ny = 1\n",
    },
    "top level": {  # relative imports two levels up and down
        "a.py": "from .sub.c import z\nx = 1\n",
        "sub/c.py": "from ..a import x\nz = 1\n",
    },
}


@pytest.mark.parametrize("files", CYCLES.values(), ids=CYCLES.keys())
def test_a_cycle_through_any_import_is_listed_and_fails(
    tmp_path: Path, files: dict[str, str]
) -> None:
    done = check(tmp_path, files)
    assert done.returncode == 1, done
    how = next(k for k, v in CYCLES.items() if v is files)
    first, second = ("pkg." + name.removesuffix(".py").replace("/", ".") for name in files)
    assert f"import cycle among 2 modules: {first}, {second}" in done.stdout
    assert f"({tmp_path / 'pkg' / next(iter(files))}:" in done.stdout
    assert f", {how})" in done.stdout


def test_parent_packages_and_acyclic_imports_pass(tmp_path: Path) -> None:
    # pkg -> pkg.a -> pkg.sub.c: importing pkg.sub.c runs pkg/__init__, not counted.
    done = check(
        tmp_path,
        {"__init__.py": "from .a import x\n", "a.py": "import pkg.sub.c\nx = 1\n", "sub/c.py": ""},
    )
    assert done.returncode == 0, done
    assert "no import cycles" in done.stdout


def test_from_a_package_import_a_name_is_an_edge_to_the_package(tmp_path: Path) -> None:
    done = check(tmp_path, {"__init__.py": "from .a import x\n", "a.py": "from pkg import V\n"})
    assert done.returncode == 1, done
    assert "pkg.a -> pkg  (" in done.stdout
