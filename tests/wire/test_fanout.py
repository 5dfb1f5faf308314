"""Fan-out between nodes under faults: a sender never waits for Redis, a node's
events reach the others in order, and whatever the link loses the clients
catch up on at once (``catch_up``), without waiting for the next message."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from app.core.models import RoomName, Sid
from app.fanout.queue import MAX_LOST_ROOMS, PublishQueue
from app.fanout.redis import RedisFanout
from app.fanout.subscriptions import Subscriptions
from app.appkeys import SIO_KEY
from app.presence.redis import RedisPresence
from client import ChatClient

from ..conftest import TIMEOUT, Peer, ServeFactory, Served, sio_client
from ..proxy import Proxy
from ..services import REDIS_URL, postgres_schema

REDIS_PORT = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])


@dataclass
class Pair:
    """Node ``a`` reaches Redis through ``proxy`` (a link a test can break);
    node ``b`` directly. One PostgreSQL history."""

    a: Served
    b: Served
    proxy: Proxy

    def fanout(self, node: Served) -> RedisFanout:
        return cast(RedisFanout, node.app[SIO_KEY].manager)


@pytest.fixture
async def redis_proxy() -> AsyncIterator[Proxy]:
    proxy = await Proxy(REDIS_PORT).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def pair(redis_proxy: Proxy, serve: ServeFactory, serializer: str,
               request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """(The proxy outlives the nodes: they sign off from Redis through it.)"""
    overrides: dict[str, Any] = getattr(request, "param", {})
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        a = await serve(store=store, redis=f"redis://127.0.0.1:{redis_proxy.port}/0",
                        redis_prefix=prefix, node_id="node0", serializer=serializer,
                        **overrides)
        b = await serve(store=store, redis=REDIS_URL, redis_prefix=prefix, node_id="node1",
                        serializer=serializer)
        yield Pair(a, b, redis_proxy)


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(p.sio.disconnect() for p in made if p.sio.connected))


async def connect(peers: list[Peer], name: str, node: Served) -> Peer:
    """A bare python-socketio client on WebSocket (it sees events as they come)."""
    peers.append(Peer(name, sio_client(node.settings.serializer)))
    await peers[-1].sio.connect(node.url, auth={"name": name}, namespaces=["/chat"],
                                transports=["websocket"], wait_timeout=TIMEOUT)
    return peers[-1]


async def test_a_send_is_acked_before_it_is_published(pair: Pair, peers: list[Peer]) -> None:
    """With node a's link to Redis stalled, alice's send on a is acknowledged all
    the same (the ack follows local delivery; it waited for the publish, 5 s
    and a failure here), and reaches bob on node b once the link flows again."""
    alice, bob = await connect(peers, "alice", pair.a), await connect(peers, "bob", pair.b)
    await bob.join("r")
    await alice.join("r")
    pair.proxy.stall()
    sent = await alice.send("r", "while Redis is slow")
    assert bob.pending("message") == []
    pair.proxy.resume()
    assert await bob.next("message") == sent


async def test_a_nodes_events_reach_the_others_in_order(pair: Pair, peers: list[Peer]) -> None:
    """300 sends racing on node a (10 senders, 30 pipelined each): a bare client on
    node b receives them as they come in seq order, each once (concurrent
    publishes on a pool of connections overtook each other)."""
    watcher = await connect(peers, "watcher", pair.b)
    await watcher.join("race")
    senders = [await connect(peers, f"s{i}", pair.a) for i in range(10)]
    for sender in senders:
        await sender.join("race")
    await asyncio.gather(*(s.send("race", f"{s.name}-{j}") for j in range(30) for s in senders))
    seqs = [(await watcher.next("message"))["seq"] for _ in range(300)]
    assert seqs == list(range(1, 301))
    assert watcher.pending("message") == []


@pytest.mark.parametrize("pair", [{"max_fanout_queue_bytes": 2_000}], indirect=True)
async def test_what_the_publish_queue_cannot_hold_is_caught_up(
        pair: Pair, peers: list[Peer], serializer: str) -> None:
    """Node a's publish queue holds 2,000 bytes and its link is stalled: of 40
    sends, those that do not fit are not published, and once the link flows
    the other node's members are told to catch up (``catch_up`` with the room's
    latest seq): a ChatClient there hands over all 40 once, in order, with no
    later message to reveal the gap."""
    alice = await connect(peers, "alice", pair.a)
    watcher = await connect(peers, "watcher", pair.b)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    carol = ChatClient(pair.b.url, "carol", serializer=serializer, on_message=inbox.put_nowait)
    try:
        await carol.connect()
        await carol.join("q")
        await watcher.join("q")
        await alice.join("q")
        pair.proxy.stall()
        for i in range(40):
            await alice.send("q", f"m{i} " + "x" * 100)
        assert pair.fanout(pair.a).queue.lost_events > 0
        pair.proxy.resume()
        got = [await asyncio.wait_for(inbox.get(), TIMEOUT) for _ in range(40)]
        assert [m["seq"] for m in got] == list(range(1, 41))
        assert inbox.empty()
        caught = await watcher.next("catch_up")
        assert caught == {"room": "q", "seq": 40, "members": ["alice", "carol", "watcher"],
                          "count": 3}
    finally:
        await carol.close()


async def test_a_silent_subscription_is_found_and_caught_up(
        pair: Pair, peers: list[Peer], serializer: str) -> None:
    """Node a's connections to Redis go silent (their packets dropped, never
    closed): its publisher times out and reconnects, and its subscription is
    found dead by its own beats not coming back; it resubscribes and tells
    its clients to catch up, so alice gets what bob sent meanwhile."""
    fanout = pair.fanout(pair.a)
    fanout.stale_after = 2.0
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    alice = ChatClient(pair.a.url, "alice", serializer=serializer, on_message=inbox.put_nowait)
    bob = await connect(peers, "bob", pair.b)
    try:
        await alice.connect()
        await alice.join("s")
        await bob.join("s")
        pair.proxy.blackhole()
        catch_ups = fanout.catch_ups
        sent = await bob.send("s", "into the void")
        # the publisher's timeout (5 s), a reconnect, then beats unheard for 2 s
        assert await asyncio.wait_for(inbox.get(), 30) == sent
        assert fanout.catch_ups > catch_ups and fanout.healthy
        later = await bob.send("s", "and after")
        assert await asyncio.wait_for(inbox.get(), TIMEOUT) == later
    finally:
        await alice.close()


async def test_a_bug_in_the_listener_is_logged_and_the_subscription_restarts(
        pair: Pair, peers: list[Peer], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Node b's listener raises on a message (a bug, injected): that is logged at
    ERROR with its traceback, b subscribes again, its members are told to catch
    up (to the message it lost), and later messages arrive."""
    fanout = pair.fanout(pair.b)
    alice = await connect(peers, "alice", pair.a)
    watcher = await connect(peers, "watcher", pair.b)
    await watcher.join("l")
    await alice.join("l")
    receive = fanout._receive
    bugs = [RuntimeError("injected bug")]

    async def failing_once(data: bytes) -> None:
        if bugs and data[:1] == b"e":  # an event, not a beat
            raise bugs.pop()
        await receive(data)
    monkeypatch.setattr(fanout, "_receive", failing_once)
    lost = await alice.send("l", "lost to the bug")
    caught = await watcher.next("catch_up")
    assert caught["room"] == "l" and caught["seq"] == lost["seq"]
    failures = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert any("injected bug" in str(r.exc_info[1]) for r in failures if r.exc_info)
    later = await alice.send("l", "after")
    assert (await watcher.next("message"))["seq"] == later["seq"]


async def test_changes_reach_the_other_node_in_the_streams_order(
        pair: Pair, peers: list[Peer]) -> None:
    """Sends, edits and reactions pipelined on node a reach a bare client on node
    b as message and change events whose seqs run 1..N in order, each once."""
    watcher = await connect(peers, "watcher", pair.b)
    stream: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # both events, as they arrive
    for event in ("message", "change"):
        watcher.sio.on(event, stream.put_nowait, namespace="/chat")
    alice = await connect(peers, "alice", pair.a)
    await watcher.join("st")
    await alice.join("st")
    first = await alice.send("st", "first")
    calls = []
    for i in range(60):
        calls.append(alice.call("send", {"room": "st", "text": f"m{i}"}))
        calls.append(alice.call("edit", {"room": "st", "seq": first["seq"], "text": f"v{i}"}))
        calls.append(alice.call("react" if i % 2 == 0 else "unreact",
                                {"room": "st", "seq": first["seq"], "emoji": "👍"}))
    acks = await asyncio.gather(*calls)
    assert all(ack["ok"] for ack in acks)
    seqs = [(await asyncio.wait_for(stream.get(), TIMEOUT))["seq"] for _ in range(1 + 180)]
    assert seqs == list(range(1, 182))
    assert stream.empty()


async def test_a_node_receives_only_the_rooms_where_it_has_members(
        pair: Pair, peers: list[Peer]) -> None:
    """Each room has a channel of its own, subscribed by the nodes with members in
    it: five messages in a room of node a alone never reach node b (not
    decoded there, not even sent to it by Redis), a message in a shared room
    does, and once bob leaves, b unsubscribes from that room too."""
    b = pair.fanout(pair.b)
    alice, bob = await connect(peers, "alice", pair.a), await connect(peers, "bob", pair.b)
    redis = aioredis.from_url(REDIS_URL)
    try:
        async def subscribers(room: str) -> int:
            (_, count), = await redis.pubsub_numsub(b.room_channel(room))
            return int(count)
        await alice.join("only-a")
        await bob.join("both")
        await alice.join("both")
        assert (await bob.next("presence"))["user"] == "alice"
        assert (await subscribers("only-a"), await subscribers("both")) == (1, 2)
        received = b.received
        for i in range(5):
            await alice.send("only-a", f"a alone {i}")
        sent = await alice.send("both", "for bob")
        assert await bob.next("message") == sent
        assert b.received == received + 1  # the room's events come in order: none passed
        await bob.ok("leave", {"room": "both"})
        await bob.join("sync")  # its confirmation follows the unsubscribe's
        assert (await subscribers("both"), await subscribers("sync")) == (1, 1)
        received = b.received
        await alice.send("both", "bob is gone")
        await alice.join("sync")
        assert (await bob.next("presence"))["user"] == "alice"
        assert b.received == received + 1  # alice's join to sync, not her message
    finally:
        await redis.aclose()


async def test_a_restored_join_is_announced() -> None:
    """A join Redis missed (recorded on this node only, while Redis was down) is
    written back by housekeeping and announced once: the other nodes never
    heard of it. A connection Redis already has is not announced again."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    presence = RedisPresence(REDIS_URL, prefix=prefix, node_id="n", ttl=0.3)
    await presence.start()
    joined: list[tuple[RoomName, str]] = []

    async def on_joined(room: RoomName, name: str) -> None:
        joined.append((room, name))

    async def on_left(room: RoomName, name: str) -> None:
        raise AssertionError(f"{name} did not leave {room}")

    try:
        await presence.join(RoomName("r"), "known", Sid("s1"))
        local = [(RoomName("r"), Sid("s1"), "known"), (RoomName("r"), Sid("s2"), "missed"),
                 (RoomName("r"), Sid("s3"), "missed")]
        await presence.housekeeping(lambda: local, on_left, on_joined)
        assert joined == [(RoomName("r"), "missed")]
        assert await presence.members(RoomName("r")) == ["known", "missed"]
        await presence.housekeeping(lambda: local, on_left, on_joined)
        assert joined == [(RoomName("r"), "missed")]
    finally:
        await presence.close()


# -- the publish queue --------------------------------------------------------


async def test_the_queue_hands_out_events_in_order_within_its_bounds() -> None:
    queue = PublishQueue(max_bytes=10)
    assert queue.put("a", b"1234") and queue.put("b", b"5678")
    assert not queue.put("c", b"xyz")  # 11 bytes: lost, and remembered
    assert queue.lost_events == 1 and queue.lost.names() == ["c"]
    assert await queue.batch(max_events=10, max_bytes=4, timeout=1) == [("a", b"1234")]
    assert queue.put("c", b"xyz")
    assert await queue.batch(max_events=10, max_bytes=100, timeout=1) == [
        ("b", b"5678"), ("c", b"xyz")]
    assert queue.size == 0
    assert queue.take_lost().names() == ["c"] and not queue.lost


async def test_a_suspended_queue_loses_what_it_held_and_what_comes() -> None:
    queue = PublishQueue(max_bytes=100)
    queue.put("a", b"1")
    queue.suspend()
    assert not queue.put("b", b"2")
    assert queue.lost.names() == ["a", "b"] and len(queue) == 0
    queue.resume()
    assert queue.put("c", b"3")
    # with lost rooms to tell of, batch does not wait for events
    assert await queue.batch(max_events=10, max_bytes=100, timeout=60) == [("c", b"3")]
    assert await queue.batch(max_events=10, max_bytes=100, timeout=60) == []


async def test_too_many_lost_rooms_are_every_room() -> None:
    queue = PublishQueue(max_bytes=0)
    for i in range(MAX_LOST_ROOMS + 1):
        queue.put(f"r{i}", b"x")
    assert queue.lost.names() is None
    queue.take_lost()
    queue.put(None, b"x")  # an event for the whole namespace
    assert queue.lost.names() is None


async def test_a_closed_queue_hands_out_what_it_holds_then_nothing() -> None:
    queue = PublishQueue(max_bytes=100)
    queue.put("a", b"1")
    queue.close()
    assert not queue.put("b", b"2")
    assert await queue.batch(max_events=10, max_bytes=100, timeout=60) == [("a", b"1")]
    assert await queue.batch(max_events=10, max_bytes=100, timeout=60) == []


# -- which channels a node subscribes to ---------------------------------------


async def test_a_channel_is_ready_once_its_last_subscribe_is_answered() -> None:
    """A leave and a join at once send UNSUBSCRIBE then SUBSCRIBE: the first reply
    (still subscribed) does not make it ready, the second does."""
    subs = Subscriptions()
    subs.want("c")
    assert subs.changes() == (["c"], []) and not subs.ready("c")
    subs.subscribed("c")
    assert subs.ready("c")
    subs.drop("c")
    assert subs.changes() == ([], ["c"])
    subs.want("c")
    assert subs.changes() == (["c"], []) and not subs.ready("c")
    subs.unsubscribed("c")
    assert not subs.ready("c")
    waiting = asyncio.ensure_future(subs.wait("c", TIMEOUT))
    done, _ = await asyncio.wait([waiting], timeout=0.05)
    assert not done  # still waiting for the answer to the subscribe
    subs.subscribed("c")
    assert await waiting and subs.changes() == ([], [])


async def test_a_channel_redis_drops_is_subscribed_again() -> None:
    """An unsubscribe nobody asked for (Redis Cluster moved the slot): a wanted
    channel is to be sent again; after a lost link, everything wanted is."""
    subs = Subscriptions()
    for channel in ("a", "b"):
        subs.want(channel)
    subs.changes()
    subs.subscribed("a")
    subs.subscribed("b")
    subs.unsubscribed("a")
    assert not subs.ready("a") and subs.changed.is_set()
    assert subs.changes() == (["a"], [])
    subs.reset()
    assert not subs.ready("b") and subs.changes() == (["a", "b"], [])
    assert not await subs.wait("b", 0.01)
