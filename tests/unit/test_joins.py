"""A person's first entry to a room as an entry of its stream (--record-joins):
recorded once, told to the room's other members, read back in order."""

from __future__ import annotations

import pytest

from app.core.models import JOIN, JOIN_CLIENT_ID, RoomName
from app.core.policy import Act

from ..conftest import refused
from ..tokens import SECRET
from .chat import Harness, LocalPeerFactory, token_peer
from .conftest import NodeFactory


@pytest.fixture
async def node(serve: NodeFactory) -> Harness:
    return await serve(record_joins=True)


async def test_a_first_entry_is_an_entry_once_and_the_room_is_told(
        node: Harness, peer: LocalPeerFactory) -> None:
    alice, bob = await peer("alice"), await peer("bob")
    assert (await alice.join("r"))["seq"] == 1  # her own entry, in her first page's count
    assert alice.pending("change") == []  # (she is not told of it)
    await bob.join("r")
    told = await alice.next("change")
    assert (told["seq"], told["kind"], told["from"]) == (2, JOIN, "bob")
    assert "target" not in told
    await bob.ok("leave", {"room": "r"})
    await bob.join("r")  # back: not a first entry
    again = await peer("bob")
    await again.join("r")  # nor on another connection
    sent = await alice.send("r", "hello")
    assert sent["seq"] == 3 and alice.pending("change") == []
    stream = await alice.ok("history", {"room": "r", "after": 0})
    assert [(c["seq"], c["kind"], c["from"]) for c in stream["changes"]] == [
        (1, JOIN, "alice"), (2, JOIN, "bob")]
    assert [m["seq"] for m in stream["messages"]] == [3]
    assert (await bob.join("r"))["unread"] == 1  # the message; an entry is not unread


async def test_a_join_recorded_before_a_failed_entry_is_not_recorded_again(
        node: Harness, peer: LocalPeerFactory) -> None:
    """The entry went in, but the join failed before the person's read marker
    did: the next join finds it by its client id and adds nothing."""
    await node.store.govern(RoomName("r"), "alice", Act(JOIN), JOIN_CLIENT_ID)
    bob = await peer("bob")
    await bob.join("r")
    alice = await peer("alice")
    assert (await alice.join("r"))["seq"] == 2  # bob's, and the one before
    assert bob.pending("change") == []


async def test_joins_leave_the_audit_log_alone_and_retention_takes_them(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(jwt_secret=SECRET, record_joins=True)
    olive = await token_peer(peer, served, "olive")
    await olive.ok("create", {"room": "team"})
    await olive.join("team")
    bob = await token_peer(peer, served, "bob")
    await bob.join("team")
    audit = await olive.ok("audit", {"room": "team"})
    assert [a["kind"] for a in audit["actions"]] == ["create"]
    store = served.store
    assert await store.purge(RoomName("team"), 2**62, 10) == 3
    assert [a.kind for a in await store.actions(RoomName("team"))] == ["create"]


async def test_a_direct_conversation_and_a_server_without_the_setting_record_none(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    plain = await serve()
    alice = await peer("alice", server=plain)
    await alice.join("r")
    assert (await alice.send("r", "first"))["seq"] == 1
    served = await serve(jwt_secret=SECRET, record_joins=True)
    ann, ben = await token_peer(peer, served, "ann"), await token_peer(peer, served, "ben")
    room = (await ann.ok("direct", {"with": ["ben"]}))["room"]
    await ann.join(room)
    await ben.join(room)
    assert (await ann.send(room, "just us"))["seq"] == 1


async def test_client_ids_of_the_server_are_refused(node: Harness,
                                                    peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("r")
    message = refused(await alice.call("send", {"room": "r", "text": "x",
                                                "client_id": JOIN_CLIENT_ID}), "bad_request")
    assert "roomcast:" in message
