"""Import cost: what ``import rigger_mp``, the pytest plugin and the client load.

pytest imports the plugin in every run (the ``pytest11`` entry point) and a program that
only fires events imports the client: neither may pay for the dispatcher. Each check runs
in a fresh interpreter, which reports the modules the statement added to ``sys.modules``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import rigger_mp

HEAVY = ("multiprocessing.managers", "psutil", "asyncio", "yaml")
"""Costly modules none of the three may load."""
DISPATCHER = ("rigger_mp.core", "rigger_mp.pool", "rigger_mp.server", "rigger_mp.cli")


def loaded_by(statement: str, setup: str = "pass") -> set[str]:
    """The modules ``statement`` adds to ``sys.modules`` in a fresh interpreter."""
    code = (
        f"import sys\n{setup}\nbefore = set(sys.modules)\n{statement}\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


def assert_light(modules: set[str]) -> None:
    """None of ``modules`` is one of HEAVY or DISPATCHER, or inside one."""
    heavy = {m for m in modules for p in HEAVY + DISPATCHER if m == p or m.startswith(p + ".")}
    assert not heavy, sorted(heavy)


def test_import_rigger_mp_loads_only_the_package_itself() -> None:
    assert loaded_by("import rigger_mp") == {"rigger_mp"}


def test_importing_the_pytest_plugin_loads_nothing_pytest_has_not() -> None:
    added = loaded_by("import rigger_mp.pytest_plugin", setup="import pytest")
    assert added == {"rigger_mp", "rigger_mp.pytest_plugin", "rigger_mp.pytest_options"}


def test_importing_the_pytest_plugin_alone_loads_no_heavy_module() -> None:
    assert_light(loaded_by("import rigger_mp.pytest_plugin"))


def test_importing_the_client_loads_no_dispatcher() -> None:
    added = loaded_by("import rigger_mp.client")
    assert_light(added)
    assert {m for m in added if m.startswith("rigger_mp")} == {
        "rigger_mp",
        "rigger_mp.client",
        "rigger_mp.errors",
        "rigger_mp.protocol",
    }


def test_every_name_of_all_is_listed_by_dir_and_imports_from_a_fresh_interpreter() -> None:
    # dir() before any lazy import, then each name on its own, then the star import.
    code = (
        "names = sorted(set(rigger_mp.__all__) - set(dir(rigger_mp)))\n"
        "assert not names, names\n"
        "for name in rigger_mp.__all__:\n"
        "    exec(f'from rigger_mp import {name}')\n"
        "exec('from rigger_mp import *')"
    )
    loaded_by(code, setup="import rigger_mp")  # check=True: an assertion fails the run


def test_every_name_of_all_is_the_object_its_module_defines() -> None:
    for name in rigger_mp.__all__:
        value = getattr(rigger_mp, name)
        assert value.__name__ == name
        assert value.__module__.startswith("rigger_mp.")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        rigger_mp.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from rigger_mp import nope")
