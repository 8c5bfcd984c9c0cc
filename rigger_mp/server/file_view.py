"""``GET /files/{path}``: the files under the artifacts root, for the live page's links to
a run's report and its tests' artifact directories.

::

    GET /files/<run>/report.html        the report, whose relative links then resolve here
    GET /files/<run>/<test dir>/        a directory: a list of links to what is in it
    GET /files/<run>/<test dir>/<file>  a file, streamed

The path is percent-encoded, relative to the root, and opened with
:mod:`rigger_mp.safe_paths`: no ``..``, no absolute path, no link followed anywhere below
the root, regular files and directories only. What the tests wrote is untrusted: every
answer carries ``Content-Security-Policy: sandbox allow-scripts``, so a page among the
artifacts (the report included) runs in an origin of its own and can neither read the
front nor fire through it (its requests carry ``Origin: null``, which the Host and Origin
checks refuse for anything but a GET). A listing escapes each name.

Bounds: a file is sent in :data:`CHUNK` pieces, each read off the event loop and each
write given :data:`~.run_view.WRITE_TIMEOUT`; a listing names at most :data:`MAX_LISTED`
entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import mimetypes
import os
import stat
from typing import Final
from urllib.parse import quote, unquote

from aiohttp import web

from .. import protocol as proto
from .. import safe_paths
from ..errors import UnsafePath
from .run_view import WRITE_TIMEOUT, error

CHUNK: Final = 256 * 1024
MAX_LISTED: Final = 1000
"""Entries a directory's listing names (the rest are counted)."""
SANDBOX: Final = "sandbox allow-scripts"
_TEXT: Final = frozenset({".log", ".txt", ".json", ".xml", ".csv", ".yaml", ".yml", ".md"})


def content_type(name: str) -> str:
    """What the browser is told a file is; anything unknown is bytes."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in _TEXT:
        return "text/plain"
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


async def serve(
    request: web.BaseRequest, root: str | None, loop: asyncio.AbstractEventLoop
) -> web.StreamResponse:
    """The file or directory ``request`` names under ``root`` (``/files/...``)."""
    raw = request.raw_path.partition("?")[0][len("/files/") :]
    parts = [unquote(p) for p in raw.split("/") if p]
    if root is None:
        return error(proto.UNKNOWN_OP, "this dispatcher has no artifacts root", 404)
    try:
        checked = safe_paths.relative_parts("/".join(parts)) if parts else ()
    except ValueError as exc:
        return error(proto.BAD_REQUEST, str(exc), 400)

    def open_it() -> int:
        """A descriptor of the regular file, else of the directory, named."""
        if checked:
            with contextlib.suppress(UnsafePath):  # not a regular file: a directory?
                return safe_paths.open_file(
                    root, "/".join(checked), os.O_RDONLY, make_parents=False
                )
        with safe_paths.opened_dir(root, checked, create=False) as fd:
            return os.dup(fd)

    try:
        fd = await loop.run_in_executor(None, open_it)
    except (OSError, ValueError) as exc:  # missing, a link, not a regular file (UnsafePath)
        return error(proto.UNKNOWN_OP, f"no such file: {exc}"[:300], 404)
    headers = {"Content-Security-Policy": SANDBOX, "X-Content-Type-Options": "nosniff"}
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        try:
            body = await loop.run_in_executor(None, _listing, fd, "/".join(parts))
        finally:
            os.close(fd)
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=headers)
    with os.fdopen(fd, "rb", buffering=0) as file:
        response = web.StreamResponse(headers=headers)
        response.content_type = content_type(parts[-1])
        response.content_length = info.st_size
        await response.prepare(request)
        while chunk := await loop.run_in_executor(None, file.read, CHUNK):
            await asyncio.wait_for(response.write(chunk), WRITE_TIMEOUT)
        await response.write_eof()
        return response


def _listing(fd: int, shown: str) -> bytes:
    """A directory's entries as links (names escaped), directories first."""
    with os.scandir(fd) as found:
        entries = sorted(found, key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
    lines = [
        f'<li><a href="{quote(e.name)}{"/" if dir_ else ""}">{html.escape(e.name)}'
        f"{'/' if dir_ else ''}</a></li>"
        for e in entries[:MAX_LISTED]
        if (dir_ := e.is_dir(follow_symlinks=False)) or e.is_file(follow_symlinks=False)
    ]
    more = len(entries) - MAX_LISTED
    if more > 0:
        lines.append(f"<li>{more:,} more not listed</li>")
    title = html.escape(shown or "/")
    return (
        f'<!doctype html><meta charset="utf-8"><title>{title}</title>'
        f'<h1>{title}</h1><p><a href="../">../</a></p><ul>{"".join(lines)}</ul>'
    ).encode()
