"""Attachments end to end: granted over the socket, uploaded with the official
tus client (tuspy, unmodified; a blocking client, so in a thread of its own),
sent in a message, read through links only the room's members get, served so
that nothing uploaded runs as the chat's site."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image
from tusclient.exceptions import TusCommunicationError

from ..conftest import PeerFactory, Served, past, refused, until
from app.appkeys import CHAT_KEY, STORE_KEY
from app.chat.attachments import IN_FLIGHT_PER_PERSON
from app.core.models import RoomName, now_ms
from app.uploads import routes
from app.uploads.routes import UPLOADS_KEY

from ..proxy import Proxy
from ..tus import tus_auth, tus_begin, tus_upload

NODE = Path(__file__).resolve().parent.parent / "node"


async def granted(peer: Any, room: str, name: str, size: int) -> dict[str, Any]:
    return dict((await peer.ok("upload", {"room": room, "name": name, "size": size}))["upload"])


async def upload(served: Served, peer: Any, room: str, name: str, data: bytes,
                 **kwargs: Any) -> str:
    """Grant, upload with tuspy; the upload's id."""
    grant = await granted(peer, room, name, len(data))
    await asyncio.to_thread(tus_upload, served.url, grant, data, **kwargs)
    return str(grant["id"])


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, dict(response.headers), await response.read()


def png(width: int = 64, height: int = 48, **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG", **save)
    return out.getvalue()


async def test_a_file_goes_from_upload_to_a_message_to_each_member(
        served: Served, peer: PeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("files")
    await bob.join("files")
    data = os.urandom(300_000)
    upload_id = await upload(served, alice, "files", "report ü.bin", data)
    sent = await alice.send("files", "the report", attachments=[upload_id], client_id="r1")
    assert sent["attachments"] == [{"id": upload_id, "name": "report ü.bin", "size": 300_000,
                                    "type": "application/octet-stream"}]
    got = await bob.next("message")
    assert got["attachments"] == sent["attachments"]
    links = await bob.ok("files", {"room": "files", "ids": [upload_id]})
    status, headers, body = await fetch(served.url + links["files"][upload_id]["url"])
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert headers["Content-Disposition"] == "attachment; filename*=UTF-8''report%20%C3%BC.bin"
    # the message is history like any other, its files with it
    history = await bob.ok("history", {"room": "files"})
    assert history["messages"][-1]["attachments"] == sent["attachments"]
    # a resend (same client id) is the same message, the file still its
    again = await alice.ok("send", {"room": "files", "text": "the report",
                                    "attachments": [upload_id], "client_id": "r1"})
    assert again["message"]["seq"] == sent["seq"]
    # but another message may not take it
    refused(await alice.call("send", {"room": "files", "text": "again",
                                      "attachments": [upload_id]}), "conflict")


async def test_tus_js_client_uploads_unmodified(served: Served, peer: PeerFactory,
                                                tmp_path: Path) -> None:
    """The official JavaScript client (from npm, pinned), cut once on the way."""
    proxy = await Proxy(int(served.url.rsplit(":", 1)[1])).start()
    try:
        alice = await peer("alice")
        await alice.join("js")
        data = random.Random(3).randbytes(6 * 1024 * 1024)
        (tmp_path / "upload.bin").write_bytes(data)
        grant = await granted(alice, "js", "upload.bin", len(data))
        node = await asyncio.create_subprocess_exec(
            "node", str(NODE / "tus_upload.mjs"), proxy.url + grant["url"], grant["token"],
            str(tmp_path / "upload.bin"), str(1024 * 1024), stdout=asyncio.subprocess.PIPE)
        await until(lambda: proxy.received > 3 * 1024 * 1024 or node.returncode is not None,
                    timeout=60)
        proxy.cut()
        out, _ = await asyncio.wait_for(node.communicate(), 60)
        assert node.returncode == 0, out
        assert json.loads(out)["url"].endswith(grant["id"])
        sent = await alice.send("js", "from js", attachments=[grant["id"]])
        link = (await alice.ok("files", {"room": "js", "ids": [grant["id"]]}))["files"]
        status, _, body = await fetch(served.url + link[grant["id"]]["url"])
        assert status == 200 and body == data and sent["attachments"][0]["size"] == len(data)
        assert proxy.received > len(data)  # (it was cut: a chunk went twice)
    finally:
        await proxy.close()


async def test_an_image_is_measured_thumbnailed_and_stripped_of_its_metadata(
        served: Served, peer: PeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("pics")
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    exif.get_ifd(0x8825)[2] = (51.0, 30.0, 0.0)  # GPS latitude
    photo = io.BytesIO()
    Image.new("RGB", (1200, 800), (10, 120, 200)).save(photo, "JPEG", exif=exif)
    assert b"SecretCam" in photo.getvalue()
    upload_id = await upload(served, alice, "pics", "beach.png", photo.getvalue())
    sent = await alice.send("pics", "", attachments=[upload_id])
    (attachment,) = sent["attachments"]
    assert attachment == {"id": upload_id, "name": "beach.png", "size": attachment["size"],
                          "type": "image/jpeg", "width": 1200, "height": 800,
                          "thumbnail": True}  # the type from its content, not its name
    links = (await alice.ok("files", {"room": "pics", "ids": [upload_id]}))["files"][upload_id]
    status, headers, body = await fetch(served.url + links["url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert headers["Content-Disposition"].startswith("inline;")
    assert b"SecretCam" not in body and not Image.open(io.BytesIO(body)).getexif()
    assert len(body) == attachment["size"]
    status, headers, thumb = await fetch(served.url + links["thumbnail"])
    assert status == 200 and max(Image.open(io.BytesIO(thumb)).size) <= 320


@pytest.mark.parametrize("content", [
    b"<!doctype html><script>alert(document.cookie)</script>",
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    png() + b"<script>alert(1)</script>",  # a polyglot: a PNG that is HTML too
], ids=["html", "svg", "polyglot"])
async def test_nothing_uploaded_is_served_to_run_as_the_site(
        served: Served, peer: PeerFactory, content: bytes) -> None:
    alice = await peer("alice")
    await alice.join("x")
    upload_id = await upload(served, alice, "x", "page.html", content)
    await alice.send("x", "see", attachments=[upload_id])
    links = (await alice.ok("files", {"room": "x", "ids": [upload_id]}))["files"][upload_id]
    status, headers, _ = await fetch(served.url + links["url"])
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Content-Type"] in ("text/plain", "image/png")
    if headers["Content-Type"] != "image/png":
        assert headers["Content-Disposition"].startswith("attachment;")


async def test_only_the_rooms_members_may_read_its_files(
        served: Served, peer: PeerFactory) -> None:
    alice, mallory = await peer("alice"), await peer("mallory")
    await alice.join("secret")
    await mallory.join("elsewhere")
    upload_id = await upload(served, alice, "secret", "plans.txt", b"the plans")
    refused(await mallory.call("files", {"room": "secret", "ids": [upload_id]}), "not_member")
    # asking through a room of one's own finds nothing
    assert (await mallory.ok("files", {"room": "elsewhere", "ids": [upload_id]}))["files"] == {}
    # unsent, it is its uploader's alone, and no other person may send it
    await mallory.join("secret")
    assert (await mallory.ok("files", {"room": "secret", "ids": [upload_id]}))["files"] == {}
    refused(await mallory.call("send", {"room": "secret", "text": "mine",
                                        "attachments": [upload_id]}), "not_found")
    await alice.send("secret", "plans", attachments=[upload_id])
    links = (await mallory.ok("files", {"room": "secret", "ids": [upload_id]}))["files"]
    link = links[upload_id]["url"]
    assert (await fetch(served.url + link))[0] == 200
    # a link is good for that file only, and only as signed
    forged = link.replace(upload_id, "A" * len(upload_id))
    assert (await fetch(served.url + forged))[0] == 403
    assert (await fetch(served.url + link[:-3] + "abc"))[0] == 403
    assert (await fetch(served.url + link.split("?")[0]))[0] == 400
    assert (await fetch(served.url + link.replace("original", "thumbnail")))[0] == 403


async def test_a_deleted_message_takes_its_files_with_it(
        served: Served, peer: PeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("d")
    upload_id = await upload(served, alice, "d", "a.txt", b"gone soon")
    sent = await alice.send("d", "x", attachments=[upload_id])
    link = (await alice.ok("files", {"room": "d", "ids": [upload_id]}))["files"][upload_id]
    await alice.ok("delete", {"room": "d", "seq": sent["seq"]})
    assert (await fetch(served.url + link["url"]))[0] == 404
    assert not list(Path(served.settings.files.removeprefix("dir:")).rglob(upload_id + "*"))


async def test_limits_are_counted_before_a_byte_is_stored(
        serve: Any, peer: PeerFactory) -> None:
    served = await serve(max_file_bytes=1000, max_upload_bytes_per_day=1500,
                         max_uploads_in_flight=2)
    alice = await peer("alice", server=served)
    await alice.join("r")
    refused(await alice.call("upload", {"room": "r", "name": "big", "size": 1001}),
            "too_large")
    refused(await alice.call("upload", {"room": "nope", "name": "a", "size": 10}),
            "not_member")
    await granted(alice, "r", "a", 1000)
    assert "today" in refused(await alice.call("upload", {"room": "r", "name": "b",
                                                          "size": 501}), "rate_limited")
    await granted(alice, "r", "c", 100)
    refused(await alice.call("upload", {"room": "r", "name": "d", "size": 1}), "rate_limited")
    assert not list(Path(served.settings.upload_spool).glob("*"))


async def test_a_cut_upload_resumes_where_it_stopped(
        served: Served, peer: PeerFactory) -> None:
    """100 MB cut three times mid-request by the network: tuspy's retries resume
    from the server's offset and the file arrives whole."""
    proxy = await Proxy(int(served.url.rsplit(":", 1)[1])).start()
    try:
        alice = await peer("alice")
        await alice.join("big")
        data = random.Random(7).randbytes(100 * 1000 * 1000)
        grant = await granted(alice, "big", "big.bin", len(data))
        uploading = asyncio.create_task(asyncio.to_thread(
            tus_upload, proxy.url, grant, data, chunk_size=16 * 1000 * 1000, retries=5))
        for mark in (20, 50, 80):
            await until(lambda: proxy.received > mark * 1000 * 1000 or uploading.done(),
                        timeout=60)
            proxy.cut()
        await asyncio.wait_for(uploading, 60)
        sent = await alice.send("big", "big", attachments=[grant["id"]])
        assert sent["attachments"][0]["size"] == len(data)
        link = (await alice.ok("files", {"room": "big", "ids": [grant["id"]]}))["files"]
        status, _, body = await fetch(served.url + link[grant["id"]]["url"])
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert proxy.received > len(data)  # (it was cut: some bytes went twice)
    finally:
        await proxy.close()


async def test_bombs_are_bounded(served: Served, peer: PeerFactory) -> None:
    """An image whose header claims more pixels than are taken is refused from
    its header, before a pixel is decoded; a zip bomb is never opened: it is
    kept and served as the bytes it is."""
    alice = await peer("alice")
    await alice.join("b")
    bomb = io.BytesIO()  # 20,000 x 20,000 (400 MP) of one colour: 0.4 MB compressed
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    grant = await granted(alice, "b", "bomb.png", len(bomb.getvalue()))
    with pytest.raises(TusCommunicationError, match="400"):
        await asyncio.to_thread(tus_upload, served.url, grant, bomb.getvalue())
    refused(await alice.call("send", {"room": "b", "text": "x", "attachments": [grant["id"]]}),
            "not_found")
    assert not list(Path(served.settings.upload_spool).iterdir())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros", b"\0" * 200_000_000)  # 200 MB in 0.2 MB
    upload_id = await upload(served, alice, "b", "bomb.zip", zipped.getvalue())
    sent = await alice.send("b", "zip", attachments=[upload_id])
    assert sent["attachments"][0]["type"] == "application/zip"
    assert sent["attachments"][0]["size"] == len(zipped.getvalue())


async def test_the_tus_endpoint_speaks_tus(served: Served, peer: PeerFactory) -> None:
    """What the protocol asks, on the wire."""
    alice = await peer("alice")
    await alice.join("t")
    grant = await granted(alice, "t", "t.txt", 10)
    auth = tus_auth(grant)
    endpoint = served.url + grant["url"]
    async with aiohttp.ClientSession() as http:
        async with http.options(endpoint) as r:
            assert r.status == 204 and r.headers["Tus-Version"] == "1.0.0"
            assert "creation" in r.headers["Tus-Extension"]
            assert "termination" in r.headers["Tus-Extension"]
            assert int(r.headers["Tus-Max-Size"]) == served.settings.max_file_bytes
        async with http.post(endpoint, headers={"Authorization": auth["Authorization"],
                                                "Upload-Length": "10"}) as r:
            assert r.status == 412 and r.headers["Tus-Version"] == "1.0.0"
            assert (await r.json())["error"]["code"] == "bad_request"
        async with http.post(endpoint, headers={**auth, "Upload-Length": "11"}) as r:
            assert r.status == 400  # not the size granted
        async with http.post(endpoint, headers={"Tus-Resumable": "1.0.0",
                                                "Upload-Length": "10"}) as r:
            assert r.status == 401
        async with http.post(endpoint, headers={**auth, "Upload-Length": "10"}) as r:
            assert r.status == 201 and r.headers["Upload-Offset"] == "0"
            location = served.url + r.headers["Location"]
            assert "Upload-Expires" in r.headers
        async with http.patch(location, data=b"hello", headers={
                **auth, "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"}) as r:
            assert r.status == 204 and r.headers["Upload-Offset"] == "5"
        async with http.patch(location, data=b"hello", headers={
                **auth, "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"}) as r:
            assert r.status == 409  # not where the upload stands
        async with http.patch(location, data=b"hello", headers={
                **auth, "Upload-Offset": "5", "Content-Type": "text/plain"}) as r:
            assert r.status == 415 and (await r.json())["ok"] is False
        async with http.patch(location, data=b"hello, world", headers={
                **auth, "Upload-Offset": "5",
                "Content-Type": "application/offset+octet-stream"}) as r:
            assert r.status == 413  # past its length
        async with http.head(location, headers=auth) as r:
            assert r.status == 200 and r.headers["Upload-Offset"] == "5"
            assert r.headers["Upload-Length"] == "10" and r.headers["Cache-Control"] == "no-store"
        other = await granted(alice, "t", "u.txt", 10)
        async with http.head(location, headers={**auth, "Authorization":
                                                f"Bearer {other['token']}"}) as r:
            assert r.status == 403  # another upload's token
        async with http.delete(location, headers=auth) as r:
            assert r.status == 204
        async with http.head(location, headers=auth) as r:
            assert r.status == 404


async def test_abandoned_and_unsent_uploads_are_swept_away(
        served: Served, peer: PeerFactory) -> None:
    """An upload never finished, and one finished but never sent, are removed
    once past --upload-expiry; one sent stays."""
    alice = await peer("alice")
    await alice.join("r")
    half = await granted(alice, "r", "half.bin", 100)
    auth = tus_auth(half)
    async with aiohttp.ClientSession() as http:
        location = await tus_begin(http, served.url, half, 100)
        async with http.patch(location, data=b"x" * 50, headers={
                **auth, "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream"}) as r:
            assert r.status == 204
    unsent = await upload(served, alice, "r", "unsent.txt", b"never sent")
    kept = await upload(served, alice, "r", "sent.txt", b"sent")
    await alice.send("r", "kept", attachments=[kept])
    attachments = served.app[UPLOADS_KEY].attachments
    spool = Path(served.settings.upload_spool)
    files = Path(served.settings.files.removeprefix("dir:"))
    assert await attachments.sweep() == 0 and [p.name for p in spool.iterdir()] == [half["id"]]
    later = attachments.clock() + served.settings.upload_expiry + 1
    attachments.clock = lambda: later
    for path in spool.iterdir():  # (the spool's clock is its files' age)
        os.utime(path, (later - served.settings.upload_expiry - 1,) * 2)
    assert await attachments.sweep() == 2
    assert not list(spool.iterdir())
    assert not list(files.rglob(unsent + "*")) and list(files.rglob(kept + "*"))


async def test_two_nodes_on_s3_serve_each_others_files(
        serve: Any, peer: PeerFactory, s3_files: str, tmp_path: Path) -> None:
    """Files on S3-compatible storage (a real server), records in the shared
    store: a file uploaded through one node is read through the other, by
    links either signs (the nodes share --file-secret), and deleted from both."""
    secret = "s" * 32
    one = await serve(files=s3_files, file_secret=secret, upload_spool=str(tmp_path / "one"))
    two = await serve(files=s3_files, file_secret=secret, upload_spool=str(tmp_path / "two"))
    alice = await peer("alice", server=one)
    bob = await peer("bob", server=two)
    await alice.join("s3")
    await bob.join("s3")
    photo = io.BytesIO()
    Image.new("RGB", (640, 480), (0, 90, 40)).save(photo, "JPEG")
    upload_id = await upload(one, alice, "s3", "photo.jpg", photo.getvalue())
    sent = await alice.send("s3", "from node one", attachments=[upload_id])
    history = await bob.ok("history", {"room": "s3"})
    assert history["messages"][-1]["attachments"] == sent["attachments"]
    links = (await bob.ok("files", {"room": "s3", "ids": [upload_id]}))["files"][upload_id]
    for server in (one, two):  # a link signed by node two is good at node one too
        status, headers, body = await fetch(server.url + links["url"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(body)).size == (640, 480)
        status, _, thumb = await fetch(server.url + links["thumbnail"])
        assert status == 200 and max(Image.open(io.BytesIO(thumb)).size) == 320
    await alice.ok("delete", {"room": "s3", "seq": sent["seq"]})
    assert (await fetch(two.url + links["url"]))[0] == 404


async def test_retention_takes_the_files_of_the_messages_it_removes(
        served: Served, peer: PeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("old")
    first = await upload(served, alice, "old", "old.txt", b"old news")
    await alice.send("old", "old", attachments=[first])
    cut = now_ms()
    past(cut)
    second = await upload(served, alice, "old", "new.txt", b"new news")
    await alice.send("old", "new", attachments=[second])
    files = Path(served.settings.files.removeprefix("dir:"))
    assert await served.app[CHAT_KEY].retention.purge(RoomName("old"), cut + 1) == 1
    assert not list(files.rglob(first + "*")) and list(files.rglob(second + "*"))
    assert (await alice.ok("files", {"room": "old", "ids": [first, second]}))["files"].keys() \
        == {second}


async def test_a_stalled_upload_keeps_what_came_and_frees_its_request(
        served: Served, peer: PeerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATCH whose body goes silent is ended after BODY_IDLE (shortened here),
    keeping what arrived: it holds no request, no connection slot for ever."""
    monkeypatch.setattr(routes, "BODY_IDLE", 0.2)
    alice = await peer("alice")
    await alice.join("s")
    grant = await granted(alice, "s", "slow.bin", 100)
    auth = tus_auth(grant)
    async with aiohttp.ClientSession() as http:
        path = (await tus_begin(http, served.url, grant, 100)).removeprefix(served.url)
    host, port = served.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: {auth['Authorization']}\r\nUpload-Offset: 0\r\n"
            "Content-Type: application/offset+octet-stream\r\nContent-Length: 100\r\n\r\n")
    writer.write(head.encode() + b"x" * 10)  # ... and then nothing
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 204") and b"Upload-Offset: 10\r\n" in answer
    async with aiohttp.ClientSession() as http:
        async with http.head(served.url + path, headers=auth) as r:
            assert r.headers["Upload-Offset"] == "10"


async def test_a_persons_bytes_a_day_are_counted_on_every_node_alike(
        serve: Any, peer: PeerFactory) -> None:
    """The daily limit is the person's, not a node's: two nodes on one store."""
    one = await serve(max_upload_bytes_per_day=1000)
    two = await serve(max_upload_bytes_per_day=1000)
    here, there = await peer("alice", server=one), await peer("alice", server=two)
    for alice in (here, there):
        await alice.join("r")
    await granted(here, "r", "a", 700)
    assert "700 bytes today" in refused(await there.call(
        "upload", {"room": "r", "name": "b", "size": 301}), "rate_limited")
    await granted(there, "r", "c", 300)
    attachments = one.app[UPLOADS_KEY].attachments
    tomorrow = attachments.clock() + 86400
    attachments.clock = lambda: tomorrow
    await granted(here, "r", "d", 1000)  # a new day
    attachments.clock = lambda: tomorrow + 2 * 86400
    await attachments.sweep()  # (the counts of days past are forgotten)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert await one.app[STORE_KEY].records(f"uploaded:{today}") == {}


async def test_nobody_holds_a_nodes_uploads_to_themselves(serve: Any, peer: PeerFactory
                                                          ) -> None:
    """Uploads begun and never finished count against their person (10 at
    once), so one person cannot take every upload a node has room for."""
    served = await serve(max_uploads_in_flight=12)
    mallory, alice = await peer("mallory", server=served), await peer("alice", server=served)
    for who in (mallory, alice):
        await who.join("r")
    grants = [await granted(mallory, "r", f"f{i}", 1) for i in range(IN_FLIGHT_PER_PERSON)]
    assert "under way" in refused(await mallory.call(
        "upload", {"room": "r", "name": "more", "size": 1}), "rate_limited")
    await granted(alice, "r", "mine", 1)  # others still may
    async with aiohttp.ClientSession() as http:  # a cancelled one frees its place
        location = await tus_begin(http, served.url, grants[0], 1)
        async with http.delete(location, headers=tus_auth(grants[0])) as r:
            assert r.status == 204
    await granted(mallory, "r", "again", 1)
