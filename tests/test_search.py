"""search on the wire: words found in the rooms a connection has joined, newest
first, paged, with the matched words marked (both transports, both
serializers)."""

from __future__ import annotations

from typing import Any

from .conftest import Peer, PeerFactory


async def search(peer: Peer, **payload: Any) -> dict[str, Any]:
    return await peer.ok("search", payload)


def texts(reply: dict[str, Any]) -> list[str]:
    return [r["message"]["text"] for r in reply["results"]]


async def test_search_finds_words_in_the_rooms_joined(peer: PeerFactory) -> None:
    """One room or every joined room, newest first, the matched words marked;
    a deleted message is not found, an edited one by its new text; rooms the
    connection has not joined are never searched."""
    alice, bob = await peer("alice"), await peer("bob")
    for room in ("ops", "dev"):
        await alice.join(room)
    await bob.join("secret")
    await bob.send("secret", "deploy keys are here")
    await alice.send("ops", "Deploy went fine")
    await alice.send("dev", "the deployment failed")
    doomed = await alice.send("ops", "deploy once more")
    typo = await alice.send("dev", "lunch?")
    everywhere = await search(alice, query="DEPL")
    assert texts(everywhere) == ["deploy once more", "the deployment failed",
                                 "Deploy went fine"]
    assert everywhere["results"][1]["marked"] == [["the ", False], ["deployment", True],
                                                  [" failed", False]]
    assert everywhere["next"] is None
    assert texts(await search(alice, query="deploy", room="ops")) == [
        "deploy once more", "Deploy went fine"]
    await alice.ok("delete", {"room": "ops", "seq": doomed["seq"]})
    await alice.ok("edit", {"room": "dev", "seq": typo["seq"], "text": "deploy at lunch?"})
    assert texts(await search(alice, query="deploy")) == [
        "deploy at lunch?", "the deployment failed", "Deploy went fine"]
    assert texts(await search(alice, query="lunch deploy")) == ["deploy at lunch?"]
    refused = await alice.call("search", {"query": "deploy", "room": "secret"})
    assert refused["error"]["code"] == "not_member"


async def test_search_pages_back_through_every_match(peer: PeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("r")
    for i in range(12):
        await alice.send("r", f"needle {i}")
        await alice.send("r", f"hay {i}")
    seen: list[str] = []
    reply = await search(alice, query="needle", limit=5)
    while True:
        seen += texts(reply)
        if reply["next"] is None:
            break
        reply = await search(alice, query="needle", limit=5, cursor=reply["next"])
    assert seen == [f"needle {i}" for i in reversed(range(12))]


async def test_bad_searches_are_refused(peer: PeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("r")
    for payload in ({}, {"query": ""}, {"query": "x" * 201}, {"query": "?!"},
                    {"query": "a", "limit": 51}, {"query": "a", "cursor": "forged"},
                    {"query": "a", "room": "no spaces allowed"}):
        ack = await alice.call("search", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", (payload, ack)
    assert (await search(alice, query="anything"))["results"] == []  # still connected
