"""Nodes on a real Redis Cluster (three masters with a replica each, on loopback
ports): sharded fan-out, presence keys in their room's slot, and a master's
failover with every message delivered once and in order at the clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from app.core.models import RoomName, Sid
from app.fanout.redis import RedisFanout
from app.appkeys import SIO_KEY
from app.presence.redis import RedisPresence
from client import ChatClient

from ..conftest import PeerFactory, ServeFactory, Served, until
from ..services import ThrowawayRedisCluster, postgres_schema

ROOMS = [f"room-{i}" for i in range(6)]


@pytest.fixture
async def redis_cluster(tmp_path: Path) -> AsyncIterator[ThrowawayRedisCluster]:
    cluster = await ThrowawayRedisCluster(tmp_path / "redis").start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def nodes(redis_cluster: ThrowawayRedisCluster, serve: ServeFactory,
                serializer: str) -> AsyncIterator[list[Served]]:
    """Two in-process nodes on the Redis Cluster and one PostgreSQL schema."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        yield [await serve(serializer=serializer, store=store, redis=redis_cluster.url,
                           redis_prefix=prefix, node_id=f"node{i}", presence_ttl=1.5)
               for i in range(2)]


def fanout(node: Served) -> RedisFanout:
    return cast(RedisFanout, node.app[SIO_KEY].manager)


async def test_nodes_on_a_redis_cluster_chat_in_rooms_on_every_shard(
        nodes: list[Served], redis_cluster: ThrowawayRedisCluster, peer: PeerFactory) -> None:
    """Six rooms spread over the three masters: messages and presence cross the
    nodes in each; each room's channel is subscribed, by both nodes, on the
    master of its slot alone (sharded pub/sub), and its presence keys share
    that slot; the room listing is cluster-wide."""
    a, b = nodes
    channel = fanout(a).room_channel
    masters = {(await redis_cluster.master_of(channel(room))).port for room in ROOMS}
    assert len(masters) >= 2  # (the rooms' tags fall on several shards)
    alice, bob = await peer("alice", server=a), await peer("bob", server=b)
    for room in ROOMS:
        await alice.join(room)
        assert (await bob.join(room))["members"] == ["alice", "bob"]
        assert (await alice.next("presence"))["user"] == "bob"
        sent = await alice.send(room, f"hello {room}")
        assert await bob.next("message") == sent
        reply = await bob.send(room, f"back in {room}")
        assert await alice.next("message") == reply
    prefix = a.settings.redis_prefix
    for room in ROOMS:
        master = await redis_cluster.master_of(channel(room))
        counts = await redis_cluster.info(master, "pubsub", "shardnumsub", channel(room))
        assert counts.split() == [channel(room), "2"]
        slots = {await redis_cluster.info(master, "cluster", "keyslot", key)
                 for key in (channel(room), f"{prefix}:conns:{{{room}}}",
                             f"{prefix}:names:{{{room}}}")}
        assert len(slots) == 1
    assert sorted(await bob.occupancy()) == [(room, 2) for room in ROOMS]
    for node in nodes:
        assert fanout(node).healthy


async def test_a_master_failover_loses_and_repeats_nothing(
        nodes: list[Served], redis_cluster: ThrowawayRedisCluster, serializer: str) -> None:
    """Senders on node a, ChatClients on node b in six rooms over the three
    shards; the master of one room's slot is killed (SIGKILL) while messages
    flow, and its replica takes over. Node b's subscriptions of that shard
    move to the new master, the publisher publishes there, and every client
    hands over every message of its room once, in order: what was published
    into the failing shard is caught up from the store."""
    a, b = nodes
    inboxes = {room: asyncio.Queue[dict[str, Any]]() for room in ROOMS}
    senders = [ChatClient(a.url, f"s{i}", serializer=serializer) for i in range(len(ROOMS))]
    readers = [ChatClient(b.url, f"r{i}", serializer=serializer,
                          on_message=inboxes[room].put_nowait)
               for i, room in enumerate(ROOMS)]
    clients = [*senders, *readers]
    per_phase = 10
    try:
        for client in clients:
            await client.connect()
        for room, sender, reader in zip(ROOMS, senders, readers):
            await reader.join(room)
            await sender.join(room)

        async def send_round(phase: int) -> None:
            for i in range(per_phase):
                await asyncio.gather(*(s.send(room, f"{phase}-{i}")
                                       for room, s in zip(ROOMS, senders)))

        await send_round(0)
        doomed = await redis_cluster.master_of(fanout(a).room_channel(ROOMS[0]))
        failing_over = asyncio.ensure_future(redis_cluster.kill_and_fail_over(doomed))
        await send_round(1)  # while the shard is down or taking over
        await failing_over
        await until(lambda: all(fanout(node).healthy for node in nodes), timeout=30)
        await send_round(2)
        for room in ROOMS:
            got = [await asyncio.wait_for(inboxes[room].get(), 30)
                   for _ in range(3 * per_phase)]
            assert [m["seq"] for m in got] == list(range(1, 3 * per_phase + 1)), room
            assert [m["text"] for m in got] == [f"{p}-{i}" for p in range(3)
                                                for i in range(per_phase)]
            assert inboxes[room].empty()
        moved = fanout(b).links.keys()
        assert f"127.0.0.1:{doomed.port}" not in moved
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_a_cluster_node_counts_what_it_holds(nodes: list[Served]) -> None:
    """With nobody connected, each node holds the cluster's channel and one link
    per master it needs (the cluster's channel's), and says it is healthy."""
    for node in nodes:
        assert fanout(node).channels == 1 and len(fanout(node).links) == 1
        assert fanout(node).healthy


async def test_a_burst_past_the_cluster_clients_bound_waits_instead_of_failing(
        redis_cluster: ThrowawayRedisCluster) -> None:
    """redis-py's cluster client raises once a node's connections are all busy;
    ours waits for a free one: 200 joins at once through a client of 2
    connections per node all succeed, and no master holds more than 2 of its
    connections (a pool keeps what it opened), besides the one the client
    asked for the slots on the node it was given."""
    presence = RedisPresence(redis_cluster.url, prefix=f"t-{uuid.uuid4().hex[:8]}",
                             node_id="n", max_connections=2)
    await presence.start()
    try:
        firsts = await asyncio.gather(*(presence.join(RoomName(f"r{i % 20}"), f"u{i}",
                                                      Sid(f"s{i}")) for i in range(200)))
        assert all(firsts) and presence.status() == "ok"
        assert sorted(n for _, n in await presence.rooms()) == [10] * 20
        for node in redis_cluster.nodes[:3]:
            listing = await redis_cluster.info(node, "client", "list")
            held = sum(1 for line in listing.splitlines() if ":n:presence" in line)
            assert held <= 2 + (node is redis_cluster.nodes[0])  # + the slots query's
    finally:
        await presence.close()
