"""Several nodes sharing Redis (fan-out, presence) and PostgreSQL (history):
users on different nodes cannot tell."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from app.core.models import RoomName, Sid
from app.api.keys import entry, new_key
from app.appkeys import SIO_KEY
from app.presence.redis import RedisPresence
from client import ChatClient

from ..conftest import (
    TIMEOUT, UNLIMITED_FLAGS, Peer, PeerFactory, ServeFactory, Served, sio_client, until,
)
from ..members import Member
from ..processes import Process
from ..services import REDIS_URL, ThrowawayRedis, postgres_schema


@pytest.fixture
async def cluster(serve: ServeFactory, serializer: str) -> AsyncIterator[list[Served]]:
    """Two in-process nodes on one Redis (own key prefix) and one PostgreSQL schema."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        nodes = [await serve(serializer=serializer, store=store, redis=REDIS_URL,
                             redis_prefix=prefix, node_id=f"node{i}", presence_ttl=1.5)
                 for i in range(2)]
        yield nodes


async def health(served: Served) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/healthz") as response:
            return response.status, await response.json()


async def test_users_on_different_nodes_chat(cluster: list[Served], peer: PeerFactory) -> None:
    """Messages, presence, typing, members, room counts and history are the same
    whichever node a user is on."""
    a, b = cluster
    for i, node in enumerate(cluster):
        assert await health(node) == (200, {"status": "ok", "node": f"node{i}", "store": "ok",
                                            "store_writer": "ok", "presence": "ok",
                                            "presence_housekeeping": "ok", "fanout": "ok",
                                            "files": "ok"})
    alice, bob = await peer("alice", server=a), await peer("bob", server=b)
    await alice.join("r")
    ack = await bob.join("r")
    assert ack["members"] == ["alice", "bob"]
    assert (await alice.next("presence"))["user"] == "bob"
    sent = await alice.send("r", "from node0")
    assert await bob.next("message") == sent
    reply = await bob.send("r", "from node1")
    assert await alice.next("message") == reply
    await bob.ok("typing", {"room": "r", "active": True})
    assert (await alice.next("typing"))["user"] == "bob"
    for user in (alice, bob):
        assert await user.occupancy() == [("r", 2)]
        history = await user.ok("history", {"room": "r"})
        assert [m["seq"] for m in history["messages"]] == [1, 2]


async def test_presence_is_once_per_name_across_nodes(cluster: list[Served],
                                                      peer: PeerFactory) -> None:
    """A name with connections on both nodes joins once and leaves once."""
    a, b = cluster
    watcher = await peer("watcher", server=a)
    await watcher.join("p")
    alice_a, alice_b = await peer("alice", server=a), await peer("alice", server=b)
    await alice_a.join("p")
    await alice_b.join("p")
    await alice_a.sio.disconnect()
    await watcher.ok("typing", {"room": "p", "active": True})  # a marker through b's node
    assert [await watcher.next("presence")] == [
        {"room": "p", "user": "alice", "event": "join", "members": ["alice", "watcher"],
         "count": 2}]
    await alice_b.sio.disconnect()
    assert await watcher.next("presence") == {
        "room": "p", "user": "alice", "event": "leave", "members": ["watcher"], "count": 1}
    assert watcher.pending("presence") == []


async def test_concurrent_sends_on_both_nodes_arrive_once_in_order(
        cluster: list[Served], serializer: str, transport: str) -> None:
    """Senders on both nodes racing: seq is gap-free and each ChatClient, on either
    node, hands over every message once, in seq order."""
    watchers: list[tuple[ChatClient, asyncio.Queue[dict[str, Any]]]] = []
    senders: list[ChatClient] = []
    try:
        for i, node in enumerate(cluster):
            inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            watcher = ChatClient(node.url, f"watcher{i}", serializer=serializer,
                                 transports=[transport], on_message=inbox.put_nowait)
            sender = ChatClient(node.url, f"sender{i}", serializer=serializer,
                                transports=[transport])
            for client in (watcher, sender):
                await client.connect()
                await client.join("race")
            watchers.append((watcher, inbox))
            senders.append(sender)
        await asyncio.gather(*(s.send("race", f"{s.name}-{j}")
                               for j in range(40) for s in senders))
        for _, inbox in watchers:
            got = [await asyncio.wait_for(inbox.get(), TIMEOUT) for _ in range(80)]
            assert [m["seq"] for m in got] == list(range(1, 81))
            assert inbox.empty()
    finally:
        for client in [w for w, _ in watchers] + senders:
            await client.close()


async def test_dead_node_leaves_no_ghosts(cluster: list[Served], peer: PeerFactory,
                                          tmp_path: Path) -> None:
    """Members of a node that dies without cleaning up are announced as gone and
    removed within the presence TTL (set to 1.5 s here)."""
    a, _ = cluster
    watcher = await peer("watcher", server=a)
    await watcher.join("g")
    settings = a.settings
    node = await Process.start(
        "-m", "app", "--host", "127.0.0.1", "--port", "0", "--store", settings.store,
        "--redis", settings.redis, "--redis-prefix", settings.redis_prefix,
        "--node-id", "doomed", "--presence-ttl", "1.5", "--serializer", settings.serializer,
        *UNLIMITED_FLAGS,
        cwd=tmp_path)
    port = int((await node.stderr_match(r"listening on http://[^:]+:(\d+)", 20)).group(1))
    try:
        from ..conftest import Peer, sio_client
        sio = sio_client(settings.serializer)
        ghost = Peer("ghost", sio)
        await sio.connect(f"http://127.0.0.1:{port}", auth={"name": "ghost"},
                          namespaces=["/chat"], wait_timeout=TIMEOUT)
        await ghost.join("g")
        assert (await watcher.next("presence"))["event"] == "join"
    finally:
        node.proc.kill()  # no goodbye: its Redis entries stay behind
        await node.wait()
    left = await asyncio.wait_for(watcher.events["presence"].get(), 10)
    assert left == {"room": "g", "user": "ghost", "event": "leave", "members": ["watcher"],
                    "count": 1}
    assert await watcher.occupancy() == [("g", 1)]
    await sio.eio.disconnect(abort=True)


async def test_redis_restart(serve: ServeFactory, serializer: str, transport: str,
                             tmp_path: Path) -> None:
    """While Redis is down each node keeps serving its own clients and says it is
    unhealthy; sends are stored; once Redis is back fan-out resumes by itself, and
    a client on the other node is told to catch up and fetches what it missed
    from history at once: every message once, in order."""
    redis = await ThrowawayRedis(tmp_path).start()
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    try:
        async with postgres_schema() as store:
            a, b = [await serve(serializer=serializer, store=store, redis=redis.url,
                                redis_prefix=prefix, node_id=f"node{i}") for i in range(2)]
            alice = ChatClient(a.url, "alice", serializer=serializer, transports=[transport],
                               on_message=inbox.put_nowait)
            bob = ChatClient(b.url, "bob", serializer=serializer, transports=[transport])
            local: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            carol = ChatClient(b.url, "carol", serializer=serializer, transports=[transport],
                               on_message=local.put_nowait)
            try:
                for client in (alice, bob, carol):
                    await client.connect()
                    await client.join("r")
                await bob.send("r", "m1")
                assert (await asyncio.wait_for(inbox.get(), TIMEOUT))["text"] == "m1"

                await redis.stop()
                fanouts = [node.app[SIO_KEY].manager for node in (a, b)]
                await until(lambda: not any(f.healthy for f in fanouts))
                assert (await health(a))[0] == 503 and (await health(b))[0] == 503
                for text in ("m2", "m3"):
                    await bob.send("r", text)  # stored; node0 cannot hear of it
                # carol, on bob's node, still gets everything live
                assert [(await asyncio.wait_for(local.get(), TIMEOUT))["text"]
                        for _ in range(3)] == ["m1", "m2", "m3"]

                await redis.start()  # same port
                await until(lambda: all(f.healthy for f in fanouts), 10)
                # and both report healthy again by themselves (presence's pooled
                # connections may each fail once on the Redis that restarted)
                async with asyncio.timeout(10):
                    while [(await health(n))[0] for n in (a, b)] != [200, 200]:
                        pass
                # told to catch up, alice has m2 and m3 with no later message to show
                # the gap
                got = [await asyncio.wait_for(inbox.get(), TIMEOUT) for _ in range(2)]
                assert [m["text"] for m in got] == ["m2", "m3"]
                await bob.send("r", "m4")
                assert (await asyncio.wait_for(inbox.get(), TIMEOUT))["text"] == "m4"
                assert inbox.empty()
            finally:
                for client in (alice, bob, carol):
                    await client.close()
    finally:
        await redis.stop()


async def test_a_burst_of_joins_waits_for_the_bounded_redis_pool(serve: ServeFactory) -> None:
    """500 joins at once on one cluster node whose presence client may hold 16
    connections: every join succeeds (a request waits for a pooled connection;
    redis-py's own pool refuses past its bound, "Too many connections", and the
    join was answered unavailable), the node never holds more than 16, and
    fan-out holds its own two whatever the load."""
    import redis.asyncio as aioredis

    from ..conftest import sio_client

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    node = await serve(redis=REDIS_URL, redis_prefix=prefix, node_id="node0",
                       redis_max_connections=16, max_connections_per_address=1000)
    clients = [sio_client("msgpack") for _ in range(100)]
    try:
        await asyncio.gather(*(sio.connect(node.url, auth={"name": f"u{i}"},
                                           namespaces=["/chat"], transports=["websocket"],
                                           wait_timeout=TIMEOUT)
                               for i, sio in enumerate(clients)))
        acks = await asyncio.gather(*(sio.call("join", {"room": f"burst{j}"}, namespace="/chat",
                                               timeout=30)
                                      for sio in clients for j in range(5)))
        assert [ack for ack in acks if not ack["ok"]] == []
        assert len(acks) == 500
        redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            names = [client["name"] for client in await redis.client_list()]
        finally:
            await redis.aclose()
        assert 1 <= names.count(f"{prefix}:node0:presence") <= 16
        # fan-out: one connection publishing (the joins' presence events), one subscribed
        assert names.count(f"{prefix}:node0:fanout:pub") == 1
        assert names.count(f"{prefix}:node0:fanout:sub") == 1
    finally:
        await asyncio.gather(*(sio.disconnect() for sio in clients if sio.connected))


async def connected_peer(name: str, server: Served, peers: list[Peer]) -> Peer:
    """A msgpack peer on WebSocket, kept in ``peers`` for the test to disconnect."""
    peers.append(Peer(name, sio_client("msgpack")))
    await peers[-1].sio.connect(server.url, auth={"name": name}, namespaces=["/chat"],
                                wait_timeout=TIMEOUT)
    return peers[-1]


async def test_a_dead_node_with_ten_thousand_entries_is_removed_once(
        serve: ServeFactory) -> None:
    """A node holding 10,000 presence entries (100 rooms of 100 names) dies: one
    survivor removes them in one Redis call and its leaves are announced once in the
    cluster (a watcher on each node sees each of its room's 100 leaves exactly once),
    while both survivors keep all of their own members (the cleaner's liveness is
    renewed on its own timer, so it is not taken for dead meanwhile)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    # (r0 has 102 names: a large room, whose leaves are told coalesced, every
    # name of a tick listed)
    a, b = [await serve(store="memory://", redis=REDIS_URL,
                        redis_prefix=prefix, node_id=f"node{i}", presence_ttl=3,
                        presence_max_names=200)
            for i in range(2)]
    # (its own alive key outlives the setup: 10,000 joins take a while)
    doomed = RedisPresence(REDIS_URL, prefix=prefix, node_id="doomed", ttl=60)
    await doomed.start()
    for room in range(100):
        await asyncio.gather(*(doomed.join(RoomName(f"r{room}"), f"d{i}", Sid(f"s{room}-{i}"))
                               for i in range(100)))
    peers: list[Peer] = []

    async def peer(name: str, server: Served) -> Peer:
        return await connected_peer(name, server, peers)

    watchers = [await peer(f"watch-{served.settings.node_id}", server=served)
                for served in (a, b)]
    keepers = [await peer(f"keep-{served.settings.node_id}", server=served)
               for served in (a, b)]
    for watcher in watchers:
        await watcher.join("r0")
    for keeper in keepers:
        await keeper.join("kept")
    await doomed.close()  # its alive key is gone, as if it had died; its entries stay
    for watcher in watchers:
        left: list[str] = []
        async with asyncio.timeout(30):
            while len(left) < 100:
                event = await watcher.events["presence"].get()
                if "left" in event:
                    left += event["left"]
                elif event["event"] == "leave":
                    left.append(event["user"])
        assert sorted(left) == sorted(f"d{i}" for i in range(100))
    assert (await a.chat.presence.members(RoomName("r0"))) == sorted(
        w.name for w in watchers)
    assert (await a.chat.presence.members(RoomName("kept"))) == sorted(
        k.name for k in keepers)
    rooms = dict(await b.chat.presence.rooms())
    assert rooms == {"r0": 2, "kept": 2}
    for served in (a, b):
        _, body = await health(served)
        assert body["presence_housekeeping"] == "ok"
    for watcher in watchers:  # and nothing twice (an event of one name, or coalesced)
        again = {name for e in watcher.pending("presence")
                 for name in [*e.get("left", []), *e.get("joined", []),
                              *([e["user"]] if "user" in e else [])]}
        assert not again & {f"d{i}" for i in range(100)}, again
    for each in peers:
        await each.sio.disconnect()


async def test_presence_housekeeping_survives_any_error() -> None:
    """An error that is not Redis's (here the node's own list of members raising)
    ends neither housekeeping loop: it is reported in status(), the node's liveness
    is renewed meanwhile, and the next round that works clears the report."""
    import redis.asyncio as aioredis
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    presence = RedisPresence(REDIS_URL, prefix=prefix, node_id="n", ttl=0.3)
    await presence.start()
    calls = 0

    def local() -> list[tuple[RoomName, Sid, str]]:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("a bug in the node")
        return []

    async def on_left(room: RoomName, name: str) -> None:
        pass

    housekeeping = asyncio.ensure_future(presence.maintain(local, on_left, on_left))
    try:
        await until(lambda: calls >= 2)
        assert "cleanup: RuntimeError: a bug in the node" in presence.status()
        redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert await redis.exists(f"{prefix}:alive:n")  # renewed all along
        finally:
            await redis.aclose()
        await until(lambda: calls >= 5)
        assert presence.status() == "ok"
    finally:
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        await presence.close()


async def test_the_room_listing_heals_what_racing_nodes_leave_in_it() -> None:
    """The listing of occupied rooms is a key of its own (on Redis Cluster it is
    on another shard than the rooms), written beside each room's script: a
    leave emptying a room on one node and a join filling it on another can
    leave it out while occupied, or in while empty. Both are made up as if a
    race had done them; one housekeeping round puts each right, and joins and
    leaves on two nodes keep the listing exact."""
    import redis.asyncio as aioredis
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    a, b = (RedisPresence(REDIS_URL, prefix=prefix, node_id=n, ttl=60) for n in ("a", "b"))
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)

    async def nobody(room: RoomName, name: str) -> None:
        raise AssertionError(f"{name} in {room} was announced")

    try:
        for presence in (a, b):
            await presence.start()
        assert await a.join(RoomName("x"), "alice", Sid("s1"))
        assert await b.join(RoomName("x"), "bob", Sid("s2"))
        assert await a.leave(RoomName("x"), "alice", Sid("s1"))
        assert await b.rooms() == [("x", 1)]
        assert await b.leave(RoomName("x"), "bob", Sid("s2"))
        assert await a.rooms() == [] and not await redis.smembers(f"{prefix}:rooms")
        await a.join(RoomName("held"), "alice", Sid("s1"))
        await redis.srem(f"{prefix}:rooms", "held")  # a leave's removal came last
        await redis.sadd(f"{prefix}:rooms", "ghost")  # a join's listing came last
        assert await b.rooms() == []  # (an empty room is never shown)
        await a.housekeeping(lambda: [(RoomName("held"), Sid("s1"), "alice")], nobody, nobody)
        assert await redis.smembers(f"{prefix}:rooms") == {"held"}
        assert await b.rooms() == [("held", 1)]
    finally:
        await redis.aclose()
        for presence in (a, b):
            await presence.close()


async def test_stopped_housekeeping_leaves_no_loop_running() -> None:
    """Cancelled in the middle of a round whose work does not stop at once (here
    an announcement that swallows the cancellation, as asyncio.Condition.wait can
    on Python 3.11 while waiting for a pooled connection), housekeeping returns
    only once both of its loops have ended: nothing writes to Redis after it
    (gather returned as soon as one loop was cancelled, and the other ran on)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    presence = RedisPresence(REDIS_URL, prefix=prefix, node_id="n", ttl=0.3)
    await presence.start()
    announcing = asyncio.Event()
    never = asyncio.Event()

    async def on_joined(room: RoomName, name: str) -> None:
        if announcing.is_set():
            return
        announcing.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            pass  # swallowed: the round goes on

    async def on_left(room: RoomName, name: str) -> None:
        pass

    local = [(RoomName("r"), Sid(f"s{i}"), f"n{i}") for i in range(3)]
    housekeeping = asyncio.ensure_future(presence.maintain(lambda: local, on_left, on_joined))
    try:
        await asyncio.wait_for(announcing.wait(), TIMEOUT)
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        loops = [t for t in asyncio.all_tasks()
                 if getattr(t.get_coro(), "__name__", "") == "_every_round"]
        assert loops == []
    finally:
        await presence.close()


async def test_while_redis_is_down_a_node_serves_its_own_clients(
        serve: ServeFactory, tmp_path: Path) -> None:
    """With Redis down, a node's clients still join, see each other arrive and leave,
    chat, list rooms and leave (presence as this node sees it), instead of being
    refused; once Redis is back, the other node sees who is here, and its members
    are told."""
    redis = await ThrowawayRedis(tmp_path).start()
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    peers: list[Peer] = []

    async def peer(name: str, server: Served) -> Peer:
        return await connected_peer(name, server, peers)

    try:
        a, b = [await serve(store="memory://", redis=redis.url, redis_prefix=prefix,
                            node_id=f"node{i}", presence_ttl=1.5) for i in range(2)]
        carol = await peer("carol", b)
        await carol.join("x")
        await redis.stop()
        await until(lambda: not a.app[SIO_KEY].manager.healthy, 10)
        alice, bob = await peer("alice", a), await peer("bob", a)
        assert (await alice.join("x"))["members"] == ["alice"]  # as node0 sees it
        assert (await bob.join("x"))["members"] == ["alice", "bob"]
        assert (await alice.next("presence"))["user"] == "bob"
        await bob.send("x", "while Redis is down")
        assert (await alice.next("message"))["text"] == "while Redis is down"
        assert await alice.occupancy() == [("x", 2)]
        await bob.ok("leave", {"room": "x"})
        assert (await alice.next("presence"))["event"] == "leave"
        presences = [cast(RedisPresence, node.chat.presence) for node in (a, b)]
        await redis.start()  # same port (and empty: each node writes its members back)
        rounds = [p.rounds for p in presences]
        await until(lambda: all(p.rounds >= r + 2 for p, r in zip(presences, rounds)),
                    10)  # a whole round of each node since
        assert await b.chat.presence.members(RoomName("x")) == ["alice", "carol"]
        # carol, on the other node, is told who is here: by the restored join's
        # announcement, or by a catch-up that follows it
        while ["alice", "carol"] not in [event["members"] for event in
                                         await next_events(carol, "presence", "catch_up")]:
            pass
    finally:
        for each in peers:
            await each.sio.disconnect()
        await redis.stop()


async def next_events(peer: Peer, *kinds: str) -> list[Any]:
    """The next event (or events, if they come at once) of any of ``kinds``."""
    getters = [asyncio.ensure_future(peer.events[kind].get()) for kind in kinds]
    try:
        done, _ = await asyncio.wait(getters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for getter in getters:
            getter.cancel()
    assert done, f"none of {kinds} came"
    return [getter.result() for getter in done]


async def test_a_draining_node_leaves_in_one_step(serve: ServeFactory) -> None:
    """A node shutting down with 600 connections (60 names) in a room removes its
    presence entries in one step: the other node's member hears of each name that
    left exactly once, of no name still present elsewhere, and nothing is left for
    the others' housekeeping to announce again; the leaving connections are told
    nothing about their own leave."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    # (a short shutdown timeout: the drain cannot count on 600 disconnect handlers
    # finishing before the node is gone)
    a, b = [await serve(store="memory://", redis=REDIS_URL, redis_prefix=prefix, serializer="json",
                        node_id=f"node{i}", presence_ttl=1.5, max_connections_per_name=20,
                        max_connections_per_address=1000, shutdown_timeout=0.01)
            for i in range(2)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        watcher = await Member.seat(session, a.url, "watcher", "big")
        both = await Member.seat(session, a.url, "m0", "big")  # also on node1
        leaving = list(await asyncio.gather(*(
            Member.seat(session, b.url, f"m{i % 60}", "big") for i in range(600))))
        readers = [asyncio.ensure_future(m.read()) for m in [watcher, both, *leaving]]
        try:
            await b.server.close()  # SIGTERM's path: drain, then close every session
            await until(lambda: len(watcher.leaves) >= 59)
            assert sorted(watcher.leaves) == sorted(f"m{i}" for i in range(1, 60))
            assert all(member.leaves == [] for member in leaving)
            redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                assert not await redis.exists(f"{prefix}:node:node1")  # nothing left over
            finally:
                await redis.aclose()
            assert await a.chat.presence.members(RoomName("big")) == ["m0", "watcher"]
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(m.ws.close() for m in [watcher, both, *leaving]))


async def test_one_person_on_two_nodes_reads_once(cluster: list[Served],
                                                  peer: PeerFactory) -> None:
    """A person's laptop on one node and phone on the other: a read on one
    reaches the other at once, both see the same unread counts, and a mention
    reaches both, outside the room too."""
    a, b = cluster
    laptop, phone = await peer("alice", server=a), await peer("alice", server=b)
    bob = await peer("bob", server=b)
    await laptop.join("r")
    await bob.join("r")
    await bob.send("r", "one")
    mention = await bob.send("r", "two, @alice")
    for device in (laptop, phone):
        assert await device.next("mention") == {"room": "r", "message": mention}
    assert (await phone.join("r"))["unread"] == 2  # the marker is the person's, not the node's
    await laptop.ok("read", {"room": "r", "seq": 1})
    assert await phone.next("read") == {"room": "r", "read": 1, "unread": 1, "mentions": 1,
                                        "seq": 2}
    await phone.ok("read", {"room": "r", "seq": 2})
    assert (await laptop.next("read"))["unread"] == 0
    for device in (laptop, phone):
        (mine,) = [r for r in (await device.ok("rooms"))["rooms"] if r["name"] == "r"]
        assert (mine["read"], mine["unread"], mine["mentions"]) == (2, 0, 0)


async def test_the_api_ends_a_persons_connections_on_every_node(
        serve: ServeFactory, peer: PeerFactory) -> None:
    """An admin key on node 0 ends bob's connections on both nodes (fan-out
    carries the end to node 1); a post through the API on node 0 reaches a
    member on node 1; carol, on node 1 too, stays."""
    key = new_key()
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        a, b = [await serve(store=store, redis=REDIS_URL, redis_prefix=prefix,
                            node_id=f"node{i}", api_keys=entry("ops", "admin", "*", key))
                for i in range(2)]
        bob_a, bob_b = await peer("bob", server=a), await peer("bob", server=b)
        carol = await peer("carol", server=b)
        await carol.join("r")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(a.url + "/api/v1/rooms/r/messages",
                                 json={"text": "from a backend"}) as reply:
                posted = (await reply.json())["message"]
            assert await carol.next("message") == posted
            async with http.post(a.url + "/api/v1/people/bob/disconnect") as reply:
                assert reply.status == 200
        await until(lambda: not bob_a.sio.connected and not bob_b.sio.connected)
        assert [c.name for c in b.chat.connections.values()] == ["carol"]
        assert a.chat.connections == {} and carol.sio.connected
