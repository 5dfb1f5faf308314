"""Outgoing webhooks over real HTTP: a real server posts to a real receiver
(tests/receiver.py, written as docs/api.md tells users to), which checks
every signature. What a socket sends reaches the receiver once, in order, and
a receiver that fails, or a server that restarts, loses nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from app.api.keys import entry, new_key
from app.core.models import RoomName
from app.appkeys import WEBHOOKS_KEY
from app.hooks.webhook import verify

from ..conftest import PeerFactory, ServeFactory, Served, past, until
from ..receiver import Receiver
from .test_api import API, Client

FAST = {"webhook_retry_min": 0.05, "webhook_retry_max": 0.2, "webhook_rescan": 1.0,
        "webhook_networks": "127.0.0.0/8"}  # (the receivers run on this host)


@dataclass
class Hooked:
    served: Served
    admin: Client
    receiver: Receiver
    url: str  # the receiver's

    async def subscribe(self, **body: Any) -> dict[str, Any]:
        status, reply, _ = await self.admin.call("POST", "/webhooks",
                                                 {"url": self.url, "rooms": ["ops-*"], **body})
        assert status == 201 and reply["ok"], reply
        hook: dict[str, Any] = reply["webhook"]
        self.receiver.secret = hook["secret"]
        return hook


@pytest.fixture
async def hooks(serve: ServeFactory) -> AsyncIterator[Any]:
    """``await hooks(**settings)``: a server with an admin key ("ops", every
    room) and a receiver of its own."""
    opened: list[TestServer] = []
    async with aiohttp.ClientSession() as http:
        async def start(receiver: Receiver | None = None, **settings: Any) -> Hooked:
            key = new_key()
            served = await serve(api_keys=entry("ops", "admin", "*", key),
                                 **{**FAST, **settings})
            receiver = receiver or Receiver()
            site = TestServer(receiver.app(), host="127.0.0.1", port=0)
            await site.start_server()
            opened.append(site)
            return Hooked(served, Client(http, served.url, key), receiver,
                          str(site.make_url("/hook")))
        yield start
    for site in opened:
        await site.close()


def by_room(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    rooms: dict[str, list[int]] = {}
    for event in events:
        room, _, seq = event["id"].rpartition(":")
        rooms.setdefault(room, []).append(int(seq))
    return rooms


async def test_events_arrive_signed_once_and_in_each_rooms_order(
        hooks: Any, peer: PeerFactory) -> None:
    """Messages and changes of the subscribed rooms, from the webhook's creation
    on; each event's id is room:seq; every request verifies with the secret."""
    h: Hooked = await hooks()
    alice = await peer("alice", server=h.served)
    for room in ("ops-1", "ops-2", "lobby"):
        await alice.join(room)
    before = await alice.send("ops-1", "before the webhook")
    hook = await h.subscribe()
    assert hook["id"].startswith("wh_") and hook["secret"].startswith("whsec_")
    assert hook["events"] == ["changes", "messages"]
    for i in range(5):
        await alice.send("ops-1", f"one {i}")
        await alice.send("ops-2", f"two {i}")
        await alice.send("lobby", "not subscribed")
    await alice.ok("edit", {"room": "ops-1", "seq": before["seq"] + 1, "text": "one 0, edited"})
    await alice.ok("react", {"room": "ops-2", "seq": 1, "emoji": "👍"})
    events = await h.receiver.wait_for(12)
    assert by_room(events) == {"ops-1": [2, 3, 4, 5, 6, 7], "ops-2": [1, 2, 3, 4, 5, 6]}
    first = events[0]
    assert first["type"] == "message" and first["message"]["text"] == "one 0"
    assert first["message"]["from"] == "alice" and "mention" not in first
    changes = [e for e in events if e["type"] == "change"]
    assert sorted((c["id"], c["change"]["kind"], c["change"]["target"]) for c in changes) == [
        ("ops-1:7", "edit", 2), ("ops-2:6", "react", 1)]  # (rooms: each in its order)
    assert h.receiver.refused == 0 and h.receiver.repeats == 0
    headers = h.receiver.headers[0]
    assert headers["Roomcast-Webhook"] == hook["id"]
    assert headers["Content-Type"] == "application/json"
    # a tampered body or another secret does not verify
    assert not verify("whsec_other", headers["Roomcast-Signature"], b"{}", time.time())


async def test_a_failing_receiver_is_retried_until_it_takes_everything(
        hooks: Any, peer: PeerFactory) -> None:
    h: Hooked = await hooks()
    await h.subscribe()
    h.receiver.fail_with = 503
    alice = await peer("alice", server=h.served)
    await alice.join("ops-1")
    for i in range(30):
        await alice.send("ops-1", f"m{i}")
    await until(lambda: h.receiver.requests >= 4)  # refused, retried (backing off)
    assert h.receiver.events == []
    h.receiver.fail_with = None
    events = await h.receiver.wait_for(30)
    assert by_room(events) == {"ops-1": list(range(1, 31))}
    assert [e["message"]["text"] for e in events] == [f"m{i}" for i in range(30)]


async def test_a_hanging_receiver_times_out_and_slows_nothing_else(
        hooks: Any, peer: PeerFactory) -> None:
    """A receiver that never answers costs its own webhook a timeout per try;
    the chat and another webhook go on."""
    h: Hooked = await hooks(webhook_timeout=0.3)
    stuck = Receiver()
    stuck.hang = True
    site = TestServer(stuck.app(), host="127.0.0.1", port=0)
    await site.start_server()
    try:
        status, reply, _ = await h.admin.call("POST", "/webhooks", {
            "url": str(site.make_url("/hook")), "rooms": ["ops-*"]})
        assert status == 201, reply
        await h.subscribe()
        alice, bob = await peer("alice", server=h.served), await peer("bob", server=h.served)
        await alice.join("ops-1")
        await bob.join("ops-1")
        for i in range(10):
            await alice.send("ops-1", f"m{i}")
            assert (await bob.next("message"))["text"] == f"m{i}"
        assert len(await h.receiver.wait_for(10)) == 10
        await until(lambda: stuck.requests >= 2)  # timed out, tried again
    finally:
        stuck.released.set()
        await site.close()


async def test_a_delivery_given_up_is_a_dead_letter_that_can_be_replayed(
        hooks: Any, peer: PeerFactory) -> None:
    h: Hooked = await hooks(webhook_give_up=0.3, webhook_batch=5)
    hook = await h.subscribe()
    h.receiver.fail_with = 500
    alice = await peer("alice", server=h.served)
    await alice.join("ops-1")
    for i in range(5):
        await alice.send("ops-1", f"lost {i}")
    path = f"/webhooks/{hook['id']}/dead-letters"

    async def letters() -> list[dict[str, Any]]:
        return list((await h.admin.ok("GET", path))["dead_letters"])
    webhooks = h.served.app[WEBHOOKS_KEY]
    await until(lambda: hook["id"] in webhooks.deliverers
                and webhooks.deliverers[hook["id"]].given_up == 5)
    dead = await letters()  # one or more (the first may go before the rest is sent)
    assert [seq for d in dead for seq in range(d["first"], d["last"] + 1)] == [1, 2, 3, 4, 5]
    for letter in dead:
        assert letter["id"] == f"ops-1:{letter['first']}-{letter['last']}"
        assert letter["room"] == "ops-1"
        assert letter["events"] == letter["last"] - letter["first"] + 1
        assert letter["attempts"] >= 2 and letter["error"] == "HTTP 500"
    # the room went on after them: a new message is delivered once the receiver is back
    h.receiver.fail_with = None
    await alice.send("ops-1", "after")
    events = await h.receiver.wait_for(1)
    assert [e["id"] for e in events] == ["ops-1:6"]
    for letter in dead:
        replayed = await h.admin.ok("POST", f"{path}/{letter['id']}/replay")
        assert replayed["events"] == letter["events"]
    events = await h.receiver.wait_for(6)
    assert [e["id"] for e in events[1:]] == [f"ops-1:{i}" for i in range(1, 6)]
    assert await letters() == []
    status, reply, _ = await h.admin.call("POST", f"{path}/{dead[0]['id']}/replay")
    assert (status, reply["error"]["code"]) == (404, "not_found")


async def test_a_webhook_reaches_no_internal_address_unless_its_network_is_named(
        hooks: Any, peer: PeerFactory) -> None:
    """Without --webhook-networks a webhook to this host is refused when made
    (a literal address), or never connects (a name that resolves to it): its
    deliveries end as dead letters saying why, and the receiver hears nothing."""
    h: Hooked = await hooks(webhook_networks="", webhook_give_up=0.3)
    port = h.url.split(":")[2].split("/")[0]
    status, reply, _ = await h.admin.call("POST", "/webhooks",
                                          {"url": h.url, "rooms": ["ops-*"]})
    assert (status, reply["error"]["code"]) == (400, "bad_request")
    assert "not a public address" in reply["error"]["message"]
    hook = await h.subscribe(url=f"http://localhost:{port}/hook")  # accepted: a name
    alice = await peer("alice", server=h.served)
    await alice.join("ops-1")
    await alice.send("ops-1", "for nobody inside")
    webhooks = h.served.app[WEBHOOKS_KEY]
    await until(lambda: hook["id"] in webhooks.deliverers
                and webhooks.deliverers[hook["id"]].given_up == 1)
    dead = (await h.admin.ok("GET", f"/webhooks/{hook['id']}/dead-letters"))["dead_letters"]
    assert "no address webhooks may reach" in dead[0]["error"]
    assert h.receiver.requests == 0


async def test_what_retention_removed_before_delivery_is_said_with_a_gone_event(
        hooks: Any, peer: PeerFactory) -> None:
    """A receiver down while retention removes entries it has not had: it
    gets what was in flight, then one ``gone`` event naming the span (in the
    room's order, with an id of its own), then the rest."""
    h: Hooked = await hooks(webhook_batch=1)
    await h.subscribe()
    h.receiver.fail_with = 503
    alice = await peer("alice", server=h.served)
    await alice.join("ops-1")
    sent = [await alice.send("ops-1", f"m{i}") for i in (1, 2, 3)]
    await until(lambda: h.receiver.requests >= 1)  # m1 is in flight, the rest is not read
    past(sent[-1]["ts"])
    await alice.send("ops-1", "m4")
    assert await h.served.chat.retention.purge(RoomName("ops-1"), sent[-1]["ts"] + 1) == 3
    h.receiver.fail_with = None
    events = await h.receiver.wait_for(3)
    assert [e["id"] for e in events] == ["ops-1:1", "ops-1:2-3", "ops-1:4"]
    assert events[1] == {"id": "ops-1:2-3", "type": "gone",
                         "gone": {"room": "ops-1", "from": 2, "to": 3, "why": "retention"}}
    assert events[2]["message"]["text"] == "m4"


async def test_a_mention_webhook_gets_only_the_messages_that_mention_its_name(
        hooks: Any, peer: PeerFactory) -> None:
    h: Hooked = await hooks()
    await h.subscribe(events=["mentions"], mention="deploybot", rooms=["*"])
    alice = await peer("alice", server=h.served)
    await alice.join("lobby")
    await alice.send("lobby", "nothing for the bot")
    await alice.send("lobby", "@deploybot ship it")
    await alice.ok("edit", {"room": "lobby", "seq": 2, "text": "@deploybot ship it now"})
    await alice.send("lobby", "thanks @{deploybot}")
    events = await h.receiver.wait_for(2)
    assert [(e["id"], e["mention"]) for e in events] == [("lobby:2", True), ("lobby:4", True)]


async def test_a_joins_webhook_gets_each_persons_first_entry_once(
        hooks: Any, peer: PeerFactory) -> None:
    """With --record-joins, a webhook of ``joins`` receives each person's
    first entry to a room, in the room's order, once however often they come
    back (on another connection too); messages are not for it."""
    h: Hooked = await hooks(record_joins=True)
    await h.subscribe(events=["joins"], rooms=["ops-*"])
    alice, bob = await peer("alice", server=h.served), await peer("bob", server=h.served)
    await alice.join("ops-1")
    await alice.send("ops-1", "not a join")
    await bob.join("ops-1")
    await bob.ok("leave", {"room": "ops-1"})
    await bob.join("ops-1")
    again = await peer("bob", server=h.served)
    await again.join("ops-1")
    await alice.join("lobby")  # not subscribed
    await alice.send("ops-1", "last")
    carol = await peer("carol", server=h.served)
    await carol.join("ops-1")  # (what came before her is all there is)
    events = await h.receiver.wait_for(3)
    assert [(e["id"], e["type"], e["change"]["kind"], e["change"]["from"]) for e in events] == [
        ("ops-1:1", "change", "join", "alice"), ("ops-1:3", "change", "join", "bob"),
        ("ops-1:5", "change", "join", "carol")]
    assert "target" not in events[0]["change"]
    # the stream says the same to a socket reading it from the start
    page = await alice.ok("history", {"room": "ops-1", "after": 0})
    assert [(c["seq"], c["kind"]) for c in page["changes"]] == [(1, "join"), (3, "join"),
                                                                (5, "join")]
    assert h.receiver.repeats == 0


async def test_nothing_is_lost_while_the_server_restarts(
        hooks: Any, serve: ServeFactory, peer: PeerFactory) -> None:
    """Events stored while the receiver was down and the server stopped are
    delivered by the next server on the same store, after the last one taken."""
    h: Hooked = await hooks()
    await h.subscribe()
    alice = await peer("alice", server=h.served)
    await alice.join("ops-1")
    for i in range(3):
        await alice.send("ops-1", f"m{i}")
    await h.receiver.wait_for(3)
    h.receiver.fail_with = 503
    for i in range(3, 8):
        await alice.send("ops-1", f"m{i}")
    await alice.sio.disconnect()
    await h.served.server.close()
    h.receiver.fail_with = None
    again = await serve(store=h.served.settings.store, api_keys=h.served.settings.api_keys,
                        **FAST)
    bob = await peer("bob", server=again)
    await bob.join("ops-1")
    await bob.send("ops-1", "m8")
    events = await h.receiver.wait_for(9)
    assert by_room(events) == {"ops-1": list(range(1, 10))}
    assert h.receiver.repeats == 0


async def test_webhooks_are_managed_by_admin_keys_and_bad_input_changes_nothing(
        serve: ServeFactory) -> None:
    admin, reader = new_key(), new_key()
    served = await serve(api_keys=" ".join([entry("ops", "admin", "ops-*", admin),
                                            entry("ci", "publish,read", "*", reader)]),
                         max_webhooks=2)
    async with aiohttp.ClientSession() as http:
        ops, ci = Client(http, served.url, admin), Client(http, served.url, reader)
        body = {"url": "https://hooks.example.org/in", "rooms": ["ops-*"]}
        assert await ci.refused("POST", "/webhooks", body) == (403, "forbidden")
        for bad in ({**body, "url": "ftp://x"}, {**body, "rooms": []},
                    {**body, "rooms": ["bad room"]}, {**body, "events": ["leaves"]},
                    {**body, "events": ["mentions"]}, {**body, "mention": "bot"},
                    {"rooms": ["ops-*"]}):
            assert await ops.refused("POST", "/webhooks", bad) == (400, "bad_request"), bad
        assert (await ops.ok("GET", "/webhooks"))["webhooks"] == []
        status, created, _ = await ops.call("POST", "/webhooks", body)
        assert status == 201
        hook = created["webhook"]
        assert hook["within"] == ["ops-*"]  # the key's rooms bound it too
        listed = (await ops.ok("GET", "/webhooks"))["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
        shown = (await ops.ok("GET", f"/webhooks/{hook['id']}"))["webhook"]
        assert shown["url"] == body["url"] and "secret" not in shown
        status, _, _ = await ops.call("POST", "/webhooks", body)
        assert status == 201
        assert await ops.refused("POST", "/webhooks", body) == (413, "too_large")
        assert (await ops.ok("DELETE", f"/webhooks/{hook['id']}"))["id"] == hook["id"]
        assert await ops.refused("GET", f"/webhooks/{hook['id']}") == (404, "not_found")
        assert await ops.refused("DELETE", f"/webhooks/{hook['id']}") == (404, "not_found")
        assert await ops.refused("GET", "/webhooks/nope") == (400, "bad_request")
        assert len((await ops.ok("GET", "/webhooks"))["webhooks"]) == 1
        async with http.get(served.url + API + "/openapi.json") as reply:
            paths = (await reply.json())["paths"]
        assert {"/api/v1/webhooks", "/api/v1/webhooks/{id}/dead-letters"} <= paths.keys()
