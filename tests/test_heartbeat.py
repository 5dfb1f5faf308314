"""Dead peers: a silent client is dropped by the heartbeat, a closed one at once,
and nothing about either stays behind."""

from __future__ import annotations

import asyncio

from app.keys import PRESENCE_KEY, SIO_KEY
from app.presence.memory import MemoryPresence

from .conftest import PeerFactory, ServeFactory, Served
from .rawclient import CONNECT, RawClient

# short heartbeat for tests: a silent peer is dead after about 1 s + 1 s
PING_INTERVAL, PING_TIMEOUT = 1.0, 1.0


async def joined_raw(served: Served, transport: str, room: str) -> RawClient:
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    assert (await client.connect({"name": "ghost"}))["type"] == CONNECT
    assert (await client.call("join", {"room": room}))["ok"] is True
    return client


def assert_forgotten(served: Served, eio_sid: str) -> None:
    """No trace of the connection: namespace table, presence, Engine.IO sessions."""
    assert all(c.name != "ghost" for c in served.chat.connections.values())
    presence = served.app[PRESENCE_KEY]
    assert isinstance(presence, MemoryPresence)
    assert len(presence) == 1  # only the watcher is left
    assert eio_sid not in served.app[SIO_KEY].eio.sockets


async def test_silent_peer_is_dropped_by_heartbeat(serve: ServeFactory, serializer: str,
                                                   transport: str, peer: PeerFactory) -> None:
    """A peer that stops answering pings (or polling) is removed after the heartbeat
    timeout: the room hears it leave and the server forgets it."""
    served = await serve(serializer=serializer, ping_interval=PING_INTERVAL,
                         ping_timeout=PING_TIMEOUT)
    watcher = await peer("watcher", server=served)
    await watcher.join("hb")
    ghost = await joined_raw(served, transport, "hb")
    try:
        assert (await watcher.next("presence"))["event"] == "join"
        ghost.answer_pings = False  # and, from here on, the ghost reads nothing at all
        loop = asyncio.get_running_loop()
        started = loop.time()
        left = await asyncio.wait_for(watcher.events["presence"].get(),
                                      3 * (PING_INTERVAL + PING_TIMEOUT) + 2)
        assert left == {"room": "hb", "user": "ghost", "event": "leave",
                        "members": ["watcher"]}
        assert loop.time() - started >= PING_TIMEOUT  # it was the heartbeat, not a close
        assert_forgotten(served, ghost.sid)
    finally:
        await ghost.close()


async def test_closed_websocket_is_cleaned_up_at_once(serve: ServeFactory, serializer: str,
                                                      peer: PeerFactory) -> None:
    """A WebSocket that closes without a goodbye is cleaned up at once, not at the
    heartbeat timeout (which is left at its 45 s default here)."""
    served = await serve(serializer=serializer)
    watcher = await peer("watcher", server=served, transports=["websocket"])
    await watcher.join("drop")
    ghost = await joined_raw(served, "websocket", "drop")
    assert (await watcher.next("presence"))["event"] == "join"
    await ghost.close()  # TCP close, no Socket.IO disconnect
    left = await watcher.next("presence")
    assert left["event"] == "leave" and left["user"] == "ghost"
    assert_forgotten(served, ghost.sid)
