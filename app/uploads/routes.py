"""The aiohttp side of files: tus 1.0 at ``/uploads/``, links at ``/files/``.

``/uploads/`` (:mod:`app.uploads.tus`): ``OPTIONS`` says what the server
takes; ``POST`` begins the upload a grant allows (``Authorization: Bearer``
with the token of the ``upload`` event's answer; ``Upload-Length`` its
size) and answers 201 with its ``Location``; ``HEAD`` on that location says
its offset, ``PATCH`` appends at it, ``DELETE`` abandons it, each with the
same token. The official tus clients (tus-js-client, tuspy) work unmodified.

``/files/<id>/<original|thumbnail>?exp=..&sig=..`` (the ``files`` event's
links): the file, with headers that keep it from ever running as this
site: ``X-Content-Type-Options: nosniff``, a sandboxing CSP, and
``Content-Disposition: attachment`` for anything but the image types every
browser shows (:data:`app.chat.media.INLINE`).

Errors are ``{"ok": false, "error": {"code", "message"}}`` with the HTTP
status of the code (:data:`app.core.errors.HTTP_STATUS`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..chat.attachments import ENDPOINT, Attachments, Grant
from ..chat.media import INLINE
from ..core.errors import HTTP_STATUS, ChatError, ErrorCode
from . import tus

log = logging.getLogger("app.uploads")

CHUNK = 256 * 1024  # bytes of a PATCH's body taken at a time
BODY_IDLE = 60.0  # seconds a PATCH's body may go silent before the request is ended
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Uploads:
    """What the routes need: the chat's attachments service."""

    def __init__(self, attachments: Attachments) -> None:
        self.attachments = attachments


UPLOADS_KEY = web.AppKey("uploads", Uploads)
_TUS = {"Tus-Resumable": tus.VERSION}


def _error(exc: ChatError, *, head: bool = False, status: int | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    """``{"ok": false, "error"}`` with the code's HTTP status (or ``status``)."""
    status = status or HTTP_STATUS.get(exc.code, 400)
    headers = {**_TUS, **(headers or {})}
    if head:  # (a HEAD answer has no body)
        return web.Response(status=status, headers=headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, exc.retry_after // 1000))
    return web.json_response({"ok": False, "error": exc.as_dict()}, status=status,
                             headers=headers)


def _tus(handler: Callable[[web.Request, Attachments], Awaitable[web.StreamResponse]]
         ) -> Handler:
    """A tus request: its version checked, its errors answered as tus's."""
    async def handle(request: web.Request) -> web.StreamResponse:
        head = request.method == "HEAD"
        if request.headers.get("Tus-Resumable") != tus.VERSION:
            return _error(ChatError(ErrorCode.BAD_REQUEST, f"this server speaks tus "
                                    f"{tus.VERSION}: send Tus-Resumable: {tus.VERSION}"),
                          head=head, status=412, headers={"Tus-Version": tus.VERSION})
        try:
            return await handler(request, request.app[UPLOADS_KEY].attachments)
        except ChatError as exc:
            return _error(exc, head=head)
    return handle


def _grant(request: web.Request, attachments: Attachments) -> Grant:
    grant = attachments.grant(tus.bearer(request.headers.get("Authorization")))
    upload = request.match_info.get("upload")
    if upload is not None and upload != grant.id:
        raise ChatError(ErrorCode.FORBIDDEN, "the token is for another upload")
    return grant


def _progress(grant: Grant, offset: int) -> dict[str, str]:
    return {**_TUS, "Upload-Offset": str(offset), "Upload-Length": str(grant.size),
            "Upload-Expires": tus.expires(grant.expires), "Cache-Control": "no-store"}


async def options(request: web.Request) -> web.Response:
    settings = request.app[UPLOADS_KEY].attachments.settings
    return web.Response(status=204, headers={
        **_TUS, "Tus-Version": tus.VERSION, "Tus-Extension": tus.EXTENSIONS,
        "Tus-Max-Size": str(settings.max_file_bytes)})


async def create(request: web.Request, attachments: Attachments) -> web.Response:
    override = request.headers.get("X-HTTP-Method-Override", "").upper()
    if override in ("PATCH", "HEAD", "DELETE"):
        raise ChatError(ErrorCode.BAD_REQUEST, f"{override} goes to the upload's location")
    grant = _grant(request, attachments)
    if "Upload-Defer-Length" in request.headers:
        raise ChatError(ErrorCode.BAD_REQUEST, "the length must be known (creation-defer-"
                        "length is not supported)")
    length = tus.number(request.headers.get("Upload-Length"), "Upload-Length")
    if length > attachments.settings.max_file_bytes:
        raise ChatError(ErrorCode.TOO_LARGE, f"files of at most "
                        f"{attachments.settings.max_file_bytes:,} bytes are taken")
    tus.metadata(request.headers.get("Upload-Metadata"))  # (checked; the grant names the file)
    offset = await attachments.create(grant, length)
    return web.Response(status=201, headers={
        **_progress(grant, offset), "Location": f"{ENDPOINT}{grant.id}"})


async def status(request: web.Request, attachments: Attachments) -> web.Response:
    grant = _grant(request, attachments)
    return web.Response(status=200, headers=_progress(grant, await attachments.offset(grant)))


async def append(request: web.Request, attachments: Attachments) -> web.Response:
    grant = _grant(request, attachments)
    if request.content_type != tus.OFFSET_TYPE:
        return _error(ChatError(ErrorCode.BAD_REQUEST,
                                f"Content-Type must be {tus.OFFSET_TYPE}"), status=415)
    offset = tus.number(request.headers.get("Upload-Offset"), "Upload-Offset")
    if request.content_length is not None and offset + request.content_length > grant.size:
        raise ChatError(ErrorCode.TOO_LARGE, f"the upload is {grant.size:,} bytes; the "
                        "request would go past its end")
    offset = await attachments.write(grant, offset, _body(request))
    return web.Response(status=204, headers=_progress(grant, offset))


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request's body; a cut connection, or one silent for
    :data:`BODY_IDLE` seconds, ends it with ConnectionError (the service keeps
    what arrived: the client resumes from there)."""
    while True:
        try:
            async with asyncio.timeout(BODY_IDLE):
                chunk = await request.content.read(CHUNK)
        except TimeoutError:
            raise ConnectionError(f"no bytes for {BODY_IDLE:g} s") from None
        except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
            raise ConnectionError(str(exc)) from exc
        if not chunk:
            return
        yield chunk


async def abandon(request: web.Request, attachments: Attachments) -> web.Response:
    await attachments.abandon(_grant(request, attachments))
    return web.Response(status=204, headers=_TUS)


# -- downloads ----------------------------------------------------------------------

# a file served here never runs as this site: no script, no plugin, a sandbox
# (an HTML or SVG file opened in a tab is an opaque origin with nothing allowed)
_SERVED = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}


async def download(request: web.Request) -> web.StreamResponse:
    attachments = request.app[UPLOADS_KEY].attachments
    try:
        expires = tus.number(request.query.get("exp"), "exp")
        attachment, stored = await attachments.open(
            request.match_info["upload"], request.match_info["variant"], expires,
            request.query.get("sig", ""))
    except ChatError as exc:
        response = _error(exc)
        response.headers.pop("Tus-Resumable", None)
        return response
    chunks = stored.chunks
    kind = attachment.type
    if request.match_info["variant"] == "thumbnail":
        first = await anext(chunks, b"")
        kind = "image/png" if first.startswith(b"\x89PNG") else "image/jpeg"
        chunks = _prepend(first, chunks)
    disposition = "inline" if kind in INLINE else "attachment"
    headers = {**_SERVED, "Content-Type": kind,
               "Content-Disposition": f"{disposition}; filename*=UTF-8''"
                                      f"{quote(attachment.name, safe='')}",
               "Cache-Control": f"private, max-age={max(0, int(expires - attachments.clock()))}"}
    if stored.path is not None and request.match_info["variant"] == "original":
        return web.FileResponse(stored.path, headers=headers)  # (sendfile; ranges)
    streamed = web.StreamResponse(headers={**headers, "Content-Length": str(stored.size)})
    await streamed.prepare(request)
    async for chunk in chunks:
        await streamed.write(chunk)
    await streamed.write_eof()
    return streamed


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


def setup_uploads(app: web.Application) -> None:
    """Add ``/uploads/`` and ``/files/``; the server puts an :class:`Uploads` at
    ``app[UPLOADS_KEY]`` once the chat's services exist."""
    app.router.add_route("OPTIONS", ENDPOINT, options)
    app.router.add_post(ENDPOINT, _tus(create))
    upload = ENDPOINT + "{upload:[A-Za-z0-9_-]{8,64}}"
    app.router.add_route("HEAD", upload, _tus(status))
    app.router.add_route("PATCH", upload, _tus(append))
    app.router.add_route("DELETE", upload, _tus(abandon))
    app.router.add_get("/files/{upload:[A-Za-z0-9_-]{8,64}}/{variant}", download,
                       allow_head=False)
