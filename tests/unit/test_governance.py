"""Governing rooms, as the people in them see it (the services, with plain calls)."""

from __future__ import annotations

from typing import Any

import pytest

from ..conftest import past, refused
from ..tokens import SECRET
from .chat import Harness, LocalPeerFactory, token_peer
from .conftest import NodeFactory


@pytest.fixture
async def served(serve: NodeFactory) -> Harness:
    return await serve(jwt_secret=SECRET)


async def test_a_room_is_created_by_its_owner_and_says_so_on_join(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, bob = [await token_peer(peer, served, n) for n in ("olive", "bob")]
    made = await olive.ok("create", {"room": "team", "topic": "plans", "client_id": "c1"})
    assert made["action"]["kind"] == "create" and made["action"]["seq"] == 1
    assert made["settings"] == {"private": False, "topic": "plans", "slow": 0, "locked": False,
                                "retention": 0}
    refused(await bob.call("create", {"room": "team"}), "conflict")
    joined = await bob.join("team")
    assert joined["settings"]["topic"] == "plans" and joined["you"] == {"role": None}
    assert (await olive.join("team"))["you"] == {"role": "owner"}
    # the create is the stream's first entry: a client reading on from 0 gets it
    assert [c["kind"] for c in (await bob.ok("history", {"room": "team", "after": 0}))
            ["changes"]] == ["create"]
    await bob.join("lobby")  # an ungoverned room says nothing of settings
    assert "settings" not in await bob.join("lobby")


async def test_open_mode_gives_no_power_by_name(serve: NodeFactory,
                                                peer: LocalPeerFactory) -> None:
    served = await serve()  # no secret: anyone may take any name
    olive = await peer("olive", server=served)
    message = refused(await olive.call("create", {"room": "team"}), "forbidden")
    assert "token mode" in message
    refused(await olive.call("role", {"room": "lobby", "user": "bob", "role": "owner"}),
            "forbidden")
    refused(await olive.call("ban", {"room": "lobby", "user": "bob"}), "forbidden")


async def test_a_ban_takes_the_person_out_and_keeps_them_out_of_everything(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, bob, carol = [await token_peer(peer, served, n) for n in ("olive", "bob", "carol")]
    await olive.ok("create", {"room": "team"})
    for p in (olive, bob, carol):
        await p.join("team")
    sent = await bob.send("team", "spam")
    ban = await olive.ok("ban", {"room": "team", "user": "bob", "reason": "spam"})
    assert ban["standing"] == {"role": None, "banned": None}  # None: for good
    told = await bob.next("change")
    assert (told["kind"], told["user"], told["reason"], told["from"]) == \
        ("ban", "bob", "spam", "olive")
    assert (await carol.next("change"))["seq"] == ban["action"]["seq"]
    leave = await carol.next("presence")
    while leave["event"] != "leave":
        leave = await carol.next("presence")
    assert leave["user"] == "bob" and "bob" not in leave["members"]
    # every event about the room is refused: he is not in it, and may not enter
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("send", {"text": "x"}), ("typing", {"active": True}), ("history", {}),
        ("react", {"seq": sent["seq"], "emoji": "👍"}), ("edit", {"seq": sent["seq"], "text": "y"}),
        ("read", {"seq": 1})]
    for event, data in attempts:
        refused(await bob.call(event, {"room": "team", **data}), "not_member")
    assert "banned" in refused(await bob.call("join", {"room": "team"}), "forbidden")
    assert (await bob.ok("search", {"query": "spam"}))["results"] == []  # not his rooms
    await carol.send("team", "after the ban")
    assert bob.pending("message") == []  # nothing after the ban reached him
    await olive.ok("unban", {"room": "team", "user": "bob"})
    assert "settings" in await bob.join("team")


async def test_a_timed_mute_holds_back_sends_typing_and_reactions(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, bob = [await token_peer(peer, served, n) for n in ("olive", "bob")]
    await olive.ok("create", {"room": "team"})
    await olive.join("team")
    await bob.join("team")
    sent = await olive.send("team", "hello")
    muted = await olive.ok("mute", {"room": "team", "user": "bob", "seconds": 600})
    assert muted["standing"]["muted"] == muted["action"]["until"]
    assert (await bob.next("change"))["kind"] == "mute"
    assert "muted" in refused(await bob.call("send", {"room": "team", "text": "x"}),
                              "forbidden")
    refused(await bob.call("typing", {"room": "team", "active": True}), "forbidden")
    refused(await bob.call("react", {"room": "team", "seq": sent["seq"],
                                     "emoji": "👍"}), "forbidden")
    await bob.ok("history", {"room": "team"})  # he still reads
    # and a connection that joins later knows it too
    again = await token_peer(peer, served, "bob")
    assert (await again.join("team"))["you"]["muted"] == muted["action"]["until"]
    refused(await again.call("typing", {"room": "team", "active": True}), "forbidden")
    await olive.ok("unmute", {"room": "team", "user": "bob"})
    await bob.send("team", "back")
    await bob.ok("typing", {"room": "team", "active": True})


async def test_a_private_room_takes_members_only(served: Harness,
                                                 peer: LocalPeerFactory) -> None:
    olive, mod, bob = [await token_peer(peer, served, n) for n in ("olive", "mod", "bob")]
    await olive.ok("create", {"room": "team", "private": True})
    assert "private" in refused(await bob.call("join", {"room": "team"}), "forbidden")
    await olive.ok("role", {"room": "team", "user": "mod", "role": "moderator"})
    await mod.ok("role", {"room": "team", "user": "bob", "role": "member"})
    await bob.join("team")
    await mod.join("team")
    await bob.send("team", "hi")
    refused(await mod.call("configure", {"room": "team", "private": False}), "forbidden")
    refused(await bob.call("remove", {"room": "team", "user": "mod"}), "forbidden")
    await mod.ok("remove", {"room": "team", "user": "bob", "reason": "left the team"})
    assert (await bob.next("change"))["kind"] == "remove"
    refused(await bob.call("send", {"room": "team", "text": "x"}), "not_member")
    refused(await bob.call("join", {"room": "team"}), "forbidden")


async def test_slow_mode_and_read_only(served: Harness, peer: LocalPeerFactory) -> None:
    olive, bob = [await token_peer(peer, served, n) for n in ("olive", "bob")]
    await olive.ok("create", {"room": "team"})
    await bob.join("team")
    await olive.ok("configure", {"room": "team", "slow": 60})
    await bob.send("team", "one")
    ack = await bob.call("send", {"room": "team", "text": "two"})
    assert "slow mode" in refused(ack, "rate_limited") and ack["error"]["retry_after"] > 0
    await olive.ok("configure", {"room": "team", "slow": 0, "locked": True})
    assert "read-only" in refused(await bob.call("send", {"room": "team", "text": "x"}),
                                  "forbidden")
    await olive.join("team")
    await olive.send("team", "announcement")


async def test_a_client_away_during_actions_gets_them_in_order_with_the_messages(
        served: Harness, peer: LocalPeerFactory) -> None:
    """One that stayed and one that comes back with ``since`` see the same stream."""
    olive, stays, away = [await token_peer(peer, served, n) for n in ("olive", "stays", "away")]
    await olive.ok("create", {"room": "team"})
    for p in (olive, stays, away):
        await p.join("team")
    spam = await olive.send("team", "to delete")
    last = (await away.next("message"))["seq"]
    await away.disconnect()
    await olive.ok("configure", {"room": "team", "topic": "new topic"})
    await olive.ok("delete", {"room": "team", "seq": spam["seq"]})
    await olive.ok("mute", {"room": "team", "user": "stays", "seconds": 60})
    await olive.send("team", "after")
    await olive.ok("ban", {"room": "team", "user": "troll"})
    live = [await stays.next("change") for _ in range(4)]
    back = await token_peer(peer, served, "away")
    caught = await back.join("team", since=last)
    stream = sorted(caught["messages"] + caught["changes"], key=lambda e: e["seq"])
    assert [e.get("kind", "message") for e in stream] == [
        "configure", "delete", "mute", "message", "ban"]
    assert [e for e in stream if "kind" in e] == live


async def test_who_sees_what_of_a_room(served: Harness, peer: LocalPeerFactory) -> None:
    olive, mod, bob = [await token_peer(peer, served, n) for n in ("olive", "mod", "bob")]
    await olive.ok("create", {"room": "team", "topic": "t"})
    await olive.ok("role", {"room": "team", "user": "mod", "role": "moderator"})
    await mod.ok("mute", {"room": "team", "user": "bob", "seconds": 60})
    seen = await mod.ok("room_info", {"room": "team"})
    assert [p["user"] for p in seen["people"]] == ["bob", "mod", "olive"]
    assert seen["you"] == {"role": "moderator"} and seen["settings"]["topic"] == "t"
    by_bob = await bob.ok("room_info", {"room": "team"})
    assert [p["user"] for p in by_bob["people"]] == ["mod", "olive"]  # not who is muted
    assert by_bob["you"]["muted"] > 0
    refused(await bob.call("audit", {"room": "team"}), "forbidden")
    log = await mod.ok("audit", {"room": "team", "limit": 2})
    assert [a["kind"] for a in log["actions"]] == ["mute", "role"] and log["more"]
    older = await mod.ok("audit", {"room": "team", "before": log["actions"][-1]["seq"]})
    assert [a["kind"] for a in older["actions"]] == ["create"] and not older["more"]


async def test_a_token_moderator_claim_moderates_every_room(
        served: Harness, peer: LocalPeerFactory) -> None:
    root = await token_peer(peer, served, "root", moderator=True)
    bob = await token_peer(peer, served, "bob")
    await bob.join("lobby")
    await root.ok("ban", {"room": "lobby", "user": "bob", "seconds": 60})  # ungoverned till now
    assert (await bob.next("change"))["kind"] == "ban"
    assert "until" in refused(await bob.call("join", {"room": "lobby"}), "forbidden")


@pytest.mark.parametrize("event,data", [
    ("create", None), ("create", {"room": "a b"}), ("create", {"room": "r", "private": 1}),
    ("create", {"room": "r", "topic": "x" * 301}), ("create", {"room": "r", "slow": -1}),
    ("configure", {"room": "r"}), ("ban", {"room": "r"}), ("ban", {"room": "r", "user": ""}),
    ("ban", {"room": "r", "user": "b", "seconds": 0}), ("mute", {"room": "r", "user": "b"}),
    ("role", {"room": "r", "user": "b", "role": "king"}),
    ("remove", {"room": "r", "user": "b", "reason": 7}), ("audit", {"room": "r", "limit": 0}),
    ("room_info", {}),
])
async def test_malformed_actions_are_refused_and_change_nothing(
        served: Harness, peer: LocalPeerFactory, event: str, data: Any) -> None:
    olive = await token_peer(peer, served, "olive")
    refused(await olive.call(event, data), "bad_request")
    assert (await olive.ok("room_info", {"room": "r"}))["governed"] is False


async def test_a_ban_whose_event_a_node_lost_is_applied_when_it_catches_up(
        serve: NodeFactory, peer: LocalPeerFactory) -> None:
    """Two nodes on one store and no fan-out between them: every event of one is
    lost to the other, as in a Redis outage, until the other catches up."""
    here, there = await serve(jwt_secret=SECRET), await serve(jwt_secret=SECRET)
    olive = await token_peer(peer, here, "olive")
    bob, carol = await token_peer(peer, there, "bob"), await token_peer(peer, there, "carol")
    await olive.ok("create", {"room": "team"})
    await bob.join("team")
    await carol.join("team")
    await olive.ok("ban", {"room": "team", "user": "bob"})
    await olive.ok("mute", {"room": "team", "user": "carol", "seconds": 60})
    assert bob.pending("change") == []  # lost
    await carol.ok("typing", {"room": "team", "active": True})  # not known there yet
    there.chat.recovery.catch_up(None)
    assert (await carol.next("catch_up"))["room"] == "team"  # (bob was out by then)
    assert bob.pending("catch_up") == []
    refused(await bob.call("history", {"room": "team"}), "not_member")
    refused(await carol.call("typing", {"room": "team", "active": True}), "forbidden")


async def test_a_report_reaches_the_moderators_and_waits_until_resolved(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, mod, bob, carol = [await token_peer(peer, served, n)
                              for n in ("olive", "mod", "bob", "carol")]
    await olive.ok("create", {"room": "team"})
    await olive.ok("role", {"room": "team", "user": "mod", "role": "moderator"})
    for p in (bob, carol):
        await p.join("team")
    spam = await bob.send("team", "buy cheap watches")
    made = await carol.ok("report", {"room": "team", "seq": spam["seq"], "reason": "spam"})
    assert made["report"]["text"] == "buy cheap watches" and made["report"]["from"] == "bob"
    for moderator in (olive, mod):  # wherever they are: neither has joined the room
        told = await moderator.next("report")
        assert (told["seq"], told["by"], told["reason"]) == (spam["seq"], "carol", "spam")
    assert bob.pending("report") == [] and carol.pending("report") == []
    past(made["report"]["ts"])  # (reports are listed oldest first: by their ms)
    await bob.ok("report", {"room": "team", "seq": spam["seq"]})  # (his own: allowed)
    refused(await carol.call("reports", {"room": "team"}), "forbidden")
    refused(await carol.call("report", {"room": "team", "seq": 99}), "not_found")
    refused(await carol.call("report", {"room": "elsewhere", "seq": 1}), "not_member")
    queue = await mod.ok("reports", {"room": "team"})
    assert [(r["seq"], r["by"]) for r in queue["reports"]] == [
        (spam["seq"], "carol"), (spam["seq"], "bob")]
    refused(await carol.call("resolve", {"room": "team", "seq": spam["seq"]}), "forbidden")
    await mod.join("team")
    await mod.ok("delete", {"room": "team", "seq": spam["seq"]})
    done = await mod.ok("resolve", {"room": "team", "seq": spam["seq"], "reason": "deleted"})
    assert done["resolved"] == 2
    assert (await olive.next("report"))["by"] == "bob"  # (bob's own report)
    assert (await olive.next("report"))["resolved"] == 2
    assert (await mod.ok("reports", {"room": "team"}))["reports"] == []


async def test_the_rooms_list_shows_a_room_only_to_those_it_admits(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, bob, eve = [await token_peer(peer, served, n) for n in ("olive", "bob", "eve")]
    await olive.ok("create", {"room": "secret", "private": True})
    await olive.join("secret")
    await olive.ok("create", {"room": "public"})
    await olive.join("public")
    await eve.join("public")
    listed = {r["name"] for r in (await eve.ok("rooms"))["rooms"]}
    assert listed == {"public"}  # not the private room, though it has people in it
    await olive.ok("role", {"room": "secret", "user": "bob", "role": "member"})
    assert "secret" in {r["name"] for r in (await bob.ok("rooms"))["rooms"]}
    await olive.ok("ban", {"room": "public", "user": "eve"})
    assert (await eve.ok("rooms"))["rooms"] == []  # nor one she is banned from


async def test_an_invite_makes_its_holder_a_member_until_it_runs_out(
        served: Harness, peer: LocalPeerFactory) -> None:
    olive, mod, bob, carol, dan = [await token_peer(peer, served, n)
                                   for n in ("olive", "mod", "bob", "carol", "dan")]
    await olive.ok("create", {"room": "team", "private": True})
    await olive.ok("role", {"room": "team", "user": "mod", "role": "moderator"})
    await olive.join("team")
    made = (await mod.ok("invite", {"room": "team", "uses": 2, "seconds": 3600}))["invite"]
    assert made["uses"] == 2 and made["by"] == "mod" and len(made["code"]) >= 20
    refused(await bob.call("invite", {"room": "team"}), "forbidden")
    refused(await bob.call("join", {"room": "team", "invite": "not-a-code"}), "forbidden")
    joined = await bob.ok("join", {"room": "team", "invite": made["code"]})
    assert joined["you"] == {"role": "member"}
    added = await olive.next("change")
    assert (added["kind"], added["user"], added["from"], added["reason"]) == (
        "role", "bob", "mod", "invite")
    await bob.ok("join", {"room": "team", "invite": made["code"]})  # (a member: not spent)
    listed = (await mod.ok("invites", {"room": "team"}))["invites"]
    assert [(i["id"], i["uses"]) for i in listed] == [(made["id"], 1)] and "code" not in listed[0]
    await carol.ok("join", {"room": "team", "invite": made["code"]})  # the last use
    assert (await mod.ok("invites", {"room": "team"}))["invites"] == []
    refused(await dan.call("join", {"room": "team", "invite": made["code"]}), "forbidden")
    # revoked, or its maker no longer a moderator: it no longer works
    again = (await mod.ok("invite", {"room": "team"}))["invite"]
    await mod.ok("revoke", {"room": "team", "id": again["id"]})
    refused(await dan.call("join", {"room": "team", "invite": again["code"]}), "forbidden")
    third = (await mod.ok("invite", {"room": "team"}))["invite"]
    await olive.ok("role", {"room": "team", "user": "mod", "role": None})
    refused(await dan.call("join", {"room": "team", "invite": third["code"]}), "forbidden")
