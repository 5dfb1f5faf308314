"""Uploading and downloading attachments for :class:`~client.chat_client.ChatClient`.

:func:`tus_upload` is a resumable upload (tus 1.0, the protocol the server
speaks at ``/uploads/``): it sends the file in chunks, and after a cut it
asks the server where the upload stands (``HEAD``) and goes on from there,
with a back-off between attempts; it reads the file a chunk at a time, so a
large file costs a chunk of memory. :func:`download` fetches a link the
server gave (``files``) to a path, streamed.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
from pathlib import Path

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

CHUNK = 8 * 1024 * 1024  # bytes a PATCH carries
ATTEMPTS = 8  # tries in a row without progress, then the upload fails
TUS = {"Tus-Resumable": "1.0.0"}


class UploadFailed(Exception):
    """The server refused the upload, or it made no progress for ATTEMPTS tries."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


async def _refused(response: aiohttp.ClientResponse) -> UploadFailed:
    try:
        body = await response.json(content_type=None)
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        message = response.reason or "refused"
    return UploadFailed(response.status, str(message))


async def tus_upload(http: aiohttp.ClientSession, base: str, grant: dict[str, object],
                     source: Path, *, chunk: int = CHUNK, backoff: float = 0.5) -> None:
    """Upload ``source`` as the ``upload`` event's ``grant`` allows, resuming
    after cuts; raises :exc:`UploadFailed`."""
    size = source.stat().st_size
    auth = {**TUS, "Authorization": f"Bearer {grant['token']}"}
    endpoint = base.rstrip("/") + str(grant["url"])
    location: str | None = None
    offset, failures = 0, 0
    with source.open("rb") as f:
        while True:
            try:
                if location is None:
                    async with http.post(endpoint, headers={
                            **auth, "Upload-Length": str(size)}) as r:
                        if r.status != 201:
                            raise await _refused(r)
                        location = str(r.url.join(URL(r.headers["Location"])))
                        offset = int(r.headers.get("Upload-Offset", "0"))
                elif failures:
                    async with http.head(location, headers=auth) as r:
                        if r.status != 200:
                            raise await _refused(r)
                        offset = int(r.headers["Upload-Offset"])
                if offset >= size:
                    return
                f.seek(offset)
                data = io.BytesIO(await asyncio.to_thread(f.read, chunk))
                async with http.patch(location, data=data, headers={
                        **auth, "Upload-Offset": str(offset),
                        "Content-Type": "application/offset+octet-stream"}) as r:
                    if r.status != 204:
                        raise await _refused(r)
                    offset = int(r.headers["Upload-Offset"])
                failures = 0
            except UploadFailed as exc:
                if exc.status < 500 and exc.status not in (409, 423, 429):
                    raise
                failures = await _again(failures, backoff, exc)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                failures = await _again(failures, backoff, exc)


async def _again(failures: int, backoff: float, why: BaseException) -> int:
    failures += 1
    if failures >= ATTEMPTS:
        raise UploadFailed(0, f"no progress after {ATTEMPTS} tries ({why})")
    log.info("upload interrupted (%s); resuming", why)
    await asyncio.sleep(random.uniform(0, backoff * 2 ** failures))
    return failures


async def download(http: aiohttp.ClientSession, url: str, dest: Path) -> Path:
    """Fetch ``url`` (a link from ``files``) to ``dest``; raises :exc:`UploadFailed`
    (with the HTTP status) if the server refuses."""
    async with http.get(url) as r:
        if r.status != 200:
            raise await _refused(r)
        with dest.open("wb") as f:
            async for piece in r.content.iter_chunked(256 * 1024):
                f.write(piece)
    return dest
