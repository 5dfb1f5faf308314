"""Knowing what is new: read markers, unread counts, "your rooms", mentions,
read receipts and direct conversations, through the events' acks on a
node's services (no socket: tests/unit/chat.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.chat.directs import PERIOD, Openings, direct_room
from app.core.errors import ChatError, ErrorCode
from app.chat.mentions import MAX_MENTIONS
from app.core.models import RoomName
from app.chat.receipts import Receipts
from app.store.markers import RECEIPTS_LISTED
from app.store.memory import MemoryStore

from ..conftest import TIMEOUT
from ..tokens import SECRET, token
from .chat import LocalPeerFactory, token_peer
from .conftest import NodeFactory


async def test_a_join_says_where_the_person_stands(peer: LocalPeerFactory) -> None:
    """Back in a room, a person learns their marker, how many messages came
    from others since, and how many of those mention them."""
    alice, bob = await peer("alice"), await peer("bob")
    first = await alice.join("r")
    assert (first["read"], first["unread"], first["mentions"]) == (0, 0, 0)
    await alice.ok("leave", {"room": "r"})
    await bob.join("r")
    await bob.send("r", "one")
    await bob.send("r", "@alice are you there?")
    await bob.send("r", "and @{alice} again")
    back = await alice.join("r")
    assert (back["read"], back["unread"], back["mentions"], back["seq"]) == (0, 3, 2, 3)
    read = await alice.ok("read", {"room": "r", "seq": 2})
    assert read == {"ok": True, "room": "r", "read": 2, "unread": 1, "mentions": 1, "seq": 3}


async def test_a_marker_never_moves_back_nor_past_the_latest(peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    for i in range(4):
        await bob.send("r", f"m{i}")
    assert (await alice.ok("read", {"room": "r", "seq": 3}))["read"] == 3
    assert (await alice.ok("read", {"room": "r", "seq": 1}))["read"] == 3
    assert (await alice.ok("read", {"room": "r", "seq": 100}))["read"] == 4


async def test_reading_on_one_connection_clears_the_others(peer: LocalPeerFactory) -> None:
    """A person's phone and laptop: a mark on one reaches the other at once,
    even where the other has not joined the room."""
    laptop, phone, bob = await peer("alice"), await peer("alice"), await peer("bob")
    await laptop.join("r")
    await bob.join("r")
    await bob.send("r", "hi")
    await bob.send("r", "@alice ping")
    ack = await laptop.ok("read", {"room": "r", "seq": 2})
    assert await phone.next("read") == {"room": "r", "read": 2, "unread": 0, "mentions": 0,
                                        "seq": 2}
    assert laptop.pending("read") == [] and ack["read"] == 2
    assert bob.pending("read") == []


async def test_your_rooms_are_listed_when_nobody_is_in_them(peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    for room in ("quiet", "busy"):
        await alice.join(room)
    await alice.disconnect()
    bob = await peer("bob")
    await bob.join("busy")
    await bob.send("busy", "while you were away, @alice")
    await bob.disconnect()
    alice = await peer("alice")
    rooms = (await alice.ok("rooms"))["rooms"]
    assert rooms == [
        {"name": "busy", "members": 0, "read": 0, "unread": 1, "mentions": 1, "seq": 1},
        {"name": "quiet", "members": 0, "read": 0, "unread": 0, "mentions": 0, "seq": 0}]


async def test_a_mention_reaches_the_person_outside_the_room(peer: LocalPeerFactory) -> None:
    """Names in any script, with spaces in braces; not the sender; at most
    MAX_MENTIONS people per message."""
    bob = await peer("bob")
    ana, li, carol = await peer("Ana María"), await peer("李小龍"), await peer("carol")
    await bob.join("r")
    sent = await bob.send("r", "@{Ana María} and @李小龍, see this (not you, carol@x.org)")
    for person in (ana, li):
        assert await person.next("mention") == {"room": "r", "message": sent}
    await bob.send("r", "@bob talks to himself, then @carol")
    assert (await carol.next("mention"))["message"]["text"].startswith("@bob")
    assert bob.pending("mention") == [] and carol.pending("message") == []
    many = " ".join(f"@p{i}" for i in range(MAX_MENTIONS)) + " @carol"
    await bob.send("r", many)
    await bob.send("r", "@carol last")
    assert (await carol.next("mention"))["message"]["text"] == "@carol last"


async def test_read_receipts_reach_the_room(peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await bob.send("r", "read me")
    await alice.ok("read", {"room": "r", "seq": 1})
    receipt = await bob.next("receipt")
    assert receipt == {"room": "r", "receipts": [{"user": "alice", "seq": 1}]}
    carol = await peer("carol")
    ack = await carol.join("r")
    # furthest first; bob's marker stays where he joined (his own message is not
    # unread for him), carol's starts at the latest
    assert [r["seq"] for r in ack["receipts"]] == [1, 1, 0]
    assert {(r["user"], r["seq"]) for r in ack["receipts"]} == {
        ("alice", 1), ("carol", 1), ("bob", 0)}


class CountedReceipts(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.receipt_reads = 0

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        self.receipt_reads += 1
        return await super().receipts(room)


async def test_the_joins_of_one_turn_read_the_receipts_once_and_see_every_mark(
        serve: NodeFactory) -> None:
    """A reconnect storm: the room's receipts are read once for all the joins
    that ask in one turn of the loop, after every one of their marks; a join
    in a later turn reads them again."""
    store = CountedReceipts()
    served = await serve(store=store)
    people = [await served.peer(f"p{i}") for i in range(5)]
    await people[0].join("r")
    await people[0].send("r", "hello")
    reads = store.receipt_reads
    acks = await asyncio.gather(*(p.join("r") for p in people[1:]))
    assert store.receipt_reads == reads + 1
    for ack in acks:
        assert [(r["user"], r["seq"]) for r in ack["receipts"]] == [
            ("p1", 1), ("p2", 1), ("p3", 1), ("p4", 1), ("p0", 0)]
    late = await served.peer("late")
    assert [r["user"] for r in (await late.join("r"))["receipts"]][:2] == ["late", "p1"]
    assert store.receipt_reads == reads + 2


async def test_receipts_can_be_turned_off(serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(read_receipts=False)
    alice, bob = await peer("alice", server=served), await peer("bob", server=served)
    await alice.join("r")
    await bob.join("r")
    await bob.send("r", "read me")
    await alice.ok("read", {"room": "r", "seq": 1})
    assert not served.chat.reads.receipts.pending  # nothing will be sent
    assert "receipts" not in await bob.join("r")


MALFORMED: list[tuple[str, Any]] = [
    ("read", None), ("read", {"room": "r"}), ("read", {"room": "r", "seq": -1}),
    ("read", {"room": "r", "seq": "1"}), ("read", {"room": "r", "seq": True}),
    ("direct", None), ("direct", {"with": "bob"}), ("direct", {"with": []}),
    ("direct", {"with": [7]}), ("direct", {"with": [f"p{i}" for i in range(10)]}),
]


@pytest.mark.parametrize("event,data", MALFORMED)
async def test_malformed_reads_and_directs_are_refused(
        serve: NodeFactory, peer: LocalPeerFactory, event: str, data: Any) -> None:
    served = await serve(jwt_secret=SECRET)
    alice = await peer("alice", server=served, auth={"token": token(name="alice")})
    await alice.join("r")
    ack = await alice.call(event, data)
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
    assert (await alice.ok("read", {"room": "r", "seq": 0}))["read"] == 0  # still up


async def test_reading_a_room_not_joined_is_refused(peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    ack = await alice.call("read", {"room": "r", "seq": 1})
    assert ack["error"]["code"] == "not_member"


# -- direct conversations -------------------------------------------------------


async def test_a_direct_conversation_is_for_its_participants_only(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(jwt_secret=SECRET)
    alice, bob, carol = [await token_peer(peer, served, n) for n in ("alice", "bob", "carol")]
    opened = await alice.ok("direct", {"with": ["bob", "bob"]})
    room = opened["room"]
    assert opened == {"ok": True, "room": room, "with": ["alice", "bob"]}
    assert room == direct_room(["bob", "alice"])
    assert await bob.next("direct") == {"room": room, "with": ["alice", "bob"], "from": "alice"}
    assert (await alice.ok("direct", {"with": ["bob"]}))["room"] == room  # found again
    ack = await alice.join(room)
    assert ack["with"] == ["alice", "bob"]
    sent = await alice.send(room, "just between us")
    # every message of a direct conversation is for the others: counted and told
    assert await bob.next("mention") == {"room": room, "message": sent}
    listed = (await bob.ok("rooms"))["rooms"]
    assert listed == [{"name": room, "members": 1, "read": 0, "unread": 1, "mentions": 1,
                       "seq": 1, "with": ["alice", "bob"]}]
    assert (await bob.join(room))["messages"] == [sent]

    # carol, guessing or knowing the name, gets nothing by any event
    refused = await carol.call("join", {"room": room})
    assert refused["error"]["code"] == "forbidden"
    for event, data in (("send", {"room": room, "text": "let me in"}),
                        ("history", {"room": room}), ("search", {"room": room, "query": "us"}),
                        ("read", {"room": room, "seq": 1}),
                        ("typing", {"room": room, "active": True}),
                        ("react", {"room": room, "seq": 1, "emoji": "👍"}),
                        ("edit", {"room": room, "seq": 1, "text": "x"}),
                        ("delete", {"room": room, "seq": 1}), ("leave", {"room": room})):
        answer = await carol.call(event, data)
        assert answer["ok"] is False and answer["error"]["code"] == "not_member", event
    assert (await carol.ok("search", {"query": "between"}))["results"] == []
    assert all(r["name"] != room for r in (await carol.ok("rooms"))["rooms"])
    other = direct_room(["alice", "carol", "dave"])  # one that was never opened
    assert (await carol.call("join", {"room": other}))["error"]["code"] == "forbidden"
    assert carol.pending("message") == [] and carol.pending("mention") == []


async def test_direct_conversations_need_token_mode(peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    for event, data in (("direct", {"with": ["bob"]}),
                        ("join", {"room": direct_room(["alice", "bob"])})):
        ack = await alice.call(event, data)
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
        assert "token mode" in ack["error"]["message"]


async def test_a_group_conversation_has_up_to_ten_people(serve: NodeFactory,
                                                         peer: LocalPeerFactory) -> None:
    served = await serve(jwt_secret=SECRET)
    alice = await token_peer(peer, served, "alice")
    group = await alice.ok("direct", {"with": [f"p{i}" for i in range(9)]})
    assert len(group["with"]) == 10
    ack = await alice.call("direct", {"with": ["alice"]})
    assert ack["error"]["code"] == "bad_request"


async def test_a_token_limited_to_some_rooms_is_not_shown_mentions(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    """A mention would show a message of any room: a connection whose token admits it
    to some rooms only gets none, but its person's read markers still reach it."""
    served = await serve(jwt_secret=SECRET)
    full = await token_peer(peer, served, "alice")
    limited = await peer("alice", server=served,
                         auth={"token": token(name="alice", rooms=["r"])})
    bob = await token_peer(peer, served, "bob")
    await bob.join("secret")
    sent = await bob.send("secret", "@alice this is not for every device")
    assert await full.next("mention") == {"room": "secret", "message": sent}
    await full.join("r")
    await limited.join("r")
    await full.ok("read", {"room": "r", "seq": 0})
    assert (await limited.next("read"))["room"] == "r"  # emitted after the mention
    assert limited.pending("mention") == []


async def test_counts_survive_a_restart(serve: NodeFactory, peer: LocalPeerFactory,
                                        tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path}/kept.db"
    first = await serve(store=store)
    alice, bob = await peer("alice", server=first), await peer("bob", server=first)
    await alice.join("r")
    await bob.join("r")
    for text in ("one", "@alice two", "three"):
        await bob.send("r", text)
    await alice.ok("read", {"room": "r", "seq": 1})
    for user in (alice, bob):
        await user.disconnect()
    await first.close()
    second = await serve(store=store)
    again = await peer("alice", server=second)
    (mine,) = (await again.ok("rooms"))["rooms"]
    assert mine == {"name": "r", "members": 0, "read": 1, "unread": 2, "mentions": 1, "seq": 3}


async def test_a_round_of_receipts_is_one_bounded_event_per_room() -> None:
    """However many members read, a room gets one receipt event per round, of the
    RECEIPTS_LISTED people who read furthest, each at their furthest mark."""
    sent: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def emit(room: RoomName, data: dict[str, Any]) -> None:
        sent.put_nowait((room, data))
    receipts = Receipts(emit, interval=0)
    for i in range(RECEIPTS_LISTED + 50):
        receipts.add(RoomName("big"), f"p{i}", i)
    receipts.add(RoomName("big"), "p0", 1_000)  # furthest mark of a person wins
    receipts.add(RoomName("big"), "p0", 3)
    receipts.add(RoomName("small"), "ann", 1)
    rounds = dict([await asyncio.wait_for(sent.get(), TIMEOUT) for _ in range(2)])
    big = rounds[RoomName("big")]["receipts"]
    assert len(big) == RECEIPTS_LISTED and big[0] == {"user": "p0", "seq": 1_000}
    assert big[1:3] == [{"user": "p149", "seq": 149}, {"user": "p148", "seq": 148}]
    assert rounds[RoomName("small")] == {"room": "small", "receipts": [{"user": "ann", "seq": 1}]}
    assert sent.empty() and not receipts.pending
    await receipts.close()


async def test_guessing_direct_rooms_is_held_to_the_join_rate(serve: NodeFactory,
                                                              peer: LocalPeerFactory) -> None:
    """Each guess costs the store a read: it is charged to the join bucket first."""
    served = await serve(jwt_secret=SECRET, join_rate=0.01, join_burst=3)
    carol = await token_peer(peer, served, "carol")
    codes = [(await carol.call("join", {"room": direct_room(["alice", f"p{i}"])}))
             ["error"]["code"] for i in range(5)]
    assert codes == ["forbidden"] * 3 + ["rate_limited"] * 2


async def test_opening_conversation_after_conversation_with_one_person_is_bounded(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    """A person may open only so many different direct conversations that include
    the same other person per hour (here 3): the next, a group with a made-up
    third name, is rate_limited; opening one of them again, or one with someone
    else, still works."""
    served = await serve(jwt_secret=SECRET, max_new_directs_per_person=3)
    mallory = await token_peer(peer, served, "mallory")
    opened = [(await mallory.ok("direct", {"with": ["bot", f"x{i}"]}))["room"]
              for i in range(3)]
    refused = await mallory.call("direct", {"with": ["bot", "x3"]})
    assert refused["error"]["code"] == "rate_limited" and refused["error"]["retry_after"] > 0
    assert (await mallory.ok("direct", {"with": ["bot", "x0"]}))["room"] == opened[0]
    assert (await mallory.ok("direct", {"with": ["carol"]}))["with"] == ["carol", "mallory"]


def test_openings_are_counted_per_pair_over_the_last_hour() -> None:
    """Openings, with a clock of our own: the bound is per (opener, other), a room
    counts once, and an opening older than the hour no longer counts."""
    now = [0.0]
    openings = Openings(2, clock=lambda: now[0])
    openings.open("m", RoomName("dm:1"), ["m", "bot", "a"])
    openings.open("m", RoomName("dm:2"), ["m", "bot", "b"])
    openings.open("m", RoomName("dm:1"), ["m", "bot", "a"])  # again: free
    with pytest.raises(ChatError) as refused:
        openings.open("m", RoomName("dm:3"), ["m", "bot", "c"])
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert refused.value.retry_after == PERIOD * 1000 + 1
    openings.open("m", RoomName("dm:4"), ["m", "d"])  # another person
    openings.open("n", RoomName("dm:5"), ["n", "bot"])  # another opener
    now[0] = PERIOD + 1
    openings.open("m", RoomName("dm:3"), ["m", "bot", "c"])
