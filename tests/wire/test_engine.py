"""The library gaps fixed in app/sio/server.py and app/eio/, checked on the wire with a raw client.

If a python-socketio/python-engineio upgrade changes the behaviour under a
fix, one of these fails."""

from __future__ import annotations

import asyncio
import base64
import string
from typing import Any

import pytest

from app.appkeys import SIO_KEY

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, Served, until
from ..rawclient import ACK, CONNECT, EIO_CLOSE, EIO_MESSAGE, EVENT, RawClient, encode_sio

pytestmark = pytest.mark.matrix("transport")  # both transports; the serializer does not matter

URLSAFE = set(string.ascii_letters + string.digits + "-_")


async def raw(served: Served, transport: str, name: str = "raw") -> RawClient:
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    connected = await client.connect({"name": name})
    assert connected["type"] == CONNECT, connected
    return client


async def test_reserved_event_names_cannot_fake_a_disconnect(
        served: Served, transport: str, peer: PeerFactory) -> None:
    """A client's EVENT named disconnect/connect is refused; its presence stays."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    for event in ("disconnect", "connect", "connect_error"):
        ack = await alice.call(event, {"name": "mallory"})
        assert ack["error"]["code"] == "bad_request", ack
    assert served.chat.connections[alice.sid].name == "alice"
    assert await bob.occupancy() == [("r", 2)]
    assert bob.pending("presence") == []


async def test_event_without_a_name_gets_bad_request(served: Served, transport: str) -> None:
    """An EVENT whose first element is not a string, or that is empty, is bad_request."""
    client = await raw(served, transport)
    try:
        for data in ([5, {}], [None], [[1]], []):
            await client.send_sio({"type": EVENT, "nsp": "/chat", "data": data, "id": 7})
            ack = await client.recv()
            assert ack["type"] == ACK and ack["id"] == 7
            assert ack["data"][0]["error"]["code"] == "bad_request"
        assert await client.call("rooms") == {"ok": True, "rooms": []}
    finally:
        await client.close()


async def test_polling_burst_of_a_hundred_events_is_all_acked(served: Served) -> None:
    """One long-polling POST carrying 100 events gets 100 acks, in order."""
    client = await raw(served, "polling")
    try:
        assert await client.call("join", {"room": "burst"}) is not None
        packets = []
        for i in range(100):
            p = encode_sio({"type": EVENT, "nsp": "/chat", "id": 1000 + i,
                            "data": ["send", {"room": "burst", "text": f"m{i}"}]},
                           served.settings.serializer)
            packets.append(p if isinstance(p, bytes) else EIO_MESSAGE + p)
        assert await client.send_eio(*packets) == 200
        acks: list[dict[str, Any]] = []
        while len(acks) < 100:
            packet = await asyncio.wait_for(client.recv(), TIMEOUT)
            if packet["type"] == ACK:
                acks.append(packet)
        assert [a["id"] for a in acks] == list(range(1000, 1100))
        assert [a["data"][0]["message"]["seq"] for a in acks] == list(range(1, 101))
    finally:
        await client.close()


async def test_client_close_releases_its_pending_poll(served: Served) -> None:
    """A polling client's CLOSE ends its outstanding GET at once and frees the session."""
    client = await raw(served, "polling")
    try:
        waiting = asyncio.ensure_future(client.poll())
        socket = served.app[SIO_KEY].eio.sockets[client.sid]
        await until(lambda: socket.poll_waiter is not None)  # the GET waits on the server
        # the server's default heartbeat is 25 s + 20 s: without the fix the
        # GET would stay open far beyond TIMEOUT
        assert await client.send_eio(EIO_CLOSE) == 200
        status, _ = await asyncio.wait_for(waiting, TIMEOUT)
        assert status == 200
        assert client.sid not in served.app[SIO_KEY].eio.sockets
        assert served.chat.connections == {}
    finally:
        await client.close()


async def test_shutdown_does_not_wait_for_silent_polling_clients(serve: object) -> None:
    """Stopping the server with a polling client that stopped polling finishes promptly."""
    served = await serve()  # type: ignore[operator]
    client = await raw(served, "polling")
    try:
        await client.call("join", {"room": "r"})
        await asyncio.wait_for(served.server.close(), TIMEOUT)
    finally:
        await client.close()


async def test_broadcast_reaches_websocket_and_polling_members_alike(
        served: Served, peer: PeerFactory) -> None:
    """A room with WebSocket and polling members, in either order of joining, gets
    every broadcast on both transports (msgpack packets are shared between them)."""
    senders = await peer("sender", transports=["websocket"])
    members = [await peer(f"{t}{i}", transports=[t])
               for i, t in enumerate(["websocket", "polling", "polling", "websocket"])]
    await senders.join("mixed")
    for m in members:
        await m.join("mixed")
    sent = [await senders.send("mixed", f"m{i}") for i in range(20)]
    for m in members:
        assert [await m.next("message") for _ in sent] == sent, m.name


async def test_handshake_announces_the_true_ping_interval(serve: ServeFactory,
                                                          transport: str) -> None:
    """A fractional ping interval is advertised exactly (python-engineio truncated it)."""
    served = await serve(ping_interval=1.5, ping_timeout=2.5)
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    try:
        assert client.handshake["pingInterval"] == 1500
        assert client.handshake["pingTimeout"] == 2500
    finally:
        await client.close()


async def test_sessions_without_a_namespace_are_closed(serve: ServeFactory,
                                                       transport: str) -> None:
    """A transport that joins no namespace within connect_timeout is closed; one that
    joined stays (it is still pinged after the deadline)."""
    served = await serve(connect_timeout=0.5, ping_interval=1, ping_timeout=5)
    idle = await RawClient.open(served.url, transport, served.settings.serializer)
    joined = await raw(served, transport)
    try:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(idle.recv(), TIMEOUT)
        assert idle.sid not in served.app[SIO_KEY].eio.sockets
        await asyncio.wait_for(joined.next_ping(), TIMEOUT)  # at 1 s: after the deadline
        assert joined.sid in served.app[SIO_KEY].eio.sockets
    finally:
        await idle.close()
        await joined.close()


@pytest.mark.parametrize("garbage", ["4{not json", "4/chat,xyz", "49", "42{}", "42/chat,{}",
                                     b"\xc1\x00", b"\x93\x01"])
async def test_invalid_framing_closes_only_that_connection(
        served: Served, transport: str, peer: PeerFactory, garbage: str | bytes) -> None:
    """An undecodable Socket.IO packet closes its connection; the room carries on."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    mallory = await raw(served, transport, "mallory")
    try:
        assert await mallory.call("join", {"room": "r"}) is not None
        await mallory.send_eio(garbage)
        with pytest.raises(ConnectionError):
            while True:
                await asyncio.wait_for(mallory.recv(), TIMEOUT)
        seen = [await alice.next("presence") for _ in range(3)]  # bob, mallory in; mallory out
        assert [(e["user"], e["event"]) for e in seen] == [
            ("bob", "join"), ("mallory", "join"), ("mallory", "leave")]
        sent = await bob.send("r", "still here")
        assert await alice.next("message") == sent
    finally:
        await mallory.close()


async def test_a_second_concurrent_poll_closes_the_session(served: Served) -> None:
    """While one long-poll GET waits, a second GET on the session is answered 400
    and the session is closed (the first GET returns at once)."""
    client = await raw(served, "polling")
    try:
        first = asyncio.ensure_future(client.poll())
        socket = served.app[SIO_KEY].eio.sockets[client.sid]
        await until(lambda: socket.poll_waiter is not None)  # the first GET is waiting
        status, _ = await asyncio.wait_for(client.poll(), TIMEOUT)
        assert status == 400
        await asyncio.wait_for(first, TIMEOUT)
        assert client.sid not in served.app[SIO_KEY].eio.sockets
        assert served.chat.connections == {}
    finally:
        await client.close()


async def test_silent_polling_peer_is_dropped_when_its_ping_timeout_passes(
        serve: ServeFactory, peer: PeerFactory) -> None:
    """A polling peer that stops polling is gone once ping interval + ping timeout
    have passed, not a sweep later."""
    served = await serve(ping_interval=1, ping_timeout=1)
    watcher = await peer("watcher", server=served, transports=["websocket"])
    await watcher.join("r")
    ghost = await raw(served, "polling", "ghost")
    try:
        await ghost.call("join", {"room": "r"})
        loop = asyncio.get_running_loop()
        silent_since = loop.time()  # from here on it never polls again
        assert (await watcher.next("presence"))["event"] == "join"
        left = await asyncio.wait_for(watcher.events["presence"].get(), 10)
        assert left["user"] == "ghost" and left["event"] == "leave"
        # the behaviour under test is the timing: 1 s interval + 1 s timeout (+ slack)
        assert loop.time() - silent_since < 1 + 1 + 0.6
    finally:
        await ghost.close()


async def test_a_post_that_is_not_engineio_closes_the_session(served: Served) -> None:
    """A long-polling POST body that is not Engine.IO framing gets 400 and closes the
    session (python-engineio logged a traceback and kept it open)."""
    client = await raw(served, "polling")
    try:
        assert await client.send_eio("x") == 400
        await until(lambda: client.sid not in served.app[SIO_KEY].eio.sockets)
        assert served.chat.connections == {}
    finally:
        await client.close()


async def test_session_ids_are_unique_and_unguessable_from_the_pool(served: Served) -> None:
    """Ids drawn from the pooled entropy keep python-engineio's form (20 base64url
    characters: 12 random bytes and a counter) and never repeat, across refills."""
    eio = served.app[SIO_KEY].eio
    ids = [eio.generate_id() for _ in range(1000)]  # about four refills of the pool
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 20 and set(i) <= URLSAFE for i in ids)
    randoms = {base64.urlsafe_b64decode(i)[:12] for i in ids}
    assert len(randoms) == len(ids)  # the random part differs too, not just the counter
