"""What a webhook delivery is, with plain calls: the events it wants, their
ids, the signature a receiver checks, and the back-off between retries."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from app.core.errors import ChatError
from app.core.models import JOIN, JOIN_CLIENT_ID, Action, Change, Message, RoomName
from app.hooks.webhook import Webhook, backoff, body, encode, new_webhook, sign, verify

OPS = RoomName("ops-1")


def hook(**changes: Any) -> Webhook:
    return dataclasses.replace(
        new_webhook("https://example.org/in", ["ops-*"], [], None, ("*",), 1), **changes)


def message(seq: int, text: str, sender: str = "alice") -> Message:
    return Message(OPS, seq, sender, text, 1000 + seq, None)


def test_a_signature_verifies_only_with_its_secret_body_and_a_recent_time() -> None:
    payload = body(hook(), [encode(hook().event(message(1, "hi")))])
    header = sign("whsec_a", 1_700_000_000, payload)
    assert header.startswith("t=1700000000,v1=") and len(header.partition("v1=")[2]) == 64
    assert verify("whsec_a", header, payload, now=1_700_000_100)
    assert not verify("whsec_b", header, payload, now=1_700_000_100)  # another secret
    assert not verify("whsec_a", header, payload + b" ", now=1_700_000_100)  # another body
    assert not verify("whsec_a", header, payload, now=1_700_000_301)  # too old: a replay
    for bad in ("", "t=x,v1=00", "v1=" + "0" * 64, header.replace("v1=", "v2=")):
        assert not verify("whsec_a", bad, payload, now=1_700_000_000)


def test_the_events_wanted_and_their_ids() -> None:
    edit = Change(OPS, 3, "edit", 1, "alice", "changed", 1003, None)
    every = hook()
    assert every.wants(message(1, "hi")) and every.wants(edit)
    assert every.event(message(7, "hi")) == {"id": "ops-1:7", "type": "message",
                                             "message": message(7, "hi").as_dict()}
    assert every.event(edit) == {"id": "ops-1:3", "type": "change", "change": edit.as_dict()}
    only_changes = hook(events=frozenset({"changes"}))
    assert only_changes.wants(edit) and not only_changes.wants(message(1, "hi"))
    bot = hook(events=frozenset({"mentions"}), mention="deploybot")
    assert bot.wants(message(1, "@deploybot ship")) and not bot.wants(message(2, "ship"))
    assert not bot.wants(message(3, "@deploybot me", sender="deploybot"))  # itself
    assert not bot.wants(edit)
    assert bot.event(message(1, "hi @deploybot"))["mention"] is True
    joined = Action(OPS, 4, JOIN, "bob", {}, 1004, JOIN_CLIENT_ID)
    ban = Action(OPS, 5, "ban", "olive", {"user": "bob"}, 1005, None)
    assert not every.wants(joined) and every.wants(ban)  # a join is not a change
    joins = hook(events=frozenset({"joins"}))
    assert joins.wants(joined) and not joins.wants(ban) and not joins.wants(message(1, "hi"))


def test_rooms_are_admitted_by_the_webhooks_patterns_and_its_makers() -> None:
    narrow = hook(rooms=("ops-*", "lobby"), within=("ops-1", "lobby"))
    assert narrow.admits(OPS) and narrow.admits(RoomName("lobby"))
    assert not narrow.admits(RoomName("ops-2"))  # its maker's key may not act there
    assert not narrow.admits(RoomName("dm:abc"))


@pytest.mark.parametrize("url,rooms,events,mention", [
    ("ftp://example.org/", ["*"], [], None),
    ("https:///nohost", ["*"], [], None),
    ("https://example.org/" + "x" * 2000, ["*"], [], None),
    ("https://example.org/", [], [], None),
    ("https://example.org/", ["a b"], [], None),
    ("https://example.org/", ["*"] * 21, [], None),
    ("https://example.org/", ["*"], ["leaves"], None),
    ("https://example.org/", ["*"], ["mentions"], None),
    ("https://example.org/", ["*"], ["messages"], "bot"),
    ("http://\udbde\udcfa\u00c8U[\u00c2hf", ["*"], [], None),  # found by schemathesis
    ("http://[::1", ["*"], [], None),
    ("http://example.org:99999999/", ["*"], [], None),
    ("http://exämple.org/", ["*"], [], None),
    ("http://example.org/ x", ["*"], [], None),
    ("https://example.org/", ["*"], ["mentions"], "\udbde"),
    ("https://example.org/", ["*"], ["mentions"], " "),
])
def test_a_webhook_that_cannot_work_is_refused(url: str, rooms: list[str], events: list[str],
                                               mention: str | None) -> None:
    with pytest.raises(ChatError) as refused:
        new_webhook(url, rooms, events, mention, ("*",), 1)
    assert refused.value.code == "bad_request"


def test_new_webhooks_have_their_own_id_and_secret_and_round_trip() -> None:
    one, two = hook(), hook()
    assert one.id != two.id and one.secret != two.secret
    assert Webhook.from_dict(one.as_dict(secret=True)) == one
    assert "secret" not in one.as_dict()


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    waits = [[backoff(n, 1.0, 60.0, rng) for _ in range(200)] for n in (1, 3, 10, 40)]
    assert all(0.5 <= w <= 1.0 for w in waits[0])
    assert all(0.5 <= w <= 4.0 for w in waits[1]) and max(waits[1]) > 3
    assert all(0.5 <= w <= 60.0 for w in waits[2] + waits[3]) and max(waits[3]) > 55
    # spread: failing webhooks do not retry in step
    assert len({round(w, 3) for w in waits[3]}) > 150
