"""search: words found in the rooms a connection has joined, newest first,
paged, with the matched words marked (through the events' acks on a node's
services, no socket: tests/unit/chat.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.store.memory import MemoryStore
from app.store.search import SearchPage

from ..conftest import TIMEOUT, until
from .chat import LocalPeer, LocalPeerFactory
from .conftest import NodeFactory


async def search(peer: LocalPeer, **payload: Any) -> dict[str, Any]:
    return await peer.ok("search", payload)


def texts(reply: dict[str, Any]) -> list[str]:
    return [r["message"]["text"] for r in reply["results"]]


async def test_search_finds_words_in_the_rooms_joined(peer: LocalPeerFactory) -> None:
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


async def test_search_pages_back_through_every_match(peer: LocalPeerFactory) -> None:
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


async def test_bad_searches_are_refused(peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("r")
    for payload in ({}, {"query": ""}, {"query": "x" * 201}, {"query": "?!"},
                    {"query": "a", "limit": 51}, {"query": "a", "cursor": "forged"},
                    {"query": "a", "room": "no spaces allowed"}):
        ack = await alice.call("search", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", (payload, ack)
    assert (await search(alice, query="anything"))["results"] == []  # still connected


class HeldSearches(MemoryStore):
    """A memory store whose searches run until the test releases them (a
    search as slow as an expensive one, for as long as the test needs)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def search(self, rooms: Any, terms: list[str], **paging: Any) -> SearchPage:
        self.started += 1
        await self.release.wait()
        return await super().search(rooms, terms, **paging)


async def test_searches_running_at_once_are_bounded_per_person_and_per_node(
        serve: NodeFactory) -> None:
    """A person may have one search running, over all their connections (the
    next is rate_limited), and the node two (the next is unavailable); while
    they run, everyone else's join, history and send are answered, and once
    they end the same person may search again."""
    store = HeldSearches()
    served = await serve(store=store, max_searches=2, max_searches_per_name=1)
    peers = [await served.peer(name) for name in ("alice", "alice", "bob", "carol", "dave")]
    alice, alice_again, bob, carol, dave = peers
    for someone in peers:
        await someone.join("r")
    await dave.send("r", "the needle")
    first = asyncio.ensure_future(search(alice, query="needle"))
    await until(lambda: store.started == 1)
    refused = await alice_again.call("search", {"query": "needle"})
    assert refused["error"]["code"] == "rate_limited", refused
    second = asyncio.ensure_future(search(bob, query="needle"))
    await until(lambda: store.started == 2)
    busy = await carol.call("search", {"query": "needle"})
    assert busy["error"]["code"] == "unavailable", busy
    await dave.join("elsewhere")
    await dave.send("elsewhere", "still answered")
    assert [m["text"] for m in (await dave.ok("history", {"room": "elsewhere"}))[
        "messages"]] == ["still answered"]
    assert not first.done() and not second.done()
    store.release.set()
    for running in (first, second):
        assert texts(await asyncio.wait_for(running, TIMEOUT)) == ["the needle"]
    assert texts(await search(alice_again, query="needle")) == ["the needle"]
    assert store.started == 3


async def test_more_than_eight_words_are_refused_not_cut_short(peer: LocalPeerFactory) -> None:
    """docs/protocol.md: up to 8 words; a ninth is bad_request (it was dropped)."""
    alice = await peer("alice")
    await alice.join("r")
    await alice.send("r", "a b c d e f g h")
    assert texts(await search(alice, query="a b c d e f g h")) == ["a b c d e f g h"]
    ack = await alice.call("search", {"query": "a b c d e f g h zzz"})
    assert ack["error"]["code"] == "bad_request" and "at most 8" in ack["error"]["message"]
