"""Uploads with the official tus client, tuspy, unmodified (a blocking client:
run it in a thread of its own, ``asyncio.to_thread``)."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from tusclient import client as tus_client


def tus_upload(url: str, grant: dict[str, Any], data: bytes, *, chunk_size: int = 1 << 30,
               retries: int = 0) -> str:
    """Upload ``data`` with tuspy (blocking); the upload's URL."""
    tus = tus_client.TusClient(url + grant["url"],
                               headers={"Authorization": f"Bearer {grant['token']}"})
    uploader = tus.uploader(file_stream=io.BytesIO(data), chunk_size=chunk_size,
                            retries=retries, retry_delay=0,
                            metadata={"filename": "ignored.bin"})
    uploader.upload()
    return str(uploader.url)


def tus_auth(grant: dict[str, Any]) -> dict[str, str]:
    """The headers every tus request of ``grant``'s upload carries."""
    return {"Authorization": f"Bearer {grant['token']}", "Tus-Resumable": "1.0.0"}


async def tus_begin(http: aiohttp.ClientSession, url: str, grant: dict[str, Any],
                    length: int) -> str:
    """Begin ``grant``'s upload of ``length`` bytes (tus POST) on the server at
    ``url``; the upload's URL."""
    async with http.post(url + grant["url"], headers={
            **tus_auth(grant), "Upload-Length": str(length)}) as response:
        assert response.status == 201, response.status
        return url + response.headers["Location"]
