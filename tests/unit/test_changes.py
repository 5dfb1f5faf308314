"""Edits, deletes, reactions and replies: each change is an entry of the room's
stream, broadcast like a message and recovered like one (through the events'
acks on a node's services, no socket: tests/unit/chat.py)."""

from __future__ import annotations

from typing import Any

import pytest

from ..tokens import SECRET, token
from .chat import LocalPeer, LocalPeerFactory
from .conftest import NodeFactory


async def call_ok(peer: LocalPeer, event: str, **data: Any) -> dict[str, Any]:
    return await peer.ok(event, data)


async def refused(peer: LocalPeer, event: str, **data: Any) -> str:
    ack = await peer.call(event, data)
    assert ack["ok"] is False, ack
    assert set(ack["error"]) >= {"code", "message"}
    return str(ack["error"]["code"])


async def test_changes_reach_the_room_in_the_order_of_its_stream(peer: LocalPeerFactory) -> None:
    """alice edits her message, bob reacts, alice deletes it: carol receives the
    message and each change once, numbered on from it without a gap; each ack
    has the message as it stands; the one who changes gets no event of it."""
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    for member in (alice, bob, carol):
        await member.join("r")
    sent = await alice.send("r", "helo")
    edited = await call_ok(alice, "edit", room="r", seq=sent["seq"], text="hello")
    assert edited["message"]["text"] == "hello" and edited["message"]["edited"]
    assert edited["change"]["kind"] == "edit" and edited["change"]["seq"] == 2
    reacted = await call_ok(bob, "react", room="r", seq=1, emoji="👍")
    assert reacted["message"]["reactions"] == [{"emoji": "👍", "count": 1, "names": ["bob"]}]
    gone = await call_ok(alice, "delete", room="r", seq=1)
    assert gone["message"]["deleted"] is True and gone["message"]["text"] == ""
    assert (await carol.next("message"))["seq"] == 1
    changes = [await carol.next("change") for _ in range(3)]
    assert [(c["seq"], c["kind"], c["target"], c["from"]) for c in changes] == [
        (2, "edit", 1, "alice"), (3, "react", 1, "bob"), (4, "delete", 1, "alice")]
    assert changes[0]["text"] == "hello" and changes[1]["emoji"] == "👍"
    assert [c["seq"] for c in (await bob.next("change"), await bob.next("change"))] == [2, 4]
    assert (await alice.next("change"))["seq"] == 3
    marker = await carol.send("r", "marker")  # what came before it has arrived with it
    for member in (alice, bob):
        while (await member.next("message"))["seq"] != marker["seq"]:
            pass
        assert member.pending("change") == []
    page = await call_ok(carol, "history", room="r")
    assert page["messages"] == [gone["message"], marker] and "changes" not in page


async def test_a_rejoin_gets_the_changes_it_missed_once_in_order(peer: LocalPeerFactory) -> None:
    """carol saw message 1 and left; meanwhile it was edited and reacted to, a
    reply was sent and deleted. Her join with since=1 brings every entry after
    1: the reply as it stands and the changes, together seqs 2..6; paging
    back shows the messages as they stand."""
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    for member in (alice, bob, carol):
        await member.join("r")
    await alice.send("r", "first")
    await call_ok(carol, "leave", room="r")
    await call_ok(alice, "edit", room="r", seq=1, text="first!")  # 2
    reply = await bob.send("r", "second", reply_to=1)  # 3
    assert reply["reply_to"] == 1
    await call_ok(alice, "react", room="r", seq=3, emoji="🎉")  # 4
    await call_ok(bob, "react", room="r", seq=3, emoji="🎉")  # 5
    await call_ok(bob, "delete", room="r", seq=3)  # 6
    back = await carol.join("r", since=1)
    assert [m["seq"] for m in back["messages"]] == [3]
    assert back["messages"][0]["deleted"] is True
    assert [(c["seq"], c["kind"]) for c in back["changes"]] == [
        (2, "edit"), (4, "react"), (5, "react"), (6, "delete")]
    assert back["seq"] == 6 and back["more"] is False
    on = await call_ok(carol, "history", room="r", after=1, limit=2)
    assert ([m["seq"] for m in on["messages"]], [c["seq"] for c in on["changes"]]) == (
        [3], [2])
    assert on["more"] is True
    page = await call_ok(carol, "history", room="r")
    assert [(m["seq"], m["text"], m.get("deleted", False)) for m in page["messages"]] == [
        (1, "first!", False), (3, "", True)]


async def test_bad_changes_are_refused_and_harm_nothing(peer: LocalPeerFactory) -> None:
    """Each refusal has its code; the connection stays up and the room untouched."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await alice.send("r", "mine")
    assert await refused(bob, "edit", room="r", seq=1, text="yours?") == "forbidden"
    assert await refused(bob, "delete", room="r", seq=1) == "forbidden"
    assert await refused(bob, "edit", room="r", seq=9, text="x") == "not_found"
    assert await refused(alice, "edit", room="r", seq=1, text="x" * 5000) == "too_large"
    assert await refused(alice, "edit", room="r", seq=1, text="   ") == "bad_request"
    assert await refused(alice, "edit", room="r", text="no seq") == "bad_request"
    for emoji in ("", "ab", "👍 ", "x👍", "👍" * 20, 5):
        assert await refused(bob, "react", room="r", seq=1, emoji=emoji) == "bad_request"
    assert await refused(bob, "react", room="elsewhere", seq=1, emoji="👍") == "not_member"
    assert await refused(bob, "send", room="r", text="re", reply_to=7) == "not_found"
    await call_ok(alice, "delete", room="r", seq=1)
    assert await refused(alice, "edit", room="r", seq=1, text="back") == "not_found"
    assert await refused(bob, "react", room="r", seq=1, emoji="👍") == "not_found"
    page = await call_ok(bob, "history", room="r")
    assert [(m["seq"], m["deleted"]) for m in page["messages"]] == [(1, True)]
    assert page["messages"][0]["text"] == "" and "reactions" not in page["messages"][0]


async def test_emoji_sequences_are_one_reaction(peer: LocalPeerFactory) -> None:
    """Flags, skin tones, ZWJ sequences, keycaps and variation selectors."""
    alice = await peer("alice")
    await alice.join("r")
    await alice.send("r", "react to me")
    for emoji in ("🇫🇷", "👩🏽‍💻", "1️⃣", "❤️", "👍🏿"):
        await call_ok(alice, "react", room="r", seq=1, emoji=emoji)
    page = await call_ok(alice, "history", room="r")
    assert [r["emoji"] for r in page["messages"][0]["reactions"]] == [
        "🇫🇷", "👩🏽‍💻", "1️⃣", "❤️", "👍🏿"]


async def test_spellings_of_one_emoji_are_one_reaction(peer: LocalPeerFactory) -> None:
    """❤, ❤️ and ❤︎ are one heart; a flag with or without its selector one
    flag: each is kept as its fully-qualified spelling, and unreacting with
    any spelling takes it back."""
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    for member in (alice, bob, carol):
        await member.join("r")
    await alice.send("r", "react to me")
    for member, heart in ((alice, "\u2764"), (bob, "\u2764\ufe0f"), (carol, "\u2764\ufe0e")):
        ack = await call_ok(member, "react", room="r", seq=1, emoji=heart)
        assert ack["change"]["emoji"] == "\u2764\ufe0f"
    await call_ok(alice, "react", room="r", seq=1, emoji="\U0001f3f3\u200d\U0001f308")
    await call_ok(bob, "react", room="r", seq=1, emoji="\U0001f3f3\ufe0f\u200d\U0001f308")
    page = await call_ok(alice, "history", room="r")
    assert [(r["emoji"], r["count"]) for r in page["messages"][0]["reactions"]] == [
        ("\u2764\ufe0f", 3), ("\U0001f3f3\ufe0f\u200d\U0001f308", 2)]
    await call_ok(carol, "unreact", room="r", seq=1, emoji="\u2764")
    page = await call_ok(alice, "history", room="r")
    assert page["messages"][0]["reactions"][0]["count"] == 2


async def test_a_retried_change_applies_and_is_broadcast_once(peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await alice.send("r", "v1")
    first = await call_ok(alice, "edit", room="r", seq=1, text="v2", client_id="e-1")
    again = await call_ok(alice, "edit", room="r", seq=1, text="v2", client_id="e-1")
    assert again["change"] == first["change"]
    assert await refused(alice, "edit", room="r", seq=1, text="v3", client_id="e-1") \
        == "bad_request"  # the id names another change
    marker = await alice.send("r", "after")
    assert (await bob.next("message"))["seq"] == 1
    assert (await bob.next("change"))["seq"] == first["change"]["seq"]
    assert (await bob.next("message"))["seq"] == marker["seq"]
    assert bob.pending("change") == []


async def test_a_second_reaction_of_one_person_counts_once(peer: LocalPeerFactory) -> None:
    """bob reacts from two connections: one reaction, one change event."""
    alice, bob, bob2 = await peer("alice"), await peer("bob"), await peer("bob")
    for member in (alice, bob, bob2):
        await member.join("r")
    await alice.send("r", "hi")
    await call_ok(bob, "react", room="r", seq=1, emoji="👋")
    twice = await call_ok(bob2, "react", room="r", seq=1, emoji="👋")
    assert twice["change"] is None
    assert twice["message"]["reactions"] == [{"emoji": "👋", "count": 1, "names": ["bob"]}]
    undone = await call_ok(bob2, "unreact", room="r", seq=1, emoji="👋")
    assert "reactions" not in undone["message"]
    heard = [await alice.next("change") for _ in range(2)]
    assert [(c["kind"], c["count"], c["names"]) for c in heard] == [
        ("react", 1, ["bob"]), ("unreact", 0, [])]


@pytest.mark.parametrize("moderator", [True, False])
async def test_a_moderator_may_delete_anyones_message(serve: NodeFactory, peer: LocalPeerFactory,
                                                      moderator: bool) -> None:
    """In token mode a token with "moderator": true deletes others' messages (and
    still cannot edit them); without it, a delete of another's is forbidden."""
    served = await serve(jwt_secret=SECRET)
    alice, mod = [await peer(name, server=served,
                             auth={"token": token(name=name, moderator=is_moderator)})
                  for name, is_moderator in (("alice", False), ("mod", moderator))]
    await alice.join("r")
    await mod.join("r")
    await alice.send("r", "rule-breaking text")
    if moderator:
        gone = await call_ok(mod, "delete", room="r", seq=1)
        assert gone["message"]["deleted"] is True
    else:
        assert await refused(mod, "delete", room="r", seq=1) == "forbidden"
    assert await refused(mod, "edit", room="r", seq=1, text="mine") in (
        "forbidden", "not_found")
