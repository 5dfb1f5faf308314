"""Retention as the people in a room see it: what is removed is said, never a
silent hole, and a room's owner keeps less within the server's bound."""

from __future__ import annotations

from app.core.models import RoomName

from ..conftest import past, refused
from ..tokens import SECRET
from .chat import LocalPeerFactory, token_peer
from .conftest import NodeFactory


async def test_a_client_reading_into_what_was_removed_is_told_so(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(retention_batch=3)
    alice, bob = await peer("alice", server=served), await peer("bob", server=served)
    await alice.join("r")
    await bob.join("r")
    sent = [await alice.send("r", f"m{i}") for i in range(4)]
    past(sent[-1]["ts"])  # (what is sent next is newer than the cut)
    sent += [await alice.send("r", f"m{i}") for i in (4, 5)]
    last_seen = sent[1]["seq"]
    await bob.disconnect()
    removed = await served.chat.retention.purge(RoomName("r"), sent[3]["ts"] + 1)
    assert removed == 4  # in batches of 3
    back = await peer("bob", server=served)
    caught = await back.join("r", since=last_seen)
    assert caught["gone"] == {"from": last_seen + 1, "to": sent[3]["seq"], "why": "retention"}
    assert [m["text"] for m in caught["messages"]] == ["m4", "m5"]
    page = await back.ok("history", {"room": "r", "after": 0})
    assert page["gone"]["from"] == 1 and [m["seq"] for m in page["messages"]] == [5, 6]
    first = await back.ok("history", {"room": "r"})  # paging back: where the room begins
    assert first["gone"] == {"from": 1, "to": 4, "why": "retention"} and not first["more"]
    assert "gone" not in await back.ok("history", {"room": "r", "after": 4})


async def test_each_room_keeps_what_its_owner_says_within_the_servers_bound(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(jwt_secret=SECRET, retention=3600)
    olive = await token_peer(peer, served, "olive")
    await olive.ok("create", {"room": "brief"})
    await olive.join("lobby")
    await olive.send("lobby", "hi")
    assert "at most 3600" in refused(await olive.call(
        "configure", {"room": "brief", "retention": 7200}), "bad_request")
    await olive.ok("configure", {"room": "brief", "retention": 60})
    await olive.join("brief")
    await olive.send("brief", "short-lived")
    assert await served.chat.retention.kept() == {"brief": 60, "lobby": 3600}
    mod = await token_peer(peer, served, "mod")
    await olive.ok("role", {"room": "brief", "user": "mod", "role": "moderator"})
    refused(await mod.call("configure", {"room": "brief", "retention": 30}), "forbidden")


async def test_without_a_server_retention_only_rooms_that_ask_are_swept(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    served = await serve(jwt_secret=SECRET)
    olive = await token_peer(peer, served, "olive")
    await olive.ok("create", {"room": "brief", "retention": 86400})
    await olive.join("lobby")
    await olive.send("lobby", "kept for ever")
    assert await served.chat.retention.kept() == {"brief": 86400}
    assert await served.chat.retention.sweep() == 0  # nothing that old yet
