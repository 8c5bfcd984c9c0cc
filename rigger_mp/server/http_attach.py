"""``PUT /attach`` on the HTTP front: the body streamed into an upload.

The query holds the ``attach`` header's fields, ``Content-Length`` its size; the body is
read a piece at a time (``request.content``, never whole) and fed to the
:class:`~.uploads.Upload`, waiting whenever it has no room (aiohttp then stops reading
the socket), so an upload over HTTP is bounded as one over TCP is.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .. import protocol as proto
from .uploads import Upload, Uploads


class HttpUpload:
    """The :class:`~.uploads.UploadOwner` of one ``PUT /attach``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.room: asyncio.Future[None] | None = None
        self.done: asyncio.Future[bytes] = loop.create_future()

    def upload_room(self) -> None:
        if self.room is not None and not self.room.done():
            self.room.set_result(None)

    def upload_done(self, line: bytes, ok: bool) -> None:
        if not self.done.done():
            self.done.set_result(line)
        self.upload_room()

    async def wait_room(self, upload: Upload) -> None:
        """Until ``upload`` may take more bytes (or has ended)."""
        while upload.receiving and not upload.wants:
            self.room = self.loop.create_future()
            await self.room


def header(request: web.BaseRequest) -> proto.Attach:
    """The ``attach`` header of a request; :class:`~rigger_mp.protocol.ProtocolError` if
    a field is missing or the body's length is not given."""
    if request.content_length is None:
        raise proto.ProtocolError(proto.BAD_REQUEST, "PUT /attach needs a Content-Length")
    return proto.parse_attach({**request.query, "size": request.content_length})


async def receive(uploads: Uploads, msg: proto.Attach, request: web.BaseRequest) -> bytes:
    """Stream the body into a new upload; its reply line. :class:`~.uploads.Refused` when
    the header is refused; ``ConnectionError`` when the client goes away (nothing kept)."""
    owner = HttpUpload(asyncio.get_running_loop())
    upload = uploads.begin(msg, owner, stalls=False)
    try:
        async for chunk in request.content.iter_any():
            upload.feed(chunk)
            await owner.wait_room(upload)
            if not upload.receiving:  # complete, or failed: the rest is not read
                break
    except BaseException:
        upload.cut()
        raise
    if upload.receiving:
        upload.fail(
            proto.BAD_REQUEST, f"the body ended {upload.missing} bytes short of {upload.size}"
        )
    return await owner.done
