"""Moderation across a cluster: two nodes sharing Redis and PostgreSQL, in
token mode, with real clients on both transports. A ban made on one node
takes effect on the other before anything sent after it, and no send the
store orders after a ban gets through."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..conftest import TIMEOUT, Peer, PeerFactory, ServeFactory, Served
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


def refused(ack: dict[str, Any], code: str) -> str:
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    return str(ack["error"]["message"])


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
    assert bob.pending("message") == []
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
