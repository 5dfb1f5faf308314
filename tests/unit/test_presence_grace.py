"""A dropped connection's presence lingers for --presence-grace: back within
it, nobody saw the person leave or come back; gone for good, one leave."""

from __future__ import annotations

import pytest

from app.chat import rooms as rooms_module
from app.core.models import RoomName

from ..conftest import until
from .chat import Harness, LocalPeerFactory
from .conftest import NodeFactory

GRACE = 0.3  # seconds (waited for through the node's own state, never slept)
R = RoomName("r")


@pytest.fixture
async def node(serve: NodeFactory) -> Harness:
    return await serve(presence_grace=GRACE)


async def test_a_person_back_within_the_grace_never_left(node: Harness,
                                                         peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    assert (await alice.next("presence"))["event"] == "join"
    await bob.disconnect("transport close")
    assert await node.presence.members(R) == ["alice", "bob"]  # still here
    again = await peer("bob")
    joined = await again.join("r")
    assert joined["members"] == ["alice", "bob"]
    await until(lambda: not node.chat.rooms.lingering)
    await until(lambda: not node.chat.rooms._forgetting)
    assert alice.pending("presence") == []  # no leave, no join
    assert await node.presence.members(R) == ["alice", "bob"]
    assert len(node.presence) == 2  # the old entry went: alice's and bob's new one


async def test_a_person_gone_for_good_leaves_once_after_the_grace(
        node: Harness, peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await alice.next("presence")
    await bob.disconnect("ping timeout")
    assert alice.pending("presence") == []
    left = await alice.next("presence")
    assert (left["user"], left["event"], left["members"]) == ("bob", "leave", ["alice"])
    assert not node.chat.rooms.lingering and len(node.presence) == 1
    assert alice.pending("presence") == []


@pytest.mark.parametrize("how", ["goodbye", "leave"])
async def test_a_goodbye_or_a_leave_is_told_at_once(node: Harness, peer: LocalPeerFactory,
                                                    how: str) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    await alice.next("presence")
    if how == "goodbye":
        await bob.disconnect("client disconnect")
    else:
        await bob.ok("leave", {"room": "r"})
    assert not node.chat.rooms.lingering
    assert (await alice.next("presence"))["event"] == "leave"


async def test_housekeeping_keeps_a_lingering_entry_and_shutdown_ends_them_all(
        node: Harness, peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    for person in (alice, bob):
        await person.join("r")
    await bob.disconnect("transport close")
    rooms = node.chat.rooms
    left: list[tuple[RoomName, str]] = []

    async def on_left(room: RoomName, name: str) -> None:
        left.append((room, name))
    await node.presence.repair(rooms.local_members, on_left, rooms.announce_join)
    assert left == [] and await node.presence.members(R) == ["alice", "bob"]
    await node.chat.stop()
    assert not rooms.lingering and not rooms._forgetting


async def test_lingering_is_bounded(node: Harness, peer: LocalPeerFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rooms_module, "MAX_LINGERING", 1)
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    for person in (alice, bob, carol):
        await person.join("r")
    await bob.disconnect("transport close")
    await carol.disconnect("transport close")  # past the bound: at once
    assert len(node.chat.rooms.lingering) == 1
    assert await node.presence.members(R) == ["alice", "bob"]
