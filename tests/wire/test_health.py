"""GET /healthz reports whether the server and its store are usable."""

from __future__ import annotations

import asyncio

import aiohttp
from aiobotocore.session import get_session
import pytest

from app.appkeys import STORE_KEY
from app.core.errors import ChatError
from app.store.batching import Write, Written
from app.store.sqlite import SqliteStore

from ..conftest import PeerFactory, ServeFactory, Served
from ..services import S3Server
from ..tus import tus_auth, tus_begin


async def test_healthz_follows_the_store(serve: ServeFactory) -> None:
    """200 with a small JSON body while the store answers; 503 once it is closed."""
    served = await serve()
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/healthz") as response:
            assert response.status == 200
            body = await response.json()
            assert (body["status"], body["store"]) == ("ok", "ok") and body["node"]
        await served.app[STORE_KEY].close()
        async with http.get(served.url + "/healthz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "unavailable" and body["store"]


async def health(served: Served) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/healthz") as response:
            return response.status, await response.json()


async def test_healthz_reports_a_store_writer_that_stopped(
        serve: ServeFactory, peer: PeerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's writer task ends under a send (its driver raises
    CancelledError, injected): that send is refused unavailable, /healthz
    names the stop under store_writer (still 200: a new writer took over),
    and the next send is stored; then store_writer is ok again."""
    served = await serve()
    alice = await peer("alice", server=served)
    await alice.join("r")
    assert (await health(served))[1]["store_writer"] == "ok"
    write = SqliteStore._write_batch
    crashes = [asyncio.CancelledError()]

    def crashing_once(self: SqliteStore, batch: list[Write]) -> list[Written | ChatError]:
        if crashes:
            raise crashes.pop()
        return write(self, batch)
    monkeypatch.setattr(SqliteStore, "_write_batch", crashing_once)
    refused = await alice.call("send", {"room": "r", "text": "lost", "client_id": "c1"})
    assert refused["error"]["code"] == "unavailable"
    status, body = await health(served)
    assert status == 200 and "the writer stopped (cancelled)" in body["store_writer"], body
    assert (await alice.send("r", "after", client_id="c1"))["seq"] == 1
    assert (await health(served))[1]["store_writer"] == "ok"


async def test_a_file_storage_that_fails_is_reported_and_answered_unavailable(
        serve: ServeFactory, peer: PeerFactory, s3_files: str) -> None:
    """The S3 bucket goes away: the upload that finishes then is answered 503
    unavailable, /healthz says so under files (still 200: the chat goes on)."""
    served = await serve(files=s3_files)
    alice = await peer("alice", server=served)
    await alice.join("r")
    grant = (await alice.ok("upload", {"room": "r", "name": "a.txt", "size": 5}))["upload"]
    bucket = s3_files.split("/")[2]
    async with get_session().create_client(
            "s3", endpoint_url=S3Server.shared().endpoint, region_name="us-east-1") as s3:
        await s3.delete_bucket(Bucket=bucket)
    auth = tus_auth(grant)
    async with aiohttp.ClientSession() as http:
        location = await tus_begin(http, served.url, grant, 5)
        async with http.patch(location, data=b"hello", headers={
                **auth, "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"}) as r:
            assert r.status == 503 and (await r.json())["error"]["code"] == "unavailable"
    status, body = await health(served)
    assert status == 200 and body["files"].startswith("S3: ")
    assert (await alice.send("r", "still chatting"))["seq"] == 1
    # the bucket is back: the client's HEAD finishes the upload it holds whole
    async with get_session().create_client(
            "s3", endpoint_url=S3Server.shared().endpoint, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=bucket)
    async with aiohttp.ClientSession() as http:
        async with http.head(location, headers=auth) as r:
            assert r.status == 200 and r.headers["Upload-Offset"] == "5"
    sent = await alice.send("r", "the file", attachments=[grant["id"]])
    assert sent["attachments"][0]["size"] == 5
    assert (await health(served))[1]["files"] == "ok"
