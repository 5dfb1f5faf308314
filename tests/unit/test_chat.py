"""The /chat events' meaning: join, send, history, presence, typing, the rooms
list and refusals, each through the events' acks (:mod:`app.chat.events`) on
one node's services, no socket (:mod:`tests.unit.chat`). What the wire adds
(transports, serializers, events without an ack, connect refusals) is in
``tests/wire/test_chat.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..conftest import barrier
from .chat import Harness, LocalPeerFactory


async def test_join_send_receive(peer: LocalPeerFactory) -> None:
    """Members of a room get each other's messages; the sender gets its ack instead."""
    alice, bob = await peer("alice"), await peer("bob")
    ack = await bob.join("lobby")
    assert ack == {"ok": True, "room": "lobby", "seq": 0, "members": ["bob"], "count": 1,
                   "messages": [], "more": False, "read": 0, "unread": 0, "mentions": 0,
                   "receipts": [{"user": "bob", "seq": 0}]}
    ack = await alice.join("lobby")
    assert ack["members"] == ["alice", "bob"]
    message = await alice.send("lobby", "hello bob", client_id="c-1")
    assert message["room"] == "lobby" and message["seq"] == 1
    assert message["from"] == "alice" and message["text"] == "hello bob"
    assert message["client_id"] == "c-1" and isinstance(message["ts"], int)
    assert await bob.next("message") == message
    reply = await bob.send("lobby", "hi alice")
    assert reply["seq"] == 2 and reply["client_id"] is None
    assert await alice.next("message") == reply
    assert alice.pending("message") == []  # alice never got her own message back


async def test_join_returns_latest_fifty_and_more(peer: LocalPeerFactory) -> None:
    """join without since returns the last 50 messages and more=True when older exist."""
    alice = await peer("alice")
    await alice.join("busy")
    for i in range(1, 61):
        await alice.send("busy", f"m{i}")
    bob = await peer("bob")
    ack = await bob.join("busy")
    assert ack["seq"] == 60 and ack["more"] is True
    assert [m["seq"] for m in ack["messages"]] == list(range(11, 61))


async def test_rooms_isolate_traffic(peer: LocalPeerFactory) -> None:
    """Nothing sent, typed or joined in one room reaches a member of another."""
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    await alice.join("red")
    await bob.join("blue")
    await carol.join("red")
    await carol.join("blue")
    await alice.send("red", "secret")
    await alice.ok("typing", {"room": "red", "active": True})
    await alice.join("green")
    await barrier(carol, bob, "blue")
    assert bob.pending("message") == [] and bob.pending("typing") == []
    assert bob.pending("presence") == [
        {"room": "blue", "user": "carol", "event": "join", "members": ["bob", "carol"], "count": 2}]


async def test_idempotent_send_is_stored_and_delivered_once(peer: LocalPeerFactory) -> None:
    """Repeating a send with the same client_id returns the stored message, no new broadcast."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    first = await alice.send("lobby", "once", client_id="abc")
    again = await alice.send("lobby", "once", client_id="abc")
    assert again == first
    assert await bob.next("message") == first
    await barrier(alice, bob, "lobby")
    assert bob.pending("message") == []
    history = await bob.ok("history", {"room": "lobby"})
    assert [m["text"] for m in history["messages"]] == ["once", "-- barrier --"]


async def test_history_pages_back_to_the_first_message(peer: LocalPeerFactory) -> None:
    """history with before= walks back page by page to seq 1; after= walks forward."""
    alice = await peer("alice")
    await alice.join("log")
    for i in range(1, 131):
        await alice.send("log", f"m{i}")
    page = await alice.ok("history", {"room": "log", "limit": 60})
    seqs = [m["seq"] for m in page["messages"]]
    assert seqs == list(range(71, 131)) and page["more"]
    while page["more"]:
        page = await alice.ok("history", {"room": "log", "before": seqs[0], "limit": 60})
        seqs = [m["seq"] for m in page["messages"]] + seqs
    assert seqs == list(range(1, 131))
    forward = await alice.ok("history", {"room": "log", "after": 125})
    assert [m["seq"] for m in forward["messages"]] == [126, 127, 128, 129, 130]
    assert forward["more"] is False


async def test_join_since_returns_what_was_missed(peer: LocalPeerFactory) -> None:
    """Rejoining with since gets every later message, ascending, up to 500 at once."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    for i in range(1, 6):
        await alice.send("r", f"m{i}")
    ack = await bob.join("r", since=2)
    assert [m["seq"] for m in ack["messages"]] == [3, 4, 5] and ack["more"] is False
    assert ack["seq"] == 5
    assert (await bob.join("r", since=5))["messages"] == []


async def test_join_since_caps_at_five_hundred(peer: LocalPeerFactory) -> None:
    """A since more than 500 messages back returns 500 and more=True."""
    alice = await peer("alice")
    await alice.join("big")
    await asyncio.gather(*(alice.send("big", f"m{i}") for i in range(520)))
    ack = await alice.join("big", since=0)
    assert [m["seq"] for m in ack["messages"]] == list(range(1, 501))
    assert ack["more"] is True and ack["seq"] == 520


async def test_concurrent_senders_get_gap_free_seq(peer: LocalPeerFactory) -> None:
    """Many clients sending at once get seq 1..N without gaps; a watcher sees them in order."""
    senders = [await peer(f"s{i}") for i in range(5)]
    watcher = await peer("watcher")
    await watcher.join("race")
    for s in senders:
        await s.join("race")
    sent = await asyncio.gather(*(s.send("race", f"{s.name}-{j}")
                                  for j in range(20) for s in senders))
    assert sorted(m["seq"] for m in sent) == list(range(1, 101))
    seen = [(await watcher.next("message"))["seq"] for _ in range(100)]
    assert seen == list(range(1, 101))


async def test_presence_join_leave_and_several_connections(peer: LocalPeerFactory) -> None:
    """presence fires when a name's first connection joins and its last one leaves."""
    watcher = await peer("watcher")
    await watcher.join("p")
    alice1, alice2 = await peer("alice"), await peer("alice")
    await alice1.join("p")
    assert await watcher.next("presence") == {
        "room": "p", "user": "alice", "event": "join", "members": ["alice", "watcher"], "count": 2}
    ack = await alice2.join("p")
    assert ack["members"] == ["alice", "watcher"]
    await alice1.ok("leave", {"room": "p"})
    await alice2.disconnect()
    assert await watcher.next("presence") == {
        "room": "p", "user": "alice", "event": "leave", "members": ["watcher"], "count": 1}
    assert watcher.pending("presence") == []  # one join and one leave for alice


async def test_leave_stops_delivery(peer: LocalPeerFactory) -> None:
    """After leave, a connection gets nothing more from the room and cannot send to it."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await bob.join("other")
    await alice.join("other")
    assert await bob.ok("leave", {"room": "r"}) == {"ok": True}
    await alice.send("r", "not for bob")
    await barrier(alice, bob, "other")
    assert bob.pending("message") == []
    refused = await bob.call("send", {"room": "r", "text": "x"})
    assert refused["error"]["code"] == "not_member"


async def test_typing_reaches_the_others(peer: LocalPeerFactory) -> None:
    """typing is relayed to the other members with the sender's name."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("t")
    await bob.join("t")
    await alice.ok("typing", {"room": "t", "active": True})
    assert await bob.next("typing") == {"room": "t", "user": "alice", "active": True}
    await alice.ok("typing", {"room": "t", "active": False})
    assert await bob.next("typing") == {"room": "t", "user": "alice", "active": False}


async def test_rooms_lists_occupied_rooms(peer: LocalPeerFactory) -> None:
    """rooms lists every room with anyone present and its member count, the
    person's own rooms first, with where they stand."""
    alice, bob = await peer("alice"), await peer("bob")
    assert await alice.ok("rooms") == {"ok": True, "rooms": []}
    await alice.join("a")
    await bob.join("a")
    await bob.join("b")
    mine = {"name": "a", "read": 0, "unread": 0, "mentions": 0, "seq": 0}
    expected = [{**mine, "members": 2}, {"name": "b", "members": 1}]
    assert (await alice.ok("rooms"))["rooms"] == expected
    assert (await alice.ok("rooms", {}))["rooms"] == expected
    await bob.disconnect()
    assert (await alice.ok("rooms"))["rooms"] == [{**mine, "members": 1}]


MALFORMED: list[tuple[str, Any]] = [
    ("join", None), ("join", "lobby"), ("join", {}), ("join", {"room": "bad room"}),
    ("join", {"room": "x", "since": "1"}), ("join", [1, 2]), ("join", 42),
    ("leave", {"room": 7}), ("send", None), ("send", {"room": "lobby"}),
    ("send", {"room": "lobby", "text": ""}), ("send", {"room": "lobby", "text": ["x"]}),
    ("send", {"room": "lobby", "text": "x", "client_id": 9}),
    ("history", {"room": "lobby", "limit": 0}), ("history", {"room": "lobby", "before": "x"}),
    ("history", {"room": "lobby", "before": 3, "after": 1}),
    ("typing", {"room": "lobby"}), ("typing", {"room": "lobby", "active": "yes"}),
    ("rooms", "all"), ("nosuchevent", {}), ("disconnect", None), ("connect", {"name": "x"}),
]


@pytest.mark.parametrize("event, payload", MALFORMED)
async def test_malformed_payloads_get_an_error_ack(peer: LocalPeerFactory, event: str,
                                                   payload: Any) -> None:
    """Malformed payloads get bad_request; nothing is stored or sent; the connection stays."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("lobby")
    await bob.join("lobby")
    ack = await alice.call(event, payload) if payload is not None else await alice.call(event)
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
    assert "Traceback" not in ack["error"]["message"]
    await barrier(alice, bob, "lobby")  # alice still works, bob got nothing else
    assert bob.pending("message") == [] and bob.pending("presence") == []
    assert (await bob.ok("history", {"room": "lobby"}))["messages"][0]["seq"] == 1


async def test_more_than_one_argument_is_refused(peer: LocalPeerFactory) -> None:
    """An event with two payload arguments is bad_request, not a crash."""
    alice = await peer("alice")
    ack = await alice.call("join", {"room": "a"}, {"room": "b"})
    assert ack["error"]["code"] == "bad_request"


async def test_member_only_events(peer: LocalPeerFactory) -> None:
    """send, history, typing and leave are not_member until the connection joins."""
    alice = await peer("alice")
    for event, payload in [("send", {"room": "r", "text": "x"}), ("history", {"room": "r"}),
                           ("typing", {"room": "r", "active": True}), ("leave", {"room": "r"})]:
        ack = await alice.call(event, payload)
        assert ack["error"]["code"] == "not_member", (event, ack)


async def test_too_long_text_is_too_large() -> None:
    """Text over the configured limit is too_large and stores nothing."""
    node = Harness(max_text_length=10)
    try:
        alice = await node.peer("a")
        await alice.join("r")
        ack = await alice.call("send", {"room": "r", "text": "x" * 11})
        assert ack["error"]["code"] == "too_large"
        assert (await alice.send("r", "é" * 10))["seq"] == 1
    finally:
        await node.close()
