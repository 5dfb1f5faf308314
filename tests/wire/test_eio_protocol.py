"""The Engine.IO v4 protocol on the wire: raw HTTP and raw WebSocket frames.

Each test is a MUST or SHOULD of socketio/socket.io's
``docs/engine.io-protocol/v4-current.md`` (and its test suite), checked
against the real server. Payloads are real Socket.IO packets (``40/chat,``),
since a Socket.IO server answers what is not Socket.IO by closing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
import base64

import aiohttp
import msgpack
import pytest

from app.appkeys import SIO_KEY

from ..conftest import TIMEOUT, ServeFactory, Served, until

pytestmark = pytest.mark.matrix("transport")  # both transports; the serializer does not matter

PATH = "/socket.io/"
PING_INTERVAL, PING_TIMEOUT = 0.4, 0.3  # seconds, short enough to watch the heartbeat


@pytest.fixture
async def server(serve: ServeFactory) -> Served:
    return await serve(serializer="json", ping_interval=PING_INTERVAL,
                       ping_timeout=PING_TIMEOUT)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


def url(served: Served, query: str) -> str:
    return f"{served.url}{PATH}?{query}"


async def open_polling(served: Served, http: aiohttp.ClientSession) -> str:
    async with http.get(url(served, "EIO=4&transport=polling")) as response:
        assert response.status == 200
        body = await response.text()
    assert body[0] == "0"
    sid: str = json.loads(body[1:])["sid"]
    return sid


async def get(http: aiohttp.ClientSession, served: Served, sid: str) -> tuple[int, str]:
    async with http.get(url(served, f"EIO=4&transport=polling&sid={sid}")) as response:
        return response.status, await response.text()


async def post(http: aiohttp.ClientSession, served: Served, sid: str,
               body: str) -> tuple[int, str]:
    async with http.post(url(served, f"EIO=4&transport=polling&sid={sid}"),
                         data=body.encode()) as response:
        return response.status, await response.text()


async def ws_text(ws: aiohttp.ClientWebSocketResponse) -> str:
    message = await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    data: str = message.data
    return data


async def ws_ended(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The server ends the WebSocket (whatever it sent before)."""
    while True:
        message = await asyncio.wait_for(ws.receive(), TIMEOUT)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return


# -- handshake ------------------------------------------------------------------------

async def test_polling_handshake_is_an_open_packet(server: Served,
                                                   http: aiohttp.ClientSession) -> None:
    async with http.get(url(server, "EIO=4&transport=polling")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    assert body[0] == "0"
    opened = json.loads(body[1:])
    assert set(opened) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert opened["upgrades"] == ["websocket"]
    assert opened["pingInterval"] == PING_INTERVAL * 1000
    assert opened["pingTimeout"] == PING_TIMEOUT * 1000
    assert opened["maxPayload"] == server.app[SIO_KEY].eio.max_http_buffer_size


@pytest.mark.parametrize("query", [
    "transport=polling", "EIO=abc&transport=polling", "EIO=3&transport=polling",  # EIO
    "EIO=4", "EIO=4&transport=abc",  # transport
])
async def test_a_handshake_without_valid_parameters_is_400(
        server: Served, http: aiohttp.ClientSession, query: str) -> None:
    async with http.get(url(server, query)) as response:
        assert response.status == 400
    assert not server.app[SIO_KEY].eio.sockets


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_a_handshake_with_another_method_is_400(
        server: Served, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, url(server, "EIO=4&transport=polling")) as response:
        assert response.status == 400
    assert not server.app[SIO_KEY].eio.sockets


async def test_websocket_handshake_opens_with_no_upgrades(
        server: Served, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(url(server, "EIO=4&transport=websocket")) as ws:
        opened = json.loads((await ws_text(ws))[1:])
        assert opened["upgrades"] == [] and opened["maxPayload"] > 0
        assert opened["sid"] in server.app[SIO_KEY].eio.sockets


@pytest.mark.parametrize("query", ["transport=websocket", "EIO=abc&transport=websocket",
                                   "EIO=4", "EIO=4&transport=abc"])
async def test_a_websocket_without_valid_parameters_is_refused(
        server: Served, http: aiohttp.ClientSession, query: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url(server, query))
    assert refused.value.status == 400


async def test_a_post_to_an_unknown_session_is_400(server: Served,
                                                   http: aiohttp.ClientSession) -> None:
    assert (await post(http, server, "nosuchsid", "40/chat,"))[0] == 400
    assert (await get(http, server, "nosuchsid"))[0] == 400


# -- messages over long-polling ----------------------------------------------------------

async def test_a_post_is_answered_ok_and_its_packets_handled_in_order(
        server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    status, body = await post(http, server, sid, '40/chat,{"name":"a"}\x1e42/chat,1["rooms"]')
    assert (status, body) == (200, "ok")
    packets: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while len(packets) < 2:  # the ack may come in a later poll (the store is read)
            status, body = await get(http, server, sid)
            assert status == 200
            packets += body.split("\x1e")
    connect, ack = packets
    assert connect.startswith("40/chat,{")
    assert ack.startswith("43/chat,1[")


async def test_binary_packets_are_base64_with_a_b_prefix(serve: ServeFactory,
                                                         http: aiohttp.ClientSession) -> None:
    served = await serve(serializer="msgpack")
    sid = await open_polling(served, http)
    # a msgpack CONNECT to /chat: {"type": 0, "nsp": "/chat", "data": {"name": "b"}}
    connect = msgpack.packb({"type": 0, "nsp": "/chat", "data": {"name": "b"}})
    assert (await post(http, served, sid, "b" + base64.b64encode(connect).decode()))[0] == 200
    status, body = await get(http, served, sid)
    assert status == 200 and body.startswith("b")
    reply = msgpack.unpackb(base64.b64decode(body[1:]))
    assert reply["type"] == 0 and reply["nsp"] == "/chat" and "sid" in reply["data"]


async def test_an_invalid_post_closes_the_session(server: Served,
                                                  http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    assert (await post(http, server, sid, "abc"))[0] == 400
    assert (await get(http, server, sid))[0] == 400


async def test_a_duplicate_poll_closes_the_session(server: Served,
                                                   http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    first = asyncio.ensure_future(get(http, server, sid))
    session = server.app[SIO_KEY].eio.sockets[sid]
    await until(lambda: session.poll_waiter is not None)
    assert (await get(http, server, sid))[0] == 400
    assert await first == (200, "1")  # the waiting one is told the session is closed
    assert (await get(http, server, sid))[0] == 400


async def test_a_duplicate_post_closes_the_session(server: Served,
                                                   http: aiohttp.ClientSession) -> None:
    """A second POST while the first body is still being read: 400, session closed."""
    sid = await open_polling(server, http)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    target = f"{PATH}?EIO=4&transport=polling&sid={sid}"
    writer.write(f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n4".encode())
    await writer.drain()
    session = server.app[SIO_KEY].eio.sockets[sid]
    await until(lambda: session.posting)
    assert (await post(http, server, sid, "40/chat,"))[0] == 400
    assert (await get(http, server, sid))[0] == 400
    writer.close()


async def test_a_cut_poll_closes_the_session_at_once(server: Served,
                                                     http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {PATH}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                 f"Host: x\r\n\r\n".encode())
    await writer.drain()
    session = server.app[SIO_KEY].eio.sockets[sid]
    await until(lambda: session.poll_waiter is not None)
    writer.close()
    await until(lambda: sid not in server.app[SIO_KEY].eio.sockets)


# -- heartbeat ---------------------------------------------------------------------------

async def test_polling_heartbeat(server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    for _ in range(3):
        assert await get(http, server, sid) == (200, "2")
        assert await post(http, server, sid, "3") == (200, "ok")
    assert sid in server.app[SIO_KEY].eio.sockets


async def test_polling_ping_timeout_closes_the_session(server: Served,
                                                       http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    assert await get(http, server, sid) == (200, "2")  # and no pong
    await until(lambda: sid not in server.app[SIO_KEY].eio.sockets)
    assert (await get(http, server, sid))[0] == 400


async def test_websocket_heartbeat(server: Served, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(url(server, "EIO=4&transport=websocket")) as ws:
        await ws_text(ws)
        for _ in range(3):
            assert await ws_text(ws) == "2"
            await ws.send_str("3")


async def test_websocket_ping_timeout_closes_it(server: Served,
                                                http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(url(server, "EIO=4&transport=websocket"),
                               autoclose=False) as ws:
        sid = json.loads((await ws_text(ws))[1:])["sid"]
        await ws_ended(ws)
    assert sid not in server.app[SIO_KEY].eio.sockets


# -- close -------------------------------------------------------------------------------

async def test_a_client_close_answers_the_waiting_poll_with_noop(
        server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    waiting = asyncio.ensure_future(get(http, server, sid))
    session = server.app[SIO_KEY].eio.sockets[sid]
    await until(lambda: session.poll_waiter is not None)
    assert await post(http, server, sid, "1") == (200, "ok")
    assert await waiting == (200, "6")
    assert (await get(http, server, sid))[0] == 400


async def test_a_server_close_answers_the_waiting_poll_with_close(
        server: Served, http: aiohttp.ClientSession) -> None:
    """Never an empty body (engine.io-parser fails on one): the CLOSE packet."""
    sid = await open_polling(server, http)
    waiting = asyncio.ensure_future(get(http, server, sid))
    eio = server.app[SIO_KEY].eio
    session = eio.sockets[sid]
    await until(lambda: session.poll_waiter is not None)
    await eio.disconnect(sid)
    assert await waiting == (200, "1")
    assert (await get(http, server, sid))[0] == 400


async def test_a_server_close_between_polls_waits_for_the_next(
        server: Served, http: aiohttp.ClientSession) -> None:
    """What the server sent last (Socket.IO's DISCONNECT, then CLOSE) reaches a
    polling client that was between two polls."""
    sid = await open_polling(server, http)
    assert (await post(http, server, sid, '40/chat,{"name":"a"}'))[0] == 200
    status, body = await get(http, server, sid)
    assert body.startswith("40/chat,")
    await server.app[SIO_KEY].disconnect(
        server.app[SIO_KEY].manager.sid_from_eio_sid(sid, "/chat"), namespace="/chat")
    await server.app[SIO_KEY].eio.disconnect(sid)
    status, body = await get(http, server, sid)
    assert status == 200 and body.split("\x1e")[-1] == "1" and "41/chat," in body


async def test_a_websocket_close_packet_ends_it(server: Served,
                                                http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(url(server, "EIO=4&transport=websocket")) as ws:
        sid = json.loads((await ws_text(ws))[1:])["sid"]
        await ws.send_str("1")
        await ws_ended(ws)
    await until(lambda: sid not in server.app[SIO_KEY].eio.sockets)


async def test_an_invalid_websocket_packet_ends_it(server: Served,
                                                   http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(url(server, "EIO=4&transport=websocket")) as ws:
        sid = json.loads((await ws_text(ws))[1:])["sid"]
        await ws.send_str("abc")
        await ws_ended(ws)
    await until(lambda: sid not in server.app[SIO_KEY].eio.sockets)


# -- upgrade -----------------------------------------------------------------------------

async def upgrade(served: Served, http: aiohttp.ClientSession,
                  sid: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url(served, f"EIO=4&transport=websocket&sid={sid}"))
    await ws.send_str("2probe")
    assert await ws_text(ws) == "3probe"
    return ws


async def test_upgrade_from_polling(server: Served, http: aiohttp.ClientSession) -> None:
    """The probe, the poll ended with NOOP, UPGRADE; then packets flow over the
    WebSocket, and nothing else (no stray NOOP) is sent on it."""
    sid = await open_polling(server, http)
    ws = await upgrade(server, http, sid)
    assert await get(http, server, sid) == (200, "6")
    await ws.send_str("5")
    await ws.send_str('40/chat,{"name":"up"}')
    assert (await ws_text(ws)).startswith("40/chat,{")
    assert server.app[SIO_KEY].eio.sockets[sid].upgraded
    await ws.close()


async def test_the_waiting_poll_ends_with_noop_when_probed(
        server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    waiting = asyncio.ensure_future(get(http, server, sid))
    session = server.app[SIO_KEY].eio.sockets[sid]
    await until(lambda: session.poll_waiter is not None)
    ws = await upgrade(server, http, sid)
    assert await waiting == (200, "6")
    await ws.send_str("5")
    await ws.close()


async def test_what_was_queued_during_the_upgrade_arrives_on_the_websocket(
        server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    ws = await upgrade(server, http, sid)
    assert await post(http, server, sid, '40/chat,{"name":"q"}') == (200, "ok")
    await until(lambda: server.app[SIO_KEY].eio.sockets[sid].queued > 0)
    await ws.send_str("5")
    assert (await ws_text(ws)).startswith("40/chat,{")
    await ws.close()


async def test_polling_is_refused_after_the_upgrade(server: Served,
                                                    http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    ws = await upgrade(server, http, sid)
    await ws.send_str("5")
    await until(lambda: server.app[SIO_KEY].eio.sockets[sid].upgraded)
    assert (await get(http, server, sid))[0] == 400
    await ws.send_str('40/chat,{"name":"u"}')
    assert (await ws_text(ws)).startswith("40/chat,{")
    await ws.close()


async def test_a_second_websocket_for_a_session_is_refused(
        server: Served, http: aiohttp.ClientSession) -> None:
    sid = await open_polling(server, http)
    ws = await upgrade(server, http, sid)
    await ws.send_str("5")
    await until(lambda: server.app[SIO_KEY].eio.sockets[sid].upgraded)
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(url(server, f"EIO=4&transport=websocket&sid={sid}"))
    await ws.send_str('40/chat,{"name":"u"}')
    assert (await ws_text(ws)).startswith("40/chat,{")
    await ws.close()


# -- CORS --------------------------------------------------------------------------------

async def test_a_preflight_from_an_accepted_origin(serve: ServeFactory,
                                                   http: aiohttp.ClientSession) -> None:
    served = await serve(allowed_origins="https://chat.example")
    headers = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}
    async with http.options(url(served, "EIO=4&transport=polling"), headers=headers) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "https://chat.example"
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == "content-type"
    async with http.get(url(served, "EIO=4&transport=polling"),
                        headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 400
    assert not served.app[SIO_KEY].eio.sockets


async def test_cutting_a_polling_session_answers_its_own_poll(server: Served) -> None:
    """A long-polling session cut as a slow consumer has its waiting GET answered
    with CLOSE, on a connection the server keeps: behind a proxy that connection
    is kept alive and carries other clients' requests next (here two sessions
    share one), and aborting it would cut them too."""
    engine = server.app[SIO_KEY].eio
    connector = aiohttp.TCPConnector(limit=1)  # one connection for both sessions
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as shared:
        cut, other = await open_polling(server, shared), await open_polling(server, shared)
        for sid in (cut, other):
            assert await post(shared, server, sid, "40") == (200, "ok")
            assert (await get(shared, server, sid))[1].startswith("40")
        waiting = asyncio.ensure_future(get(shared, server, cut))
        session = engine.sockets[cut]
        await until(lambda: session.poll_waiter is not None)
        engine.cut_now(session)
        assert await waiting == (200, "1")
        status, body = await get(shared, server, other)  # over the same connection
        assert status == 200 and body.startswith("2")  # its next ping
