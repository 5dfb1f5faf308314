"""Moderation across a cluster: two nodes sharing Redis and PostgreSQL, in
token mode, with real clients on both transports. A ban made on one node
takes effect on the other before anything sent after it, and no send the
store orders after a ban gets through."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from client import ChatClient

from ..conftest import TIMEOUT, Peer, PeerFactory, ServeFactory, Served, refused, until
from ..proxy import Proxy
from ..services import REDIS_URL, postgres_schema
from ..tokens import SECRET, token

pytestmark = pytest.mark.matrix("transport")


@pytest.fixture
async def cluster(serve: ServeFactory, serializer: str) -> AsyncIterator[list[Served]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        yield [await serve(serializer=serializer, store=store, redis=REDIS_URL,
                           redis_prefix=prefix, node_id=f"node{i}", jwt_secret=SECRET)
               for i in range(2)]


async def person(peer: PeerFactory, node: Served, name: str) -> Peer:
    return await peer(name, server=node, auth={"token": token(name=name)})


async def test_a_ban_on_one_node_takes_the_person_out_on_the_other(
        cluster: list[Served], peer: PeerFactory) -> None:
    a, b = cluster
    olive, carol = await person(peer, a, "olive"), await person(peer, a, "carol")
    bob, dave = await person(peer, b, "bob"), await person(peer, b, "dave")
    await olive.ok("create", {"room": "team"})
    for someone in (olive, carol, bob, dave):
        await someone.join("team")
    ban = await olive.ok("ban", {"room": "team", "user": "bob", "reason": "spam"})
    after = await carol.send("team", "after the ban")
    told = await bob.next("change")
    assert (told["kind"], told["seq"], told["reason"]) == ("ban", ban["action"]["seq"], "spam")
    # out of the room on his node before the room's next event reached it
    refused(await bob.call("send", {"room": "team", "text": "x"}), "not_member")
    refused(await bob.call("history", {"room": "team"}), "not_member")
    assert "banned" in refused(await bob.call("join", {"room": "team"}), "forbidden")
    again = await person(peer, a, "bob")  # on the other node, and after reconnecting
    assert "banned" in refused(await again.call("join", {"room": "team"}), "forbidden")
    # dave, on bob's node, gets them in order: had bob been in, he would have too
    marker = await olive.send("team", "marker")
    assert [await dave.next("message") for _ in range(2)] == [after, marker]
    assert bob.pending("message") == [], bob.received
    seen = await carol.next("presence")
    while not (seen["user"] == "bob" and seen["event"] == "leave"):
        seen = await carol.next("presence")
    assert "bob" not in seen["members"]


async def test_a_ban_racing_sends_from_the_other_node_lets_none_through_after_it(
        cluster: list[Served], peer: PeerFactory) -> None:
    """Bob pipelines sends through one node while olive bans him through the
    other: every send acknowledged has a seq before the ban's, and history
    agrees."""
    a, b = cluster
    olive, bob = await person(peer, a, "olive"), await person(peer, b, "bob")
    await olive.ok("create", {"room": "race"})
    await olive.join("race")
    await bob.join("race")
    sends = [asyncio.ensure_future(bob.call("send", {"room": "race", "text": f"m{i}"}))
             for i in range(150)]
    await olive.next("message")  # some are stored before the ban
    ban = await olive.ok("ban", {"room": "race", "user": "bob"})
    acks = await asyncio.wait_for(asyncio.gather(*sends), TIMEOUT)
    stored = [ack["message"]["seq"] for ack in acks if ack["ok"]]
    codes = {ack["error"]["code"] for ack in acks if not ack["ok"]}
    assert stored and max(stored) < ban["action"]["seq"]
    assert codes <= {"forbidden", "not_member"} and codes
    history = await olive.ok("history", {"room": "race", "after": 0, "limit": 200})
    assert [m["seq"] for m in history["messages"]] == stored


async def test_a_client_away_across_actions_converges_to_the_view_of_one_that_stayed(
        cluster: list[Served], peer: PeerFactory, serializer: str, transport: str) -> None:
    """ChatClients on both nodes; one loses its link while a topic is set, a
    message deleted, people banned and removed, and reconnects by itself:
    it hands over the same entries, in the same order, as one that stayed;
    the banned one gets everything up to its ban and stops rejoining."""
    a, b = cluster
    olive = await person(peer, a, "olive")
    await olive.ok("create", {"room": "team"})
    await olive.join("team")
    proxy = await Proxy(int(b.url.rsplit(":", 1)[1])).start()
    seen: dict[str, list[dict[str, Any]]] = {"stays": [], "away": [], "troll": []}
    changed: dict[str, asyncio.Queue[dict[str, Any]]] = {n: asyncio.Queue() for n in seen}
    clients: dict[str, ChatClient] = {}

    def recorder(name: str) -> Callable[[dict[str, Any]], None]:
        def record(entry: dict[str, Any]) -> None:
            seen[name].append(entry)
            if "kind" in entry:
                changed[name].put_nowait(entry)
        return record

    try:
        for name, url in (("stays", a.url), ("away", proxy.url), ("troll", b.url)):
            clients[name] = ChatClient(url, token=token(name=name), serializer=serializer,
                                       transports=[transport], on_message=recorder(name),
                                       on_change=recorder(name), reconnection_delay=0.05,
                                       reconnection_delay_max=0.2)
            await clients[name].connect()
            await clients[name].join("team")
        doomed = await olive.send("team", "to be deleted")
        for name in seen:
            await until(lambda: len(seen[name]) == 1)
        proxy.offline = True
        proxy.cut()
        await olive.ok("configure", {"room": "team", "topic": "while you were away"})
        await olive.ok("delete", {"room": "team", "seq": doomed["seq"]})
        await olive.ok("ban", {"room": "team", "user": "troll", "reason": "trolling"})
        await olive.send("team", "after the ban")
        await olive.ok("remove", {"room": "team", "user": "nobody"})
        ban = await asyncio.wait_for(changed["troll"].get(), TIMEOUT)
        while ban["kind"] != "ban":
            ban = await asyncio.wait_for(changed["troll"].get(), TIMEOUT)
        last = await olive.ok("mute", {"room": "team", "user": "stays", "seconds": 60})
        await until(lambda: bool(seen["stays"]) and seen["stays"][-1]["seq"]
                    == last["action"]["seq"])
        proxy.offline = False
        await until(lambda: bool(seen["away"]) and seen["away"][-1]["seq"]
                    == last["action"]["seq"])
        assert seen["away"] == seen["stays"]
        assert [e.get("kind", "message") for e in seen["away"]] == [
            "message", "configure", "delete", "ban", "message", "remove", "mute"]
        # the banned one got everything up to its ban, and nothing after
        assert seen["troll"][-1]["seq"] == ban["seq"] and ban["user"] == "troll"
        assert "team" not in clients["troll"].joined  # not to be rejoined
    finally:
        for client in clients.values():
            await client.close()
        await proxy.close()
