"""A node shutting down, its clients moving to another node behind the same
address: nobody sees them leave or come back (--presence-grace); only a
person who really went away is seen to leave, once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from client import ChatClient

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, Served
from ..proxy import Proxy
from ..services import REDIS_URL, postgres_schema

GRACE = 8.0  # seconds: long enough for every mover (back within about a second)
TTL = 1.5  # --presence-ttl: the cleaner looks every half second


@pytest.fixture
async def nodes(serve: ServeFactory) -> AsyncIterator[list[Served]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        yield [await serve(store=store, redis=REDIS_URL, redis_prefix=prefix,
                           node_id=f"node{i}", presence_ttl=TTL, presence_grace=GRACE,
                           drain_window=1.0, shutdown_timeout=5.0) for i in range(2)]


def port(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1])


async def ready_again(states: asyncio.Queue[str]) -> None:
    """The client lost its connection and is back in every room."""
    while await asyncio.wait_for(states.get(), 3 * TIMEOUT) != "disconnected":
        pass
    while await asyncio.wait_for(states.get(), 3 * TIMEOUT) != "ready":
        pass


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_clients_of_a_node_shutting_down_move_unseen_and_a_leaver_leaves_once(
        nodes: list[Served], peer: PeerFactory, transport: str) -> None:
    a, b = nodes
    balancer = await Proxy(port(a)).start()  # the address clients know: node0 for now
    watcher = await peer("watcher", server=b)
    await watcher.join("r")
    clients: list[ChatClient] = []
    states: list[asyncio.Queue[str]] = []
    try:
        for i in range(4):
            queue: asyncio.Queue[str] = asyncio.Queue()
            mover = ChatClient(balancer.url, f"mover{i}", transports=[transport],
                               reconnection_delay=0.05, reconnection_delay_max=0.2,
                               request_timeout=TIMEOUT, on_state=queue.put_nowait)
            await mover.connect()
            await mover.join("r")
            clients.append(mover)
            states.append(queue)
        leaver = ChatClient(a.url, "leaver", transports=[transport], reconnection_delay=0.05,
                            reconnection_delay_max=0.2, request_timeout=TIMEOUT)
        await leaver.connect()
        await leaver.join("r")
        clients.append(leaver)
        joined = [(await watcher.next("presence"))["user"] for _ in range(5)]
        assert sorted(joined) == ["leaver", "mover0", "mover1", "mover2", "mover3"]

        balancer.upstream = port(b)  # node0 goes: new connections reach node1
        await a.server.close()  # SIGTERM's path: hand presence off, close over 1 s
        await asyncio.gather(*(ready_again(q) for q in states))
        for i, mover in enumerate(clients[:4]):
            await mover.send("r", f"moved {i}", client_id=f"moved-{i}")
        texts = sorted([(await watcher.next("message"))["text"] for _ in range(4)])
        assert texts == [f"moved {i}" for i in range(4)]

        # the leaver keeps knocking at node0's closed port: after the grace, its
        # name is gone (node0's entries removed as a dead node's), told once
        left = await asyncio.wait_for(watcher.events["presence"].get(),
                                      GRACE + 4 * TTL + TIMEOUT)
        assert (left["user"], left["event"]) == ("leaver", "leave")
        assert left["members"] == ["mover0", "mover1", "mover2", "mover3", "watcher"]
        assert watcher.pending("presence") == []  # no mover left or came back
    finally:
        for client in clients:
            await client.close()
        await balancer.close()


async def test_a_node_restarted_under_its_id_keeps_its_past_entries_for_the_grace() -> None:
    """Handed off, a node's entries stay; restarted under the same id, its
    housekeeping removes those not back only once the grace is over (one
    leave, for the name that did not return), and none before."""
    from app.core.models import RoomName, Sid
    from app.presence.redis import RedisPresence
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    room = RoomName("r")
    old = RedisPresence(REDIS_URL, prefix=prefix, node_id="n", ttl=60, grace=0.5)
    await old.start()
    for sid, name in (("s1", "back"), ("s2", "gone")):
        await old.join(room, name, Sid(sid))
    await old.hand_off(0.5)
    await old.close()
    new = RedisPresence(REDIS_URL, prefix=prefix, node_id="n", ttl=60, grace=0.5)
    await new.start()
    left: list[str] = []

    async def on_left(_: RoomName, name: str) -> None:
        left.append(name)

    async def on_joined(_: RoomName, name: str) -> None:
        raise AssertionError(f"{name} joined")
    try:
        live = [(room, Sid("s3"), "back")]  # "back" came back on this node
        assert await new.join(room, "back", Sid("s3")) is False  # never gone
        await new.housekeeping(lambda: live, on_left, on_joined)
        assert left == [] and await new.members(room) == ["back", "gone"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while not left and loop.time() < deadline:  # the grace ends
            await new.housekeeping(lambda: live, on_left, on_joined)
        assert left == ["gone"] and await new.members(room) == ["back"]
    finally:
        await new.close()
