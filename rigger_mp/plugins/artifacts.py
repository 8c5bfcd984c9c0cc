"""Where a test's artifacts go, and the event that says they are complete.

The main job: each test writes logs and screenshots into its own directory, and once the
test has finished, the directory is packed into an archive. Two callbacks make that work
with any plugins:

- a pre callback of ``start_test``, ``finish_test`` and ``artifacts_ready`` puts
  ``artifacts_root`` (a :class:`TrustedRoot`, replacing any value the event carried) and
  ``artifact_path`` = ``<root>/<run_id>/<test_location>/<test_name>`` into the event's
  locals (``<root>/<test_location>/<test_name>`` for an event without a ``run_id``: one
  directory per run, so that two runs of the same test never share one),
  unless the event was fired with an ``artifact_path`` (so a client that knows better
  wins): that one is made absolute against the root, once, here, and must lie strictly
  inside it; a path outside it or the root itself fails the event, since events may come
  from the network and the archiver may delete what it packs (which checks again, with
  symlinks resolved, where it packs);
- a post callback of ``finish_test`` fires ``artifacts_ready`` with the same names
  (``test_name``, ``test_location``, ``test_result``, ``artifact_path`` and, when the
  ``finish_test`` had one, ``run_id``, which every event of a test run carries). By
  then every foreground hook of ``finish_test`` (the per-test log, say) has finished
  writing, so a backgrounded archiver bound to ``artifacts_ready`` packs a complete
  directory. Bound to ``finish_test`` itself it would race those hooks: backgrounded
  hooks start right after the pre callbacks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

READY_EVENT = "artifacts_ready"
"""Fired after each ``finish_test`` once its foreground hooks are done."""


class Installable(Protocol):
    """What :func:`install` uses of a dispatcher (a :class:`~rigger_mp.Rigger`): named
    here rather than imported, so that the dispatcher's core may read the plugins' run
    state without an import cycle."""

    artifacts_root: Path | None

    def fire_hook(self, hook_name: str, /, **kwargs: Any) -> Any: ...

    def register_hook_callback(
        self,
        hook_name: str,
        ctype: str = "pre",
        callback: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> str: ...


class TrustedRoot(str):
    """The artifacts root as :func:`install` states it in an event's locals.

    A ``str`` (so a reply carrying it is still JSON) of a type that no event from the
    network can carry: a plugin that finds one knows the dispatcher put it there.
    """


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,@\[\]-]+")


def safe_part(text: str) -> str:
    """A path component made from a test name or location: no separators, no ``..``."""
    part = _UNSAFE.sub("_", text).strip(".") or "_"
    return part[:120]


def run_dir(root: str | os.PathLike[str], run_id: object = None) -> Path:
    """``<root>/<run_id>``, the directory of one run (its tests' artifacts, its report);
    the root itself without a run id. The run id is made a safe path part, as names are."""
    return Path(root) if run_id is None else Path(root) / safe_part(str(run_id))


def artifact_dir(
    root: str | os.PathLike[str], test_location: str, test_name: str, run_id: object = None
) -> Path:
    """``<root>/<run_id>/<test_location>/<test_name>`` (no run part without a run id), each
    part made safe for the file system."""
    location = [safe_part(p) for p in re.split(r"[/\\:]+", test_location) if p]
    return run_dir(root, run_id).joinpath(*location, safe_part(test_name))


def contained(root: Path, artifact_path: str | os.PathLike[str]) -> Path:
    """``artifact_path`` made absolute against ``root``, if strictly inside it (symlinks
    resolved); a ``ValueError`` if it is outside or is the root itself."""
    path = root / artifact_path
    resolved, real_root = path.resolve(), root.resolve()
    if resolved == real_root:
        raise ValueError(f"artifact_path {os.fspath(artifact_path)!r} is the artifacts root")
    if not resolved.is_relative_to(real_root):
        raise ValueError(
            f"artifact_path {os.fspath(artifact_path)!r} is outside the artifacts root {root}"
        )
    return path


def install(rigger: Installable, root: str | os.PathLike[str]) -> None:
    """Bind the artifact-path pre callbacks and the ``artifacts_ready`` post callback."""
    root = Path(root).absolute()
    trusted = TrustedRoot(root)
    rigger.artifacts_root = root

    def artifact_path(
        test_name: str | None = None,
        test_location: str = "",
        artifact_path: str | None = None,
        run_id: Any = None,
    ) -> tuple[dict[str, Any], None]:
        local: dict[str, Any] = {"artifacts_root": trusted}
        if artifact_path is not None:
            local["artifact_path"] = str(contained(root, artifact_path))
        elif test_name is not None:
            local["artifact_path"] = str(artifact_dir(root, test_location, test_name, run_id))
        return local, None

    def artifacts_ready(
        test_name: str,
        artifact_path: str,
        test_location: str = "",
        test_result: str | None = None,
        run_id: Any = None,
    ) -> None:
        names: dict[str, Any] = {} if run_id is None else {"run_id": run_id}
        rigger.fire_hook(
            READY_EVENT,
            test_name=test_name,
            test_location=test_location,
            test_result=test_result,
            artifact_path=artifact_path,
            **names,
        )

    for event in ("start_test", "finish_test", READY_EVENT):
        rigger.register_hook_callback(event, "pre", artifact_path, name="artifact_path")
    rigger.register_hook_callback("finish_test", "post", artifacts_ready, name=READY_EVENT)
