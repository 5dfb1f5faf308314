"""Governance in every store: actions are entries of the stream, decided in
the same order as the messages, and what they leave is kept and reread."""

from __future__ import annotations

import asyncio

import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import Action, RoomName, now_ms
from app.core.policy import FOREVER, MODERATOR, Act, RoomSettings
from app.store import MessageStore

from .conftest import Opener

TEAM = RoomName("team")


async def refused(call: object, code: ErrorCode) -> str:
    with pytest.raises(ChatError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code is code, caught.value.message
    return caught.value.message


async def created(store: MessageStore, **settings: object) -> None:
    made = await store.govern(TEAM, "olive", Act("create", settings=tuple(settings.items())),
                              "c1")
    assert made.created and made.action.seq == 1
    assert made.action.as_dict() == {"room": TEAM, "seq": 1, "kind": "create", "from": "olive",
                                     "ts": made.action.ts, "client_id": "c1",
                                     **({"settings": settings} if settings else {})}


async def test_a_room_is_created_once_and_only_while_it_has_no_entries(
        store: MessageStore) -> None:
    await store.append(RoomName("lobby"), "ann", "hi", None)
    await refused(store.govern(RoomName("lobby"), "ann", Act("create"), None),
                  ErrorCode.CONFLICT)
    assert await store.standing(RoomName("lobby"), "ann") == (None, (await store.standing(
        RoomName("lobby"), "nobody"))[1])  # still ungoverned
    await created(store, topic="plans")
    await refused(store.govern(TEAM, "bob", Act("create"), None), ErrorCode.CONFLICT)
    settings, olive = await store.standing(TEAM, "olive")
    assert settings == RoomSettings(topic="plans") and olive.role == "owner"
    # a retried create (same client id) is the one stored, not a conflict
    again = await store.govern(TEAM, "olive", Act("create", settings=(("topic", "plans"),)),
                               "c1")
    assert not again.created and again.action.seq == 1


async def test_a_ban_refuses_every_post_the_store_orders_after_it(
        store: MessageStore) -> None:
    await created(store)
    await store.append(TEAM, "bob", "before", None)
    # the ban and bob's next sends are called together: store order decides
    ban = store.govern(TEAM, "olive", Act("ban", user="bob", reason="spam"), None)
    after = store.append(TEAM, "bob", "after", None)
    results = await asyncio.gather(ban, after, return_exceptions=True)
    assert isinstance(results[1], ChatError) and results[1].code is ErrorCode.FORBIDDEN
    assert "banned" in results[1].message
    await refused(store.alter(TEAM, "bob", "react", 2, "👍", None), ErrorCode.FORBIDDEN)
    await refused(store.alter(TEAM, "bob", "delete", 2, None, None), ErrorCode.FORBIDDEN)
    _, bob = await store.standing(TEAM, "bob")
    assert bob.banned == FOREVER and bob.is_banned(now_ms())
    page = await store.page(TEAM, after=0)
    assert [(e.seq, e.kind) for e in page.changes] == [(1, "create"), (3, "ban")]
    assert [m.text for m in page.messages] == ["before"]
    assert page.changes[1].as_dict()["reason"] == "spam"
    await store.govern(TEAM, "olive", Act("unban", user="bob"), None)
    await store.append(TEAM, "bob", "back", None)


async def test_mute_lock_and_slow_mode_hold_back_posts_but_not_moderators(
        store: MessageStore) -> None:
    await created(store)
    await store.govern(TEAM, "olive", Act("role", user="mod", role="moderator"), None)
    until = now_ms() + 60_000
    await store.govern(TEAM, "mod", Act("mute", user="bob", until=until), None)
    message = await refused(store.append(TEAM, "bob", "hi", None), ErrorCode.FORBIDDEN)
    assert "muted" in message and "UTC" in message
    await store.append(TEAM, "carol", "hi", None)
    await store.govern(TEAM, "mod", Act("unmute", user="bob"), None)
    await store.govern(TEAM, "mod", Act("configure", settings=(("locked", True),)), None)
    assert "read-only" in await refused(store.append(TEAM, "bob", "hi", None),
                                        ErrorCode.FORBIDDEN)
    await store.append(TEAM, "mod", "announcement", None)
    await store.append(TEAM, "root", "from a token's moderator claim", None, power=MODERATOR)
    await store.govern(TEAM, "mod", Act("configure", settings=(("locked", False),
                                                               ("slow", 30))), None)
    await store.append(TEAM, "bob", "one", None)
    with pytest.raises(ChatError) as caught:
        await store.append(TEAM, "bob", "two", None)
    assert caught.value.code is ErrorCode.RATE_LIMITED
    assert caught.value.retry_after is not None and 29_000 < caught.value.retry_after <= 30_000
    await store.append(TEAM, "mod", "moderators are not slowed", None)
    await store.append(TEAM, "mod", "not at all", None)


async def test_who_may_do_what(store: MessageStore) -> None:
    await created(store)
    await refused(store.govern(TEAM, "bob", Act("ban", user="carol"), None),
                  ErrorCode.FORBIDDEN)
    await store.govern(TEAM, "olive", Act("role", user="mod", role="moderator"), None)
    await refused(store.govern(TEAM, "mod", Act("role", user="bob", role="moderator"), None),
                  ErrorCode.FORBIDDEN)  # only an owner makes moderators
    await refused(store.govern(TEAM, "mod", Act("ban", user="olive"), None),
                  ErrorCode.FORBIDDEN)  # not upwards
    await refused(store.govern(TEAM, "olive", Act("ban", user="olive"), None),
                  ErrorCode.FORBIDDEN)  # nor oneself
    await refused(store.govern(TEAM, "mod", Act("configure", settings=(("private", True),)),
                               None), ErrorCode.FORBIDDEN)  # who may join: owners
    await store.govern(TEAM, "olive", Act("configure", settings=(("private", True),)), None)
    await refused(store.append(TEAM, "stranger", "hi", None), ErrorCode.FORBIDDEN)
    await store.govern(TEAM, "mod", Act("role", user="stranger", role="member"), None)
    await store.append(TEAM, "stranger", "hi", None)
    await store.govern(TEAM, "mod", Act("remove", user="stranger"), None)  # out of a private room
    await refused(store.append(TEAM, "stranger", "again", None), ErrorCode.FORBIDDEN)
    # a moderator deletes anyone's message in their room; a member only their own
    await store.govern(TEAM, "olive", Act("role", user="bob", role="member"), None)
    sent, _ = await store.append(TEAM, "bob", "oops", None)
    await refused(store.alter(TEAM, "stranger2", "delete", sent.seq, None, None),
                  ErrorCode.FORBIDDEN)
    deleted = await store.alter(TEAM, "mod", "delete", sent.seq, None, None)
    assert deleted.message.deleted
    settings, people = await store.standings(TEAM)
    assert settings is not None and settings.private
    assert {name: s.role for name, s in people.items()} == {
        "bob": "member", "mod": "moderator", "olive": "owner"}


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # durable ones
async def test_the_audit_log_and_standings_outlive_a_reopen(store_url: str,
                                                            reopen: Opener) -> None:
    store = await reopen()
    await created(store, private=True, topic="ops")
    await store.govern(TEAM, "olive", Act("ban", user="eve", until=now_ms() + 3_600_000,
                                          reason="spam"), None)
    await store.close()
    store = await reopen()
    settings, eve = await store.standing(TEAM, "eve")
    assert settings == RoomSettings(private=True, topic="ops") and eve.is_banned(now_ms())
    log = await store.actions(TEAM)
    assert [(a.seq, a.kind, a.sender) for a in log] == [(2, "ban", "olive"), (1, "create", "olive")]
    assert isinstance(log[0], Action) and log[0].details["user"] == "eve"
    assert [a.seq for a in await store.actions(TEAM, before=2)] == [1]
    await refused(store.append(TEAM, "eve", "hi", None), ErrorCode.FORBIDDEN)


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # shareable
async def test_a_ban_on_one_node_stops_sends_on_another_from_its_seq_on(
        store_url: str, reopen: Opener) -> None:
    """Two nodes on one database: bob sends through one as fast as it takes
    them while the other bans him; no message of his is stored after the ban."""
    here, there = await reopen(), await reopen()
    await created(here)
    sends = [asyncio.ensure_future(there.append(TEAM, "bob", f"m{i}", None))
             for i in range(300)]
    await asyncio.wait(sends[:20])  # some are stored before the ban
    ban = await here.govern(TEAM, "olive", Act("ban", user="bob"), None)
    sends += [asyncio.ensure_future(there.append(TEAM, "bob", "late", None))]
    outcomes = await asyncio.gather(*sends, return_exceptions=True)
    stored = [m.seq for m, _ in (o for o in outcomes if isinstance(o, tuple))]
    refusals = [o for o in outcomes if isinstance(o, ChatError)]
    assert stored and max(stored) < ban.action.seq
    assert refusals and all(r.code is ErrorCode.FORBIDDEN for r in refusals)
    assert len(stored) + len(refusals) == len(sends)
