"""Where a test's files go: the ``rigger_artifacts`` and ``rigger_attach`` fixtures' side.

A test's artifact directory is the one the dispatcher's plugins use for it,
``<root>/<run_id>/<location>/<name>`` (:func:`rigger_mp.plugins.artifacts.artifact_dir`),
when the test runs where the dispatcher can see the files:

- ``--rigger-config``: the root is the embedded dispatcher's (``--rigger-artifacts``);
- ``--rigger HOST:PORT``: the session's process asks the dispatcher with the ``info``
  op (its host name and artifacts root); a dispatcher on this host (the same host name)
  shares this filesystem, and its root is used;
- xdist workers get the controller's answer through ``workerinput``.

A dispatcher on another host cannot see files written here: the tests' files are then
written on this host, under ``--rigger-artifacts`` with the same layout, and uploaded
(:class:`Uploader`, the ``attach`` op) into the same directory on the dispatcher's
host: each ``rigger_attach`` at once, the rest of the directory when the test ends,
before its ``finish_test``, which lists what arrived. A file that could not be uploaded
stays here; the ``rigger_mp`` section of the summary lists it and the run fails. Without
``--rigger`` or ``--rigger-config`` the fixtures still work, under pytest's ``tmp_path``.

Every directory and file is created through :mod:`rigger_mp.safe_paths` from the root
down: a link planted in the root is never followed, and a name with ``..`` or an absolute
path is refused with :class:`~rigger_mp.errors.UnsafePath`.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import RiggerError
from .plugins.artifacts import artifact_dir
from .safe_paths import make_dirs, open_file, relative_parts, write_atomically

MAX_ATTACHMENTS = 1000
"""Files listed in one ``finish_test``'s ``attachments``; the rest stay on disk unlisted."""
MAX_ATTACHMENT_NAMES = 64 * 1024
"""Bytes of names listed in one ``finish_test``'s ``attachments``; likewise."""

if TYPE_CHECKING:
    from .client import RiggerClient

Data = bytes | str | os.PathLike[str]
"""What ``rigger_attach`` takes: bytes, text (a ``str``, written as UTF-8) or a file to copy
(a path object: a ``str`` is text)."""


@dataclass(frozen=True)
class Place:
    """Where this process writes its tests' files.

    ``shared``: whether the dispatcher sees them (the same filesystem); ``run_id``: the
    run's, or None for a directory without a run part (no dispatcher).
    """

    root: Path
    run_id: str | None
    shared: bool

    def as_input(self) -> dict[str, Any]:
        """Plain data for an xdist worker's ``workerinput``."""
        return {"root": str(self.root), "run_id": self.run_id, "shared": self.shared}

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> Place:
        """The controller's :meth:`as_input`."""
        return cls(Path(data["root"]), data["run_id"], bool(data["shared"]))

    def relative(self, location: str, name: str) -> Path:
        """A test's artifact directory, relative to the root."""
        return artifact_dir("", location, name, self.run_id)

    def make(self, relative: Path) -> Path:
        """Create the test's directory (and the root), following no link below the root."""
        self.root.mkdir(parents=True, exist_ok=True)
        return make_dirs(self.root, relative)

    def attach(self, relative: Path, name: str, data: Data) -> Path:
        """Write ``data`` as ``name`` (a relative path) into the test's directory."""
        parts = relative_parts(name)  # UnsafePath for "..", an absolute path, a NUL
        target = relative.joinpath(*parts)
        if isinstance(data, bytes | str):
            raw = data.encode() if isinstance(data, str) else data
            return write_atomically(self.root, target, raw)
        with open(data, "rb") as source:
            fd = open_file(self.root, target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out)
        return self.root / target

    def listing(self, relative: Path) -> list[dict[str, Any]]:
        """The regular files under the test's directory, ``{"name", "size"}`` sorted by
        name, links not followed; the first :data:`MAX_ATTACHMENTS`, at most
        :data:`MAX_ATTACHMENT_NAMES` bytes of names."""
        top = self.root / relative
        files: list[tuple[str, int]] = []
        for folder, _, names in os.walk(top):  # does not descend into linked directories
            for file in names:
                path = Path(folder, file)
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode) or (file.startswith(".") and ".part-" in file):
                    continue  # a link, a FIFO, or a write still under way
                files.append((PurePosixPath(*path.relative_to(top).parts).as_posix(), info.st_size))
        found: list[dict[str, Any]] = []
        room = MAX_ATTACHMENT_NAMES
        for name, size in sorted(files)[:MAX_ATTACHMENTS]:
            room -= len(name.encode())
            if room < 0:
                break
            found.append({"name": name, "size": size})
        return found


class Uploader:
    """Sends the tests' files to a dispatcher on another host over its own connection, so
    that they land in the same directory there as here (``<run_id>/<location>/<name>``).

    ``sent`` remembers, per test directory, the size of each file uploaded, so that the
    pass at the test's end sends only what is new or changed.
    """

    def __init__(self, client: RiggerClient) -> None:
        self.client = client
        self.sent: dict[Path, dict[str, int]] = {}

    def send(self, place: Place, relative: Path, test: tuple[str, Any, str], name: str) -> None:
        """Upload one file written by ``rigger_attach``; a failure is left to
        :meth:`send_all`, which tries again and reports it."""
        name = PurePosixPath(*relative_parts(name)).as_posix()
        path = place.root / relative / name
        try:
            self.client.attach(test[0], test[2], name, path, run_id=place.run_id)
        except (RiggerError, OSError):
            return
        self.sent.setdefault(relative, {})[name] = path.stat().st_size

    def send_all(
        self, place: Place, relative: Path, test: tuple[str, Any, str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Upload the files of the test's directory not sent yet: the listing of those the
        dispatcher has (for ``finish_test``), and what failed."""
        sent = self.sent.pop(relative, {})
        arrived: list[dict[str, Any]] = []
        failed: list[str] = []
        for entry in place.listing(relative):
            name, size = entry["name"], entry["size"]
            if sent.get(name) != size:
                try:
                    self.client.attach(
                        test[0], test[2], name, place.root / relative / name, run_id=place.run_id
                    )
                except (RiggerError, OSError) as exc:
                    failed.append(f"{name}: {exc}")
                    continue
            arrived.append(entry)
        return arrived, failed

    def close(self) -> None:
        self.client.close()
