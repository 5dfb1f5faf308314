"""Dead and departed peers: a silent client is dropped by the heartbeat, a closed
one at once, and nothing about any of them stays behind."""

from __future__ import annotations

import asyncio

import pytest

from app.appkeys import PRESENCE_KEY, SIO_KEY
from app.presence.memory import MemoryPresence

from ..conftest import PeerFactory, ServeFactory, Served, until
from ..rawclient import CONNECT, RawClient

pytestmark = pytest.mark.matrix("transport")  # both transports; the serializer does not matter

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
                        "members": ["watcher"], "count": 1}
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


async def test_churn_leaves_no_trace(served: Served, transport: str, peer: PeerFactory) -> None:
    """Connections that join rooms, talk and go (cleanly or abruptly) leave no
    entries in the namespace, presence, room or session tables."""
    sio = served.app[SIO_KEY]
    warmup = await peer("warmup")  # starts the server's own background tasks
    await warmup.join("all")
    await warmup.sio.disconnect()
    await until(lambda: not sio.eio.sockets)
    tasks_before = len(asyncio.all_tasks())
    for round_ in range(3):
        peers = [await peer(f"user{i}") for i in range(8)]
        for i, p in enumerate(peers):
            for room in (f"room{i % 3}", "all"):
                await p.join(room)
            await p.send("all", f"round {round_} from {p.name}")
        raws = [await joined_raw(served, transport, "all") for _ in range(2)]
        for p in peers:
            await p.sio.disconnect()
        for r in raws:
            await r.send_eio("1")  # Engine.IO CLOSE
            await r.close()
        await until(lambda: not sio.eio.sockets)
        assert served.chat.connections == {}
        presence = served.app[PRESENCE_KEY]
        assert isinstance(presence, MemoryPresence) and len(presence) == 0
        assert await presence.rooms() == []
        rooms = sio.manager.rooms.get("/chat", {})
        assert all(not members for name, members in rooms.items()), rooms
        assert not sio.manager._entered  # nor in the index of who is in which room
        # nor among python-socketio's half-connected or half-gone (a list that
        # grew by one per connection made every later connect slower)
        assert not sio.manager.pending_disconnect and not sio.manager.pending_connect
        assert not sio.manager.callbacks and not sio.environ
        assert not sio._unjoined  # nor among the sessions with a connect deadline
        # no task outlives its session (a ping sleeper once did, for 25 s each)
        await until(lambda: len(asyncio.all_tasks()) <= tasks_before)


async def test_a_stalled_reader_does_not_hold_up_the_room(
        served: Served, transport: str, peer: PeerFactory) -> None:
    """A member that stops reading its socket does not delay delivery to the others."""
    stalled = await joined_raw(served, "websocket", "busy")  # then never reads again
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("busy")
    await bob.join("busy")
    try:
        texts = [f"m{i} " + "x" * 2000 for i in range(300)]  # ~600 KB the stalled one won't read
        for text in texts:
            await alice.send("busy", text)
        assert [(await bob.next("message"))["text"] for _ in texts] == texts
    finally:
        await stalled.close()
