"""The Python ChatClient: once-only ordered delivery, recovery after a drop,
gap filling, and sends that survive reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client import compat
from app.core.errors import ChatError, ErrorCode
from app.core.models import Page, Reading, RoomName
from app.core.policy import NO_STANDING, Standing
from app.appkeys import STORE_KEY
from app.store.memory import MemoryStore
from client import ChatClient, ChatClientError
from client.bot import Bot
from client.chat_client import MAX_INTERNAL_RETRIES

from ..conftest import TIMEOUT, Peer, PeerFactory, Served, ServeFactory, past, until
from ..proxy import Proxy
from ..stores import HeldMarks
from ..tokens import SECRET, token

pytestmark = pytest.mark.matrix("transport")  # the client's transports: connect, upgrade, reconnect


@dataclasses.dataclass
class Chatter:
    """A connected ChatClient and what its handlers were given."""

    client: ChatClient
    received: asyncio.Queue[dict[str, Any]] = dataclasses.field(default_factory=asyncio.Queue)
    states: asyncio.Queue[str] = dataclasses.field(default_factory=asyncio.Queue)

    async def take(self, count: int) -> list[str]:
        """The texts of the next ``count`` messages handed to on_message."""
        return [(await asyncio.wait_for(self.received.get(), TIMEOUT))["text"]
                for _ in range(count)]

    async def wait_state(self, state: str) -> None:
        while await asyncio.wait_for(self.states.get(), TIMEOUT) != state:
            pass


ChatterFactory = Callable[..., Awaitable[Chatter]]


@pytest.fixture
async def proxy(served: Served) -> AsyncIterator[Proxy]:
    port = int(served.url.rsplit(":", 1)[1])
    p = await Proxy(port).start()
    yield p
    await p.close()


@pytest.fixture
async def chatter(served: Served, transport: str) -> AsyncIterator[ChatterFactory]:
    """``await chatter(name, url=...)``: a connected ChatClient on the test's transport."""
    made: list[Chatter] = []

    async def make(name: str, url: str | None = None) -> Chatter:
        client = ChatClient(url or served.url, name, serializer=served.settings.serializer,
                            transports=[transport], reconnection_delay=0.05,
                            reconnection_delay_max=0.2, request_timeout=TIMEOUT)
        chatter = Chatter(client)
        client.on_message = chatter.received.put_nowait
        client.on_state = chatter.states.put_nowait
        made.append(chatter)
        await client.connect()
        return chatter

    yield make
    for chatter in made:
        await chatter.client.close()


async def test_handler_sees_own_and_others_messages_in_order(
        chatter: ChatterFactory, peer: PeerFactory) -> None:
    """on_message gets the room's messages after the join, including the client's own."""
    alice = await chatter("alice")
    bob = await peer("bob")
    await bob.join("r")
    await bob.send("r", "before alice")
    ack = await alice.client.join("r")
    assert [m["text"] for m in ack["messages"]] == ["before alice"]
    await bob.send("r", "one")
    sent = await alice.client.send("r", "two")
    await bob.send("r", "three")
    assert sent["seq"] == 3
    assert await alice.take(3) == ["one", "two", "three"]


async def test_refusals_raise_with_the_code(chatter: ChatterFactory, served: Served) -> None:
    """A refused connect or request raises ChatClientError with the protocol's code."""
    with pytest.raises(ChatClientError) as refused:
        await ChatClient(served.url, " ", serializer=served.settings.serializer).connect()
    assert refused.value.code == "bad_name"
    alice = await chatter("alice")
    with pytest.raises(ChatClientError) as not_member:
        await alice.client.send("nowhere", "hi")
    assert not_member.value.code == "not_member"


@pytest.fixture
async def pair(chatter: ChatterFactory, peer: PeerFactory, proxy: Proxy
               ) -> tuple[Chatter, Peer]:
    """alice (a ChatClient behind the proxy) and bob (a plain peer), both in room r."""
    alice = await chatter("alice", url=proxy.url)
    bob = await peer("bob")
    await alice.client.join("r")
    await bob.join("r")
    return alice, bob


async def go_offline(alice: Chatter, proxy: Proxy) -> None:
    """Cut alice's connections and refuse new ones until ``proxy.offline`` is reset."""
    proxy.offline = True
    proxy.cut()
    await alice.wait_state("disconnected")


async def test_recovers_exactly_the_missed_messages(pair: tuple[Chatter, Peer],
                                                    proxy: Proxy) -> None:
    """After a drop, the client rejoins with since and hands over each missed message
    once, in order, then carries on live."""
    alice, bob = pair
    await bob.send("r", "m1")
    assert await alice.take(1) == ["m1"]
    await go_offline(alice, proxy)
    for text in ("m2", "m3", "m4"):
        await bob.send("r", text)
    proxy.offline = False
    assert await alice.take(3) == ["m2", "m3", "m4"]
    await alice.wait_state("ready")
    await bob.send("r", "m5")
    assert await alice.take(1) == ["m5"]
    await alice.client.send("r", "back")
    assert await alice.take(1) == ["back"]
    assert alice.received.empty()


async def entries(alice: Chatter, count: int) -> list[tuple[int, str]]:
    """(seq, what) of the next ``count`` entries handed over: a message's text, or
    a change's kind."""
    got = [await asyncio.wait_for(alice.received.get(), TIMEOUT) for _ in range(count)]
    return [(int(e["seq"]), e.get("kind", e.get("text", ""))) for e in got]


async def test_changes_are_handed_over_once_in_order_through_a_drop(
        pair: tuple[Chatter, Peer], proxy: Proxy) -> None:
    """on_change gets each change in the room's order with the messages, live
    and after a reconnect; 600 reactions missed while offline (more than a
    join returns) are paged through and handed over once each, in order, with
    the messages among them; alice's own changes are handed over in place."""
    alice, bob = pair
    alice.client.on_change = alice.received.put_nowait
    first = await bob.send("r", "m1")
    await bob.ok("edit", {"room": "r", "seq": first["seq"], "text": "m1!"})
    assert await entries(alice, 2) == [(1, "m1"), (2, "edit")]
    await go_offline(alice, proxy)
    for i in range(300):
        await bob.ok("react", {"room": "r", "seq": 1, "emoji": "👍"})
        await bob.ok("unreact", {"room": "r", "seq": 1, "emoji": "👍"})
    await bob.send("r", "m2")
    proxy.offline = False
    got = await entries(alice, 601)
    assert [seq for seq, _ in got] == list(range(3, 604))
    assert got[-1] == (603, "m2") and {what for _, what in got[:-1]} == {"react", "unreact"}
    await alice.wait_state("ready")
    mine = await alice.client.send("r", "mine")
    ack = await alice.client.edit("r", mine["seq"], "mine, edited")
    assert ack["message"]["text"] == "mine, edited"
    await alice.client.react("r", first["seq"], "🎉")
    assert await entries(alice, 3) == [(604, "mine"), (605, "edit"), (606, "react")]
    reply = await alice.client.reply("r", first["seq"], "a reply")
    assert reply["reply_to"] == 1 and await entries(alice, 1) == [(607, "a reply")]
    assert alice.received.empty()


async def test_recovery_pages_past_five_hundred(pair: tuple[Chatter, Peer],
                                                proxy: Proxy) -> None:
    """Missing more than one join's worth (500) is caught up page by page, in order."""
    alice, bob = pair
    missed = [f"m{i}" for i in range(620)]
    await go_offline(alice, proxy)
    await asyncio.gather(*(bob.send("r", t) for t in missed))  # pipelined: stored in order
    proxy.offline = False
    assert await alice.take(620) == missed


@pytest.mark.matrix  # replies are cut in bytes as each serializer encodes them
async def test_recovery_of_long_messages_pages_in_bytes(pair: tuple[Chatter, Peer],
                                                        proxy: Proxy) -> None:
    """Missing 500 messages of 4,000 four-byte characters (8 MB as msgpack, 24 MB as
    JSON: past what one WebSocket message may hold for the client) is caught up in
    replies of max_reply_bytes each, every message once, in order."""
    alice, bob = pair
    missed = [f"{i:03} " + "\N{PARTY POPPER}" * 3996 for i in range(500)]
    await go_offline(alice, proxy)
    for start in range(0, 500, 20):  # pipelined in rounds, each POST under maxPayload
        await asyncio.gather(*(bob.send("r", t) for t in missed[start:start + 20]))
    proxy.offline = False
    got = await alice.take(500)
    assert [t[:3] for t in got] == [t[:3] for t in missed] and got == missed
    await alice.wait_state("ready")


async def test_send_while_offline_is_delivered_once(pair: tuple[Chatter, Peer],
                                                    proxy: Proxy) -> None:
    """A send made while disconnected completes after the reconnect, stored once."""
    alice, bob = pair
    await go_offline(alice, proxy)
    sending = asyncio.ensure_future(alice.client.send("r", "typed offline"))
    proxy.offline = False
    message = await asyncio.wait_for(sending, TIMEOUT)
    assert (await bob.next("message"))["seq"] == message["seq"]
    history = await bob.ok("history", {"room": "r"})
    assert [m["text"] for m in history["messages"]] == ["typed offline"]


async def test_gap_is_filled_from_history(chatter: ChatterFactory, peer: PeerFactory,
                                          served: Served) -> None:
    """A message that skips seq numbers makes the client fetch the gap first."""
    alice = await chatter("alice")
    bob = await peer("bob")
    await alice.client.join("r")
    await bob.join("r")
    # store two messages the room never hears about, as if their broadcast was lost
    await served.chat.store.append(RoomName("r"), "bob", "lost 1", None)
    await served.chat.store.append(RoomName("r"), "bob", "lost 2", None)
    await bob.send("r", "seen")
    assert await alice.take(3) == ["lost 1", "lost 2", "seen"]


class BuggyStore:
    """A store whose appends fail with a fault of its own (not an outage): the
    server answers ``internal``, every time, for the same message."""

    def __init__(self) -> None:
        self.appends = 0

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        self.appends += 1
        raise RuntimeError("a bug in the store")

    async def page(self, *args: Any, **kwargs: Any) -> Any:
        return Page([], False, 0)

    async def records(self, kind: str) -> dict[str, Any]:
        return {}  # (no webhooks)

    async def mark(self, name: str, room: RoomName, seq: int | None = None) -> Reading:
        return Reading(room, 0, 0, 0, 0)

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        return []

    async def standing(self, room: RoomName, name: str) -> tuple[None, Standing]:
        return None, NO_STANDING  # (an ungoverned room)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_an_internal_error_is_retried_a_few_times_then_fails_the_send(
        serve: ServeFactory, transport: str) -> None:
    """``internal`` may be the message's own doing: ChatClient resends it
    MAX_INTERNAL_RETRIES times, then raises, rather than resending for ever."""
    store = BuggyStore()

    async def buggy(url: str) -> Any:
        return store

    served = await serve(store_factory=buggy)
    client = ChatClient(served.url, "alice", serializer=served.settings.serializer,
                        transports=[transport], request_timeout=TIMEOUT)
    try:
        await client.connect()
        await client.join("r")
        with pytest.raises(ChatClientError) as failed:
            await client.send("r", "hello")
        assert failed.value.code == "internal"
        assert store.appends == 1 + MAX_INTERNAL_RETRIES
    finally:
        await client.close()


class FlakyStore(MemoryStore):
    """A memory store whose reads are refused as an outage while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.refused = 0

    async def page(self, *args: Any, **kwargs: Any) -> Page:
        if self.down:
            self.refused += 1
            raise ChatError(ErrorCode.UNAVAILABLE, "the store is down (test)")
        return await super().page(*args, **kwargs)


async def test_a_refused_rejoin_is_retried_while_connected(
        serve: ServeFactory, transport: str) -> None:
    """A rejoin answered unavailable (here the store; presence alike) is retried with
    back-off on the same, healthy connection: no reconnect would come to retry it. The
    client becomes ready, with what it missed, as soon as the server can serve it."""
    store = FlakyStore()

    async def flaky(url: str) -> Any:
        return store

    served = await serve(store_factory=flaky)
    proxy = await Proxy(int(served.url.rsplit(":", 1)[1])).start()
    alice = Chatter(ChatClient(proxy.url, "alice", serializer=served.settings.serializer,
                               transports=[transport], reconnection_delay=0.05,
                               reconnection_delay_max=0.2, request_timeout=TIMEOUT))
    alice.client.on_message = alice.received.put_nowait
    alice.client.on_state = alice.states.put_nowait
    bob = ChatClient(served.url, "bob", serializer=served.settings.serializer,
                     transports=[transport], request_timeout=TIMEOUT)
    try:
        await alice.client.connect()
        await bob.connect()
        await alice.client.join("r")
        await bob.join("r")
        await go_offline(alice, proxy)
        await bob.send("r", "while alice was away")
        store.down = True
        proxy.offline = False
        await until(lambda: store.refused >= 3)  # refused, and asked again
        assert not alice.client.connected and compat.client_engine(alice.client._sio).state \
            == "connected"
        store.down = False
        await alice.wait_state("ready")
        assert await alice.take(1) == ["while alice was away"]
        await bob.send("r", "live again")
        assert await alice.take(1) == ["live again"]
    finally:
        await alice.client.close()
        await bob.close()
        await proxy.close()


async def test_the_client_knows_what_is_new(chatter: ChatterFactory, peer: PeerFactory,
                                            served: Served, transport: str) -> None:
    """ChatClient keeps where its person stands (join acks, its own reads and its
    other connections' reads), hands over mentions from any room, and lists the
    person's rooms with their unread counts."""
    alice, laptop = await chatter("alice"), await chatter("alice")
    mentions: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    reads: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    alice.client.on_mention, alice.client.on_read = mentions.put_nowait, reads.put_nowait
    bob = await peer("bob")
    await alice.client.join("r")
    await bob.join("r")
    await bob.send("r", "one")
    await bob.join("elsewhere")
    sent = await bob.send("elsewhere", "@alice over here")
    assert await asyncio.wait_for(mentions.get(), TIMEOUT) == {"room": "elsewhere",
                                                               "message": sent}
    assert await alice.take(1) == ["one"]
    assert alice.client.markers["r"] == {"read": 0, "unread": 0, "mentions": 0, "seq": 0}
    assert (await alice.client.unread())["r"]["unread"] == 1
    assert (await alice.client.mark_read("r"))["read"] == 1  # up to the last handed over
    assert alice.client.markers["r"]["read"] == 1
    await laptop.client.join("r")
    await laptop.client.mark_read("r", 1)
    assert alice.client.markers["r"]["read"] == 1  # a read event at or behind: same
    await bob.send("r", "two")
    await laptop.client.mark_read("r", 2)
    assert (await asyncio.wait_for(reads.get(), TIMEOUT))["read"] == 1
    assert (await asyncio.wait_for(reads.get(), TIMEOUT))["read"] == 2
    assert alice.client.markers["r"] == {"read": 2, "unread": 0, "mentions": 0, "seq": 2}


async def test_the_client_opens_direct_conversations(serve: ServeFactory,
                                                     transport: str) -> None:
    served = await serve(jwt_secret=SECRET)
    alice, bob = [ChatClient(served.url, token=token(name=name),
                             serializer=served.settings.serializer, transports=[transport],
                             request_timeout=TIMEOUT) for name in ("alice", "bob")]
    opened: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    mentions: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    bob.on_direct, bob.on_mention = opened.put_nowait, mentions.put_nowait
    try:
        for client in (alice, bob):
            await client.connect()
        room = await alice.direct("bob")
        assert (await asyncio.wait_for(opened.get(), TIMEOUT))["room"] == room
        assert (await bob.unread())[room]["with"] == ["alice", "bob"]
        sent = await alice.send(room, "psst")
        assert (await asyncio.wait_for(mentions.get(), TIMEOUT))["message"] == sent
        ack = await bob.join(room)
        assert (ack["messages"], ack["unread"], ack["mentions"]) == ([sent], 1, 1)
    finally:
        for client in (alice, bob):
            await client.close()


async def test_a_bot_with_a_token_answers_where_it_is_mentioned(
        serve: ServeFactory, peer: PeerFactory, transport: str) -> None:
    """In token mode the bot knows its name from its token: it answers a mention in
    a room, and in a direct conversation opened with it, which it joins when the
    first message there reaches it."""
    served = await serve(jwt_secret=SECRET)
    client = ChatClient(served.url, token=token(name="helper"),
                        serializer=served.settings.serializer, transports=[transport],
                        request_timeout=TIMEOUT)
    bot = Bot(client)
    try:
        await client.connect()
        await bot.join("r")
        alice = await peer("alice", server=served, auth={"token": token(name="alice")})
        await alice.join("r")
        await alice.send("r", "@helper !echo found you")
        assert (await alice.next("message"))["text"] == "found you"
        room = (await alice.ok("direct", {"with": ["helper"]}))["room"]
        await alice.join(room)
        assert room not in bot.members  # opened, nothing said yet: not joined
        await alice.send(room, "!ping")
        reply = await alice.next("message")
        assert (reply["room"], reply["from"], reply["text"]) == (room, "helper", "pong")
        await alice.send(room, "!echo and again")
        assert (await alice.next("message"))["text"] == "and again"
        # what governs a room, and a ban that takes the bot out of it for good
        await alice.ok("create", {"room": "ruled", "topic": "no spam"})
        await alice.ok("configure", {"room": "ruled", "slow": 5})
        await alice.join("ruled")
        await bot.join("ruled")
        await alice.send("ruled", "!rules")
        assert (await alice.next("message"))["text"] == (
            "topic: no spam; open to all; slow mode: one message every 5 s; owners: alice")
        await alice.ok("ban", {"room": "ruled", "user": "helper"})
        await until(lambda: "ruled" not in client.joined)
    finally:
        await client.close()


async def test_a_bot_stays_in_a_bounded_number_of_direct_conversations(
        serve: ServeFactory, peer: PeerFactory, transport: str) -> None:
    """However many direct conversations people open with the bot, it is in at most
    ``directs_held`` of them, leaving the least recently active for a new one, and
    the idle ones when it joins another: everyone who writes to it is answered,
    the first again after others took its place."""
    served = await serve(jwt_secret=SECRET, max_rooms=3)
    now = [0.0]
    client = ChatClient(served.url, token=token(name="helper"),
                        serializer=served.settings.serializer, transports=[transport],
                        request_timeout=TIMEOUT)
    bot = Bot(client, directs_held=2, direct_idle=60, clock=lambda: now[0])
    try:
        await client.connect()
        await bot.join("lobby")
        people = [await peer(name, server=served, auth={"token": token(name=name)})
                  for name in ("ann", "ben", "cat", "dan")]
        rooms = {}
        for someone in people[:3]:
            rooms[someone.name] = (await someone.ok("direct", {"with": ["helper"]}))["room"]
            await someone.join(rooms[someone.name])
            await someone.send(rooms[someone.name], "!ping")
            assert (await someone.next("message"))["text"] == "pong"
            now[0] += 1
            assert len(bot.directs) <= 2
        assert list(bot.directs) == [rooms["ben"], rooms["cat"]]  # ann's, the oldest, left
        ann = people[0]
        await ann.send(rooms["ann"], "!echo back again")
        assert (await ann.next("message"))["text"] == "back again"
        assert list(bot.directs) == [rooms["cat"], rooms["ann"]]
        now[0] += 120  # everyone silent for longer than direct_idle
        dan = people[3]
        rooms["dan"] = (await dan.ok("direct", {"with": ["helper"]}))["room"]
        await dan.join(rooms["dan"])
        await dan.send(rooms["dan"], "!ping")
        assert (await dan.next("message"))["text"] == "pong"
        assert list(bot.directs) == [rooms["dan"]]
    finally:
        await client.close()


async def test_a_send_acknowledged_with_a_gap_before_it_returns_and_the_gap_is_caught_up(
        serve: ServeFactory, transport: str) -> None:
    """A send whose stored message comes after one this client has not seen
    returns the message even when filling the gap fails (the store cannot be
    read just then): it is stored, so a caller must not send it again. The
    gap is filled by catch-up once reads work again, every message once, in
    order."""
    store = FlakyStore()

    async def flaky(url: str) -> Any:
        return store

    served = await serve(store_factory=flaky)
    seen: list[tuple[int, str]] = []
    arrived = asyncio.Event()

    def on_message(message: dict[str, Any]) -> None:
        seen.append((message["seq"], message["text"]))
        if len(seen) == 4:
            arrived.set()

    client = ChatClient(served.url, "alice", serializer=served.settings.serializer,
                        transports=[transport], request_timeout=TIMEOUT,
                        on_message=on_message)
    bob = ChatClient(served.url, "bob", serializer=served.settings.serializer,
                     transports=[transport], request_timeout=TIMEOUT)
    try:
        await client.connect()
        await bob.connect()
        await client.join("r")
        await bob.join("r")
        # stored but never broadcast: a message this client has not seen
        await served.app[STORE_KEY].append(RoomName("r"), "carol", "unseen", None)
        store.down = True
        sent = await client.send("r", "mine")  # seq 2: the gap cannot be filled now
        assert sent["seq"] == 2 and store.refused >= 1
        store.down = False
        await bob.send("r", "later")  # its broadcast reveals the gap, filled now
        await bob.send("r", "last")
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
        assert seen == [(1, "unseen"), (2, "mine"), (3, "later"), (4, "last")]
    finally:
        await client.close()
        await bob.close()


@pytest.mark.matrix("transport")
async def test_a_message_broadcast_while_the_rejoin_is_answered_is_not_lost(
        serve: ServeFactory, peer: PeerFactory, transport: str) -> None:
    """alice's rejoin has read the room's history (m2, sent while she was away)
    but is not answered yet when m3 is stored and broadcast to her: m3 reaches
    her before the ack, a seq past the last she has. It must wait for the ack
    (then it is next), not look like a gap, whose fill the server refuses
    (not joined yet): it was dropped, and lost until the room's next message."""
    store = HeldMarks()

    async def held(url: str) -> Any:
        return store
    served = await serve(store_factory=held)
    proxy = await Proxy(int(served.url.rsplit(":", 1)[1])).start()
    client = ChatClient(proxy.url, "alice", serializer=served.settings.serializer,
                        transports=[transport], reconnection_delay=0.05,
                        reconnection_delay_max=0.2, request_timeout=TIMEOUT)
    alice = Chatter(client)
    client.on_message = alice.received.put_nowait
    client.on_state = alice.states.put_nowait
    try:
        await client.connect()
        bob = await peer("bob", server=served)
        await client.join("r")
        await bob.join("r")
        await bob.send("r", "m1")
        assert await alice.take(1) == ["m1"]
        await go_offline(alice, proxy)
        await bob.send("r", "m2")
        store.held.clear()
        waiting = store.waiting
        proxy.offline = False
        await until(lambda: store.waiting > waiting)  # her rejoin has read m2
        await bob.send("r", "m3")  # broadcast to her now, answered later
        store.held.set()
        assert await alice.take(2) == ["m2", "m3"]
    finally:
        await client.close()
        await proxy.close()


async def test_what_retention_removed_while_away_is_said_and_passed(
        pair: tuple[Chatter, Peer], proxy: Proxy, served: Served) -> None:
    """Messages removed by retention while the client was away are no gap: it
    is told (on_gone) and goes on with what is kept, live afterwards."""
    alice, bob = pair
    gone: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    alice.client.on_gone = gone.put_nowait
    await bob.send("r", "m1")
    assert await alice.take(1) == ["m1"]
    await go_offline(alice, proxy)
    old = [await bob.send("r", f"m{i}") for i in (2, 3)]
    past(old[-1]["ts"])  # (what is sent next is newer)
    for text in ("m4", "m5"):
        await bob.send("r", text)
    await served.chat.retention.purge(RoomName("r"), old[-1]["ts"] + 1)  # m1 to m3
    proxy.offline = False
    told = await asyncio.wait_for(gone.get(), TIMEOUT)
    assert (told["room"], told["from"], told["to"], told["why"]) == ("r", 2, 3, "retention")
    assert await alice.take(2) == ["m4", "m5"]
    await alice.wait_state("ready")
    await bob.send("r", "m6")
    assert await alice.take(1) == ["m6"]
    assert alice.received.empty() and gone.empty()


async def test_closing_in_the_instant_of_a_drop_stops_for_good(
        served: Served, proxy: Proxy, transport: str) -> None:
    """close() called from on_state("disconnected"), before python-socketio's
    reconnect loop has taken its first step (where its own shutdown raises),
    ends the client: no error, no reconnect."""
    closing: list[asyncio.Future[None]] = []

    def state(what: str) -> None:
        if what == "disconnected":
            closing.append(asyncio.ensure_future(client.close()))
    client = ChatClient(proxy.url, "alice", serializer=served.settings.serializer,
                        transports=[transport], reconnection_delay=0.05,
                        reconnection_delay_max=0.2, request_timeout=TIMEOUT, on_state=state)
    await client.connect()
    await client.join("r")
    proxy.cut()
    await until(lambda: bool(closing))
    await asyncio.wait_for(closing[0], TIMEOUT)  # (raised AttributeError before)
    await asyncio.wait_for(client.wait_closed(), TIMEOUT)


async def test_a_send_waiting_for_a_reconnect_ends_when_the_client_is_closed(
        served: Served, proxy: Proxy, transport: str) -> None:
    """A send held while the connection is down (it would resend on the
    reconnect) raises ``closed`` once close() is called, as does any call
    after it: nothing waits for a reconnect that will never come."""
    client = ChatClient(proxy.url, "alice", serializer=served.settings.serializer,
                        transports=[transport], reconnection_delay=0.05,
                        reconnection_delay_max=0.2, request_timeout=TIMEOUT)
    await client.connect()
    await client.join("r")
    proxy.offline = True
    proxy.cut()
    sending = asyncio.ensure_future(client.send("r", "held", client_id="held-1"))
    await until(lambda: not client._ready.is_set())
    await client.close()
    with pytest.raises(ChatClientError) as refused:
        await asyncio.wait_for(sending, TIMEOUT)
    assert refused.value.code == "closed"
    with pytest.raises(ChatClientError):
        await client.send("r", "after", client_id="after-1")


async def test_files_go_up_resumably_and_come_down(chatter: ChatterFactory, proxy: Proxy,
                                                   tmp_path: Path) -> None:
    """upload resumes after the network cuts it; send_file, links and download
    round-trip the bytes; a file sent by one client is another member's to read."""
    alice = await chatter("alice", url=proxy.url)
    bob = await chatter("bob")
    await alice.client.join("share")
    await bob.client.join("share")
    data = os.urandom(20 * 1024 * 1024)
    (tmp_path / "data.bin").write_bytes(data)
    uploading = asyncio.create_task(alice.client.upload("share", tmp_path / "data.bin"))
    start = proxy.received
    await until(lambda: proxy.received > start + 10 * 1024 * 1024 or uploading.done())
    proxy.cut()  # (the socket too: it reconnects as the upload resumes)
    file_id = await asyncio.wait_for(uploading, TIMEOUT)
    assert proxy.received - start > len(data)  # (cut: part of a chunk went twice)
    sent = await alice.client.send("share", "the data", attachments=[file_id])
    assert sent["attachments"][0]["size"] == len(data)
    got = (await asyncio.wait_for(bob.received.get(), TIMEOUT))
    assert got["attachments"] == sent["attachments"]
    saved = await bob.client.download("share", file_id, tmp_path / "got.bin")
    assert saved.read_bytes() == data
    (tmp_path / "note.txt").write_text("a note\n")
    note = await bob.client.send_file("share", tmp_path / "note.txt", "see")
    assert note["attachments"][0]["type"] == "text/plain"
    with pytest.raises(ChatClientError) as missing:
        await bob.client.download("share", "X" * 22, tmp_path / "none")
    assert missing.value.code == "not_found"


async def test_the_bot_posts_a_file(chatter: ChatterFactory, peer: PeerFactory,
                                    served: Served) -> None:
    """!export: the room's latest messages, as a text file in a message."""
    botty = await chatter("botty")
    bot = Bot(botty.client)
    await bot.join("ops")
    carol = await peer("carol")
    await carol.join("ops")
    await carol.send("ops", "deploy at 5")
    await carol.send("ops", "!export")
    while (reply := await carol.next("message"))["from"] != "botty":
        pass
    (attachment,) = reply["attachments"]
    assert (attachment["name"], attachment["type"]) == ("ops.txt", "text/plain")
    links = await carol.ok("files", {"room": "ops", "ids": [attachment["id"]]})
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + links["files"][attachment["id"]]["url"]) as r:
            text = await r.text()
    assert "carol: deploy at 5" in text and "carol: !export" in text
