"""Large rooms on two nodes sharing Redis: a join gets a count and a first page,
``members`` pages the rest, and arrivals and departures reach the others
coalesced (at most one event a tick per node), with the room's count."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.core.models import RoomName, Sid
from app.presence.redis import RedisPresence

from ..conftest import PeerFactory, Served, ServeFactory
from ..jsclient import JSClient
from ..services import REDIS_URL, postgres_schema

pytestmark = pytest.mark.matrix("transport")  # presence is JSON-like: one serializer will do

LARGE = {"presence_list_max": 3, "presence_tick": 0.05}


@pytest.fixture
async def nodes(serve: ServeFactory) -> AsyncIterator[tuple[Served, Served]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        a, b = [await serve(store=store, redis=REDIS_URL, redis_prefix=prefix,
                            node_id=f"node{i}", **LARGE) for i in range(2)]
        yield a, b


async def test_a_large_room_across_two_nodes(nodes: tuple[Served, Served],
                                             peer: PeerFactory) -> None:
    a, b = nodes
    watcher = await peer("watcher", server=a)
    await watcher.join("big")
    names = [f"p{i}" for i in range(8)]
    for i, name in enumerate(names):
        someone = await peer(name, server=(a, b)[i % 2])
        await someone.join("big")
    events: list[dict[str, Any]] = []

    def told() -> list[str]:
        return sorted(e["user"] if "user" in e else name
                      for e in events for name in e.get("joined", [None]))
    while told() != names:  # (each node tells its own arrivals, once a tick)
        events.append(await watcher.next("presence"))
    small = [e for e in events if "user" in e]  # while the room had up to 3 names
    assert [e["user"] for e in small] == names[:len(small)] and len(small) <= 2
    coalesced = [e for e in events if "joined" in e]
    assert len(coalesced) <= 2 * 6  # at most one a tick per node (here: a few ticks)
    assert all("members" not in e for e in coalesced)  # no list of a large room
    assert max(e["count"] for e in coalesced) == 9  # the room's, as of each tick
    ack = await watcher.ok("members", {"room": "big", "limit": 2})
    seen = set(ack["members"])
    while "members_next" in ack:
        ack = await watcher.ok("members", {"room": "big", "limit": 2,
                                           "next": ack["members_next"]})
        seen |= set(ack["members"])
    assert seen == {"watcher", *names} and ack["count"] == 9
    late = await peer("late", server=b)
    joined = await late.join("big")
    assert joined["count"] == 10 and set(joined["members"]) == {"late", "watcher", *names}


async def test_redis_pages_cost_about_their_size() -> None:
    """Presence's page over Redis (HSCAN): 2,000 names in pages of about 100,
    each name present all along listed, the count exact."""
    presence = RedisPresence(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:8]}", node_id="n",
                             ttl=5)
    await presence.start()
    try:
        room = RoomName("huge")
        names = {f"name{i:04d}" for i in range(2000)}
        for i, name in enumerate(sorted(names)):
            await presence.join(room, name, Sid(f"s{i}"))
        assert await presence.count(room) == 2000
        seen: set[str] = set()
        sizes = []
        cursor: str | None = None
        while True:
            page, cursor = await presence.page(room, cursor, 100)
            seen |= set(page)
            sizes.append(len(page))
            if cursor is None:
                break
        assert seen == names
        assert max(sizes) <= 400 and len(sizes) >= 5  # pages, not the whole room at once
    finally:
        await presence.close()


async def test_socket_io_client_in_a_large_room(serve: ServeFactory, peer: PeerFactory,
                                                transport: str, js: list[JSClient]) -> None:
    """socket.io-client from npm: its join's ack has the count and a first page
    with members_next, and later arrivals come coalesced with the count."""
    served = await serve(**LARGE)
    for i in range(4):
        await (await peer(f"p{i}", server=served)).join("big")
    dora = await JSClient.start(url=served.url, transports=[transport], name="dora", room="big",
                                send=0, parser=served.settings.serializer, presence=8)
    js.append(dora)
    joined = await dora.line("joined")
    assert joined["ok"] and joined["count"] == 5 and len(joined["members"]) == 3
    assert joined["members_next"]
    for i in range(4, 7):
        await (await peer(f"p{i}", server=served)).join("big")
    told = await dora.line("presence")
    assert told["count"] == 8 and told["coalesced"] is True
    assert {"p4", "p5", "p6"} <= set(told["names"])
