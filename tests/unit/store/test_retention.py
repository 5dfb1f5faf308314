"""Retention in every store: the oldest entries go, in seq order, with what
hangs on them; the stream says what is gone, and the room's seq goes on."""

from __future__ import annotations

import pytest

from app.core.models import RoomName, now_ms
from app.core.policy import Act
from app.store import MessageStore
from app.store.search import terms

from ...conftest import past
from .conftest import Opener

ROOM = RoomName("old")


async def filled(store: MessageStore, count: int) -> None:
    for i in range(count):
        await store.append(ROOM, "ann", f"word{i} hello @bob", None, mentions=["bob"])


async def test_the_oldest_entries_go_in_order_and_the_stream_says_so(
        store: MessageStore) -> None:
    await filled(store, 10)
    react = await store.alter(ROOM, "bob", "react", 2, "👍", None)  # seq 11
    assert react.change is not None
    cutoff = react.change.ts + 1  # everything so far is older
    past(react.change.ts)
    await store.govern(ROOM, "root", Act("mute", user="eve", until=now_ms() + 60_000), None,
                       power=2)  # seq 12, an action
    assert await store.purge(ROOM, cutoff, 4) == 4  # one batch: seqs 1-4
    assert await store.purge(ROOM, cutoff, 100) == 7  # 5-11; the mute is newer
    assert await store.purge(ROOM, cutoff, 100) == 0
    on = await store.page(ROOM, after=0)
    assert (on.purged, [e.seq for e in on.messages + on.changes]) == (11, [12])
    assert on.gone(0) == {"from": 1, "to": 11, "why": "retention"}
    assert on.gone(11) is None
    back = await store.page(ROOM)
    assert (back.messages, back.more, back.latest) == ([], False, 12)
    assert back.gone(None) == {"from": 1, "to": 11, "why": "retention"}
    message, _ = await store.append(ROOM, "ann", "after", None)
    assert message.seq == 13  # the seq goes on
    assert (await store.search([ROOM], terms("word1"))).messages == []  # out of search too
    readings = await store.readings("bob", [ROOM])
    assert all(r.mentions == 0 for r in readings)
    assert [a.kind for a in await store.actions(ROOM)] == ["mute"]  # the audit log stays


async def test_a_purge_stops_at_the_first_entry_it_keeps(store: MessageStore) -> None:
    await filled(store, 3)
    cutoff = now_ms() + 1
    assert await store.purge(ROOM, cutoff - 10**9, 100) == 0  # nothing that old
    assert await store.purge(RoomName("empty"), cutoff, 100) == 0
    await store.purge(ROOM, cutoff, 100)
    assert (await store.heads())[ROOM] == 3  # all gone, and the room's head kept


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # durable ones
async def test_what_was_removed_stays_removed_after_a_reopen(store_url: str,
                                                             reopen: Opener) -> None:
    store = await reopen()
    await filled(store, 5)
    await store.purge(ROOM, now_ms() + 1, 100)
    await store.close()
    store = await reopen()
    page = await store.page(ROOM, after=2)
    assert (page.purged, page.messages, page.latest) == (5, [], 5)
    message, _ = await store.append(ROOM, "ann", "next", None)
    assert message.seq == 6
