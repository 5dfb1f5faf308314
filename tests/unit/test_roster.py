"""app/chat/roster.py: a room's member list, paged, and its presence changes,
told at once in a small room and coalesced per tick in a large one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.core.models import RoomName, Sid

from ..conftest import refused
from .chat import Harness, LocalPeer


@pytest.fixture
async def node() -> AsyncIterator[Harness]:
    """Rooms of more than 3 are large here; a tick is 50 ms (each test waits on
    the event it expects, never on the clock)."""
    harness = Harness(presence_list_max=3, presence_tick=0.05, presence_max_names=3)
    yield harness
    await harness.close()


async def joined(node: Harness, *names: str, room: str = "r") -> list[LocalPeer]:
    peers = []
    for name in names:
        peer = await node.peer(name)
        await peer.join(room)
        peers.append(peer)
    return peers


async def test_a_small_rooms_changes_are_told_at_once_with_the_list(node: Harness) -> None:
    [watcher] = await joined(node, "watcher")
    await joined(node, "ann")
    assert await watcher.next("presence") == {
        "room": "r", "user": "ann", "event": "join", "members": ["ann", "watcher"], "count": 2}


async def test_a_large_rooms_changes_are_told_once_a_tick(node: Harness) -> None:
    """Past presence_list_max the arrivals and departures of a tick are one
    event with the count; a name that came and went within it is not told."""
    [watcher, _, bob] = await joined(node, "watcher", "ann", "bob")
    assert [e["user"] for e in [await watcher.next("presence") for _ in range(2)]] == [
        "ann", "bob"]
    [_, _, eve] = await joined(node, "cid", "dan", "eve")
    await eve.call("leave", {"room": "r"})
    assert await watcher.next("presence") == {
        "room": "r", "joined": ["cid", "dan"], "left": [], "count": 5}
    assert watcher.pending("presence") == []
    await bob.call("leave", {"room": "r"})
    await eve.disconnect()
    [cid] = [p for p in node.wire.peers.values() if p.name == "cid"]
    await cid.disconnect()
    # small again: the tick's event carries the whole list
    assert await watcher.next("presence") == {
        "room": "r", "joined": [], "left": ["bob", "cid"], "members": ["ann", "dan", "watcher"],
        "count": 3}


async def test_a_tick_lists_a_bounded_number_of_names(node: Harness) -> None:
    """At most presence_max_names of each, ``more`` saying others were left
    out; the count is the room's."""
    [watcher, *_] = await joined(node, "watcher", "a0", "a1")
    for _ in range(2):
        await watcher.next("presence")
    await joined(node, *[f"b{i}" for i in range(6)])
    assert await watcher.next("presence") == {
        "room": "r", "joined": ["b0", "b1", "b2"], "left": [], "more": True, "count": 9}


async def test_a_join_of_a_large_room_gets_a_first_page_and_pages_the_rest(
        node: Harness) -> None:
    """A join's ack carries the count and a first page (presence_list_max
    names), and members pages the rest: everyone once."""
    names = sorted(f"p{i:03d}" for i in range(150))
    for i, name in enumerate(names):
        await node.presence.join(RoomName("r"), name, Sid(f"elsewhere{i}"))
    alice = await node.peer("alice")
    ack = await alice.join("r")
    assert ack["count"] == 151 and len(ack["members"]) == 3 and ack["members_next"]
    seen = list(ack["members"])
    cursor = ack["members_next"]
    while cursor:
        page = await alice.ok("members", {"room": "r", "next": cursor, "limit": 20})
        assert page["count"] == 151 and len(page["members"]) <= 20
        seen += page["members"]
        cursor = page.get("members_next")
    assert sorted(seen) == sorted(names + ["alice"])


async def test_members_is_for_members_and_checks_its_request(node: Harness) -> None:
    [alice] = await joined(node, "alice")
    outsider = await node.peer("bob")
    refused(await outsider.call("members", {"room": "r"}), "not_member")
    refused(await alice.call("members", {"room": "r", "limit": 501}), "bad_request")
    refused(await alice.call("members", {"room": "r", "next": 5}), "bad_request")
    assert await alice.ok("members", {"room": "r"}) == {
        "ok": True, "room": "r", "members": ["alice"], "count": 1}
