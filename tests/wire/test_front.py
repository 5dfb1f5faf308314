"""app/eio/front.py: the front door answers plain Engine.IO requests itself (the
WebSocket handshake, long-polling's GETs and POSTs, kept alive) and gives
every other connection to aiohttp, byte for byte."""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import urlsplit

import pytest

from app.eio import front
from app.appkeys import SIO_KEY
from app.ws.frames import PING, PONG

from ..conftest import TIMEOUT, ServeFactory, Served, until
from .test_websocket import RawWebSocket, frame, handshake

pytestmark = pytest.mark.matrix("transport")  # both transports; the serializer does not matter


def aiohttp_requests(served: Served) -> int:
    """Requests aiohttp's own machinery has handled so far."""
    runner = served.server.runner
    assert runner is not None and runner.server is not None
    return runner.server.requests_count


async def raw_http(served: Served, request: bytes, chunk: int = 0) -> bytes:
    """Send ``request`` (in pieces of ``chunk`` bytes, if given) and read the
    whole answer (the request asks the server to close)."""
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        pieces = [request[i:i + chunk] for i in range(0, len(request), chunk)] if chunk \
            else [request]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            return await reader.read()
    finally:
        writer.close()


async def test_a_websocket_handshake_never_reaches_aiohttp(served: Served) -> None:
    """Five WebSocket connections are made without one aiohttp request; a health
    check on the same port is aiohttp's, as before."""
    before = aiohttp_requests(served)
    clients = [await RawWebSocket.open(served) for _ in range(5)]
    try:
        for client in clients:
            assert client.status == b"HTTP/1.1 101 Switching Protocols"
            await client.opened()
        assert aiohttp_requests(served) == before
        answer = await raw_http(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                        b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and aiohttp_requests(served) == before + 1
    finally:
        for client in clients:
            client.close()


async def answered_with_pong(client: RawWebSocket, payload: bytes) -> None:
    """The 101, Engine.IO's OPEN, then the PONG to the PING we sent."""
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 ")
    await client.opened()
    assert await client.read_frame() == (True, PONG, payload)


async def test_a_handshake_sent_a_byte_at_a_time_is_read(served: Served) -> None:
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    client = RawWebSocket(reader, writer)
    try:
        for byte in handshake(url.netloc) + frame(PING, b"slow"):
            writer.write(bytes((byte,)))
            await writer.drain()
        await answered_with_pong(client, b"slow")
    finally:
        client.close()


async def test_frames_that_arrive_while_the_handshake_is_answered_are_kept(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame that arrives after the request, but before the Engine.IO server has
    answered it, is read by the WebSocket once it is up (not taken for a new
    request). The answer is held back until the frame is in, to make that order."""
    entered, release = asyncio.Event(), asyncio.Event()
    requests: list[front.FrontRequest] = []
    answer = front.FrontDoor._answer

    async def held(self: front.FrontDoor, request: front.FrontRequest) -> None:
        requests.append(request)
        entered.set()
        await release.wait()
        await answer(self, request)

    monkeypatch.setattr(front.FrontDoor, "_answer", held)
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    client = RawWebSocket(reader, writer)
    try:
        writer.write(handshake(url.netloc))
        await asyncio.wait_for(entered.wait(), TIMEOUT)
        writer.write(frame(PING, b"meanwhile"))
        await until(lambda: bool(requests[0].tail))
        release.set()
        await answered_with_pong(client, b"meanwhile")
    finally:
        client.close()


@pytest.mark.parametrize("chunk", [0, 1, 7])
async def test_other_requests_reach_aiohttp_intact(served: Served, chunk: int) -> None:
    """The page, however its request is cut into packets, is served by aiohttp."""
    answer = await raw_http(served, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            chunk)
    assert answer.startswith(b"HTTP/1.1 200") and b"<html" in answer


async def test_long_polling_is_answered_at_the_door_on_one_kept_connection(
        served: Served) -> None:
    """A polling handshake, a POST and a GET on one connection (the handshake cut
    into pieces) are answered without aiohttp; a page requested next on the same
    connection is aiohttp's."""
    before = aiohttp_requests(served)
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)

    async def answer() -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)

    try:
        opening = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(0, len(opening), 5):
            writer.write(opening[i:i + 5])
            await writer.drain()
        head, body = await asyncio.wait_for(answer(), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
        sid = body.split(b'"sid":"')[1].split(b'"')[0].decode()
        target = f"/socket.io/?EIO=4&transport=polling&sid={sid}".encode()
        connect = b'40/chat,{"name":"door"}' if served.settings.serializer == "json" else b""
        if connect:
            writer.write(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(connect)).encode() + b"\r\n\r\n" + connect)
            assert (await asyncio.wait_for(answer(), TIMEOUT))[1] == b"ok"
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await asyncio.wait_for(answer(), TIMEOUT))[1].startswith(b"40/chat,{")
        assert aiohttp_requests(served) == before
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            page = await reader.read()
        assert page.startswith(b"HTTP/1.1 200") and b"<html" in page
        assert aiohttp_requests(served) == before + 1
    finally:
        writer.close()


@pytest.mark.parametrize("odd", [
    {"X-Name": "Zo\u00eb"},  # not ASCII: aiohttp decodes headers its own way
    {"Content-Length": "0"},  # a body, however short
])
async def test_an_unusual_handshake_goes_through_aiohttp_and_still_works(
        served: Served, odd: dict[str, str]) -> None:
    """A handshake the front door does not read itself is aiohttp's, which takes
    the connection the same way (and keeps frames sent with the request)."""
    before = aiohttp_requests(served)
    head = handshake(urlsplit(served.url).netloc, **odd)
    client = await RawWebSocket.open(served, head.decode().encode("utf-8"),
                                     then=frame(PING, b"early"))
    try:
        assert client.status == b"HTTP/1.1 101 Switching Protocols"
        await client.opened()
        assert await client.read_frame() == (True, PONG, b"early")
        assert aiohttp_requests(served) == before + 1
        await until(lambda: not served.server.runner.server.connections)  # type: ignore
    finally:
        client.close()


async def test_a_refused_handshake_is_answered_and_closed(served: Served) -> None:
    """The Engine.IO server's refusal (here: an origin not allowed) is written as
    an HTTP response, and the connection closed."""
    head = handshake(urlsplit(served.url).netloc, Origin="https://evil.example")
    answer = await raw_http(served, head)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert b"Connection: close" in rest and b"not an accepted origin" in rest
    assert not served.app[SIO_KEY].eio.sockets


async def test_a_connection_that_sends_nothing_is_closed(serve: ServeFactory) -> None:
    served = await serve(keepalive_timeout=0.2)
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""
    finally:
        writer.close()


async def test_shutdown_closes_connections_still_at_the_door(served: Served) -> None:
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n")  # and no more
        await writer.drain()
        await until(lambda: bool(served.server.runner.server.doors))  # type: ignore
        await asyncio.wait_for(served.server.close(), TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            assert await reader.read() == b""
    finally:
        writer.close()


@pytest.mark.parametrize("bad", [
    b"X-Note: a\x00b\r\n",  # NUL in a value
    b"X-Note: a\x1bb\r\n",  # another control character
    b"Bad@Name: x\r\n",  # a name that is not a token
    b"Bad Name: x\r\n",
    b"(x): y\r\n",
])
async def test_a_handshake_with_bytes_http_forbids_is_refused(served: Served, bad: bytes) -> None:
    """Header bytes that RFC 9110 forbids make the handshake aiohttp's, which
    refuses it (400): the front door accepts nothing aiohttp would not."""
    head = handshake(urlsplit(served.url).netloc)
    answer = await raw_http(served, head.replace(b"\r\n", b"\r\n" + bad, 1))
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
    assert not served.app[SIO_KEY].eio.sockets


@pytest.mark.parametrize("request_, code", [
    (b"GET /api/v1/rooms/lobby/search?q=" + b"%F3%B5%92%AE" * 700 + b" HTTP/1.1\r\n\r\n",
     "too_large"),  # a request line longer than aiohttp reads
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: " + b"x" * 9000 + b"\r\n\r\n", "too_large"),
    (b"GET /api/v1/rooms HTTP/1.1\r\nHost: x\r\nBad Name: x\r\n\r\n", "bad_request"),
    (b"GET /api/v1/rooms HTTP/9.9\r\nHost: x\r\n\r\n", "bad_request"),
])
async def test_what_aiohttp_cannot_parse_is_refused_with_the_error_map(
        served: Served, request_: bytes, code: str) -> None:
    """A request aiohttp refuses before any handler runs is answered like every
    refusal, JSON ``{"ok": false, "error": ...}`` (not aiohttp's text echoing
    the request), and only its connection is closed."""
    answer = await raw_http(served, request_)  # (read to its end: the server closed)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.fullmatch(rb"HTTP/1\.[01] 400 Bad Request", head.split(b"\r\n", 1)[0])
    assert b"Content-Type: application/json" in head
    error = json.loads(body)
    assert error["ok"] is False and error["error"]["code"] == code
    assert b"%F3" not in body and b"Bad Name" not in body
    healthy = await raw_http(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                     b"Connection: close\r\n\r\n")
    assert healthy.startswith(b"HTTP/1.1 200")


async def test_a_post_answered_before_its_body_is_in_closes_the_connection(
        served: Served) -> None:
    """A POST refused before its body has arrived (an unknown session) is answered
    and its connection closed: what follows is never read as a new request."""
    answer = await raw_http(served, b"POST /socket.io/?EIO=4&transport=polling&sid=nosuch "
                                    b"HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                                    b"GET / HTTP/1.1\r\n")
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 400 Bad Request" and b"Connection: close" in rest
    assert answer.count(b"HTTP/1.1") == 1


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP answer with a Content-Length: its head and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    assert length, head
    return head + await reader.readexactly(int(length.group(1)))


async def test_a_later_request_head_is_timed_too(serve: ServeFactory) -> None:
    """On a kept-alive connection aiohttp serves (a page, then another request), the
    next request's head has the same deadline as the first: 200 connections that are
    answered a page and then trickle their next head are all closed at the header
    timeout, while an honest client is served; one that finishes its head in time is
    answered."""
    served = await serve(header_timeout=1.5)
    url = urlsplit(served.url)
    page = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    slow = [await asyncio.open_connection(url.hostname, url.port) for _ in range(200)]
    try:
        for reader, writer in slow:
            writer.write(page)
            assert (await asyncio.wait_for(read_answer(reader), TIMEOUT)).startswith(
                b"HTTP/1.1 200")
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(3):  # trickle: more bytes do not buy more time
            for _, writer in slow:
                writer.write(b"a")
            honest = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert (await raw_http(served, honest)).startswith(b"HTTP/1.1 200")
        reader, writer = slow.pop()
        writer.write(b"\r\n\r\n")  # this one finishes in time
        assert (await asyncio.wait_for(read_answer(reader), TIMEOUT)).startswith(
            b"HTTP/1.1 200")
        writer.close()
        async with asyncio.timeout(TIMEOUT):
            for reader, _ in slow:
                assert await reader.read() == b""  # closed, nothing more answered
    finally:
        for _, writer in slow:
            writer.close()


@pytest.mark.parametrize("path", ["/", "/socket.io/?EIO=4&transport=polling"])
async def test_trickling_request_heads_are_cut_at_the_header_timeout(
        serve: ServeFactory, path: str) -> None:
    """1,000 connections that send a request head a few bytes at a time (and never
    finish it) are all closed once the header timeout passes, wherever they were
    going, while an honest client is served throughout (slowloris)."""
    served = await serve(header_timeout=1.5)
    url = urlsplit(served.url)
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()
    slow = [await asyncio.open_connection(url.hostname, url.port) for _ in range(1000)]
    try:
        for _, writer in slow:
            writer.write(head)
        for _ in range(3):  # trickle: more bytes do not buy more time
            for _, writer in slow:
                writer.write(b"a")
            honest = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await raw_http(served, honest)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:40]
        async with asyncio.timeout(TIMEOUT):
            for reader, _ in slow:
                assert await reader.read() == b""  # closed, nothing answered
    finally:
        for _, writer in slow:
            writer.close()


async def test_a_poll_read_by_aiohttp_waits_and_is_answered_alike(served: Served) -> None:
    """A GET the front door leaves to aiohttp (a header that is not ASCII) takes
    the awaiting form of the poll: it waits until something is queued and is
    answered with it; a cut one closes its session at once."""
    engine = served.app[SIO_KEY].eio
    opening = await raw_http(served, b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                                     b"Host: x\r\nConnection: close\r\n\r\n")
    sid = opening.split(b'"sid":"')[1].split(b'"')[0].decode()
    url = urlsplit(served.url)
    poll = (f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n"
            "X-Name: Zo\u00eb\r\n\r\n").encode()
    before = aiohttp_requests(served)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(poll)
        await until(lambda: engine.sockets[sid].poll_waiter is not None)
        assert aiohttp_requests(served) == before + 1
        await engine.send(sid, "queued")
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(length) == b"4queued"
        writer.write(poll)  # waits again, and is cut
        await until(lambda: engine.sockets[sid].poll_waiter is not None)
    finally:
        writer.close()
    await until(lambda: sid not in engine.sockets)


async def test_a_closing_post_whose_body_comes_later_is_answered(served: Served) -> None:
    """A long-polling POST sent with ``Connection: close`` whose body arrives in a
    later read than its head (as over a real network, or from a client that
    closes each request) is read whole and answered ``ok``, then closed."""
    url = urlsplit(served.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
        opened = await asyncio.wait_for(read_answer(reader), TIMEOUT)
        sid = opened.split(b'"sid":"')[1].split(b'"')[0].decode()
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        body = b"6"  # a NOOP
        writer.write(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                     f"Host: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode())
        await writer.drain()
        # the head read and the POST under way before a byte of its body is sent
        await until(lambda: served.app[SIO_KEY].eio.sockets[sid].posting)
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(TIMEOUT):
            answer = await reader.read()
    finally:
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK" and rest.endswith(b"\r\n\r\nok")
    assert b"Connection: close" in rest
