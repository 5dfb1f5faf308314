"""app/eio/server.py: every session is ours, WebSocket ones write directly, and
nothing costs a task per member or per idle connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from app.appkeys import SIO_KEY
from app.eio.server import LiveSession

from ..conftest import TIMEOUT, PeerFactory, Served, until
from ..rawclient import CONNECT, RawClient

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers


def session(served: Served, eio_sid: str) -> LiveSession:
    socket = served.app[SIO_KEY].eio.sockets[eio_sid]
    assert isinstance(socket, LiveSession), type(socket)
    return socket


async def tasks_started_by(action: Callable[[], Awaitable[Any]]) -> int:
    """How many asyncio tasks ``action`` starts in this loop."""
    loop = asyncio.get_running_loop()
    started = 0
    default = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        nonlocal started
        started += 1
        return default(loop, coro, **kwargs) if default else asyncio.Task(coro, loop=loop,
                                                                          **kwargs)

    loop.set_task_factory(counting)
    try:
        await action()
    finally:
        loop.set_task_factory(default)
    return started


async def test_every_session_is_ours_and_websocket_ones_write_directly(
        served: Served, transport: str) -> None:
    """A new session is a LiveSession; on WebSocket it writes to its transport
    directly and keeps a slimmed environ, on long-polling it keeps a queue."""
    headers = {"Cookie": "session=secret", "Authorization": "Bearer secret",
               "User-Agent": "raw/1"}
    client = await RawClient.open(served.url, transport, served.settings.serializer,
                                  aiohttp.ClientSession(headers=headers))
    try:
        assert (await client.connect({"name": "raw"}))["type"] == CONNECT
        socket = session(served, client.sid)
        assert (socket.wire is not None) is (transport == "websocket")
        environ = served.app[SIO_KEY].environ[client.sid]
        assert environ["REMOTE_ADDR"] == "127.0.0.1" and "HTTP_HOST" in environ
        assert environ["HTTP_USER_AGENT"] == "raw/1"
        # credentials nothing after the handshake reads (the Admin UI shows the
        # headers) are not kept, nor, on WebSocket, what only its handshake needed
        assert not {"HTTP_COOKIE", "HTTP_AUTHORIZATION"} & set(environ)
        if transport == "websocket":
            assert not {"HTTP_SEC_WEBSOCKET_KEY", "HTTP_UPGRADE"} & set(environ)
        assert await client.call("rooms") == {"ok": True, "rooms": []}
    finally:
        await client.close()


async def test_a_session_upgraded_from_polling_writes_directly(served: Served,
                                                               peer: PeerFactory) -> None:
    """The official upgrade path (polling, then the WebSocket probe) ends in direct
    writes, and nothing queued before the switch is lost."""
    alice = await peer("alice", transports=["polling", "websocket"])
    await until(lambda: alice.sio.transport() == "websocket")
    bob = await peer("bob", transports=["websocket"])
    await alice.join("up")
    await bob.join("up")
    socket = session(served, served.app[SIO_KEY].manager.eio_sid_from_sid(alice.sid, "/chat"))
    assert socket.upgraded and socket.wire is not None
    sent = [(await bob.send("up", f"m{i}"))["seq"] for i in range(20)]
    assert [(await alice.next("message"))["seq"] for _ in sent] == sent


async def test_a_room_broadcast_starts_no_task_per_member(served: Served,
                                                          peer: PeerFactory) -> None:
    """A message to a room of 30 WebSocket members is written without starting a
    task per member (python-socketio started one each), and all 30 get it."""
    members = [await peer(f"m{i}", transports=["websocket"]) for i in range(30)]
    for member in members:
        await member.join("wide")
    sio = served.app[SIO_KEY]
    started = await tasks_started_by(lambda: sio.emit(
        "message", {"room": "wide", "seq": 1}, room="wide", namespace="/chat"))
    assert started == 0
    for member in members:
        assert await member.next("message") == {"room": "wide", "seq": 1}


async def test_an_open_websocket_keeps_no_task(served: Served) -> None:
    """An open WebSocket keeps no task at all (aiohttp kept two, python-engineio
    three more: writer, a read wait, a ping sleeper); its messages are handled
    by a task only while some are waiting."""
    clients: list[RawClient] = []

    async def connect() -> None:
        client = await RawClient.open(served.url, "websocket", served.settings.serializer)
        clients.append(client)
        assert (await client.connect({"name": f"idle{len(clients)}"}))["type"] == CONNECT

    try:
        await connect()  # the first one also starts the server's background tasks
        before = len(asyncio.all_tasks())
        for _ in range(20):
            await connect()
        assert await clients[-1].call("rooms") == {"ok": True, "rooms": []}
        await until(lambda: len(asyncio.all_tasks()) <= before)
    finally:
        for client in clients:
            await client.close()
    await until(lambda: not served.app[SIO_KEY].eio.sockets)


async def test_shutdown_ends_the_websocket_without_a_close_packet(served: Served) -> None:
    """Closing every session, as at shutdown, ends each WebSocket with no Engine.IO
    CLOSE before it (clients take that as a goodbye and do not reconnect), and
    the reader is not left waiting."""
    client = await RawClient.open(served.url, "websocket", served.settings.serializer)
    try:
        assert (await client.connect({"name": "raw"}))["type"] == CONNECT
        assert await served.app[SIO_KEY].close_all_sessions() == 1
        with pytest.raises(ConnectionError, match="websocket ended"):
            await asyncio.wait_for(client.recv(), TIMEOUT)
        await until(lambda: not served.app[SIO_KEY].eio.sockets)
    finally:
        await client.close()
