"""One contract, every store: read markers, unread counts, mentions, direct
conversations (app.store.markers)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.models import UNREAD_COUNTED, Reading, RoomName
from app.store import MessageStore
from app.store.markers import RECEIPTS_LISTED, YOUR_ROOMS_LISTED

from .conftest import Opener

LOBBY = RoomName("lobby")


async def test_entering_a_room_starts_the_marker_at_its_latest(store: MessageStore) -> None:
    """Nothing is unread on arrival; entering again leaves the marker where it was."""
    for i in range(3):
        await store.append(LOBBY, "bob", f"m{i}", None)
    assert await store.mark("alice", LOBBY) == Reading(LOBBY, 3, 0, 0, 3)
    await store.append(LOBBY, "bob", "new", None)
    assert await store.mark("alice", LOBBY) == Reading(LOBBY, 3, 1, 0, 4)
    empty = RoomName("empty")
    assert await store.mark("alice", empty) == Reading(empty, 0, 0, 0, 0)


async def test_a_marker_moves_forward_only_and_never_past_the_latest(
        store: MessageStore) -> None:
    await store.mark("alice", LOBBY)
    for i in range(5):
        await store.append(LOBBY, "bob", f"m{i}", None)
    assert (await store.mark("alice", LOBBY, 3)).read == 3
    assert await store.mark("alice", LOBBY, 1) == Reading(LOBBY, 3, 2, 0, 5)  # not back
    assert (await store.mark("alice", LOBBY, 99)).read == 5  # not past the latest
    assert await store.readings("alice") == [Reading(LOBBY, 5, 0, 0, 5)]


async def test_unread_counts_what_others_sent_and_did_not_delete(store: MessageStore) -> None:
    await store.mark("alice", LOBBY)
    await store.append(LOBBY, "bob", "one", None)
    await store.append(LOBBY, "alice", "mine", None)
    gone, _ = await store.append(LOBBY, "bob", "gone", None)
    await store.alter(LOBBY, "bob", "delete", gone.seq, None, None)
    await store.alter(LOBBY, "carol", "react", 1, "👍", None)  # a change, not a message
    (reading,) = await store.readings("alice", [LOBBY])
    assert (reading.unread, reading.latest) == (1, 5)


async def test_mentions_are_counted_after_the_marker_and_go_with_a_deleted_message(
        store: MessageStore) -> None:
    await store.mark("alice", LOBBY)
    await store.mark("bob", LOBBY)
    first, _ = await store.append(LOBBY, "bob", "@alice look", None, mentions=["alice"])
    await store.append(LOBBY, "bob", "@alice @alice and @carol", None,
                       mentions=["alice", "alice", "carol"])
    await store.append(LOBBY, "bob", "me, @bob", None, mentions=["bob"])  # not one's own
    assert await store.mark("alice", LOBBY) == Reading(LOBBY, 0, 3, 2, 3)
    assert (await store.mark("bob", LOBBY)).mentions == 0
    await store.alter(LOBBY, "bob", "delete", first.seq, None, None)
    assert await store.mark("alice", LOBBY) == Reading(LOBBY, 0, 2, 1, 4)
    assert (await store.mark("alice", LOBBY, 2)).mentions == 0
    # a mention of someone with no marker yet counts once they arrive after it
    assert (await store.readings("carol")) == []


async def test_a_repeated_send_records_its_mentions_once(store: MessageStore) -> None:
    await store.mark("alice", LOBBY)
    for _ in range(2):
        await store.append(LOBBY, "bob", "@alice", "c1", mentions=["alice"])
    assert (await store.mark("alice", LOBBY)).mentions == 1


async def test_counts_stop_at_the_cap(store: MessageStore) -> None:
    await store.mark("alice", LOBBY)
    await asyncio.gather(*(store.append(LOBBY, "bob", f"@alice {i}", None, mentions=["alice"])
                           for i in range(UNREAD_COUNTED + 5)))
    reading = await store.mark("alice", LOBBY)
    assert (reading.unread, reading.mentions) == (UNREAD_COUNTED, UNREAD_COUNTED)
    assert reading.latest == UNREAD_COUNTED + 5


async def test_your_rooms_are_kept_most_recently_used_first(store: MessageStore) -> None:
    rooms = [RoomName(f"r{i}") for i in range(YOUR_ROOMS_LISTED + 3)]
    for room in rooms:
        await store.mark("alice", room)
    await store.mark("alice", rooms[0], 0)  # reading a room uses it
    listed = [r.room for r in await store.readings("alice")]
    assert listed == [rooms[0], *reversed(rooms[3:])][:YOUR_ROOMS_LISTED]
    assert await store.readings("bob") == []
    some = await store.readings("alice", [rooms[1], RoomName("never")])
    assert [r.room for r in some] == [rooms[1]]


async def test_marks_racing_in_one_batch_keep_call_order(store: MessageStore) -> None:
    """Marks go through the write queue with the appends: a mark called after
    an append sees it; of racing marks the furthest wins."""
    await store.mark("alice", LOBBY)
    results = await asyncio.gather(store.append(LOBBY, "bob", "a", None),
                                   store.mark("alice", LOBBY, 1),
                                   store.mark("alice", LOBBY, 0),
                                   store.append(LOBBY, "bob", "b", None),
                                   store.mark("alice", LOBBY, 2))
    assert [r.read for r in results if isinstance(r, Reading)] == [1, 1, 2]


async def test_a_crowd_marking_at_once_gets_each_its_own_reading(store: MessageStore) -> None:
    """A crowd joining (or reading) at once is one batch: each mark still gets
    the counts of its own person, room and marker."""
    rooms = [RoomName(f"crowd{i}") for i in range(3)]
    people = [f"p{i}" for i in range(4)]
    for room in rooms:
        for name in people:
            await store.mark(name, room)
    for r, room in enumerate(rooms):  # room r: r + 1 messages from each person
        for name in people:
            for i in range(r + 1):
                await store.append(room, name, f"{name} {i}", None, mentions=[people[0]])
    # each person has read a different way into each room
    expected = {}
    for r, room in enumerate(rooms):
        latest = (r + 1) * len(people)
        for p, name in enumerate(people):
            read = min(p, latest)
            await store.mark(name, room, read)
            others = sum(1 for seq in range(read + 1, latest + 1)
                         if people[(seq - 1) // (r + 1)] != name)
            mentions = others if p == 0 else 0
            expected[(name, room)] = Reading(room, read, others, mentions, latest)
    keys = [(name, room) for room in rooms for name in reversed(people)]
    got = await asyncio.gather(*(store.mark(name, room) for name, room in keys))
    assert got == [expected[key] for key in keys]
    listed = await store.readings(people[0], rooms)
    assert sorted(listed, key=lambda r: r.room) == [expected[(people[0], room)] for room in rooms]


async def test_receipts_list_the_furthest_readers_first(store: MessageStore) -> None:
    for i in range(3):
        await store.append(LOBBY, "bob", f"m{i}", None)
    await store.mark("alice", LOBBY)
    await store.mark("carol", LOBBY)
    await store.mark("dave", RoomName("elsewhere"))
    await store.mark("carol", LOBBY, 3)
    assert (await store.receipts(LOBBY))[:2] == [("carol", 3), ("alice", 3)]
    many = RoomName("many")
    await store.append(many, "bob", "x", None)
    for i in range(RECEIPTS_LISTED + 2):
        await store.mark(f"p{i}", many)
    assert len(await store.receipts(many)) == RECEIPTS_LISTED


async def test_a_direct_conversation_knows_its_participants(store: MessageStore) -> None:
    dm = RoomName("dm:test")
    await store.open_direct(dm, ["alice", "bob"])
    await store.open_direct(dm, ["alice", "bob"])  # idempotent
    assert await store.participants([dm, LOBBY]) == {dm: frozenset({"alice", "bob"})}
    assert [r.room for r in await store.readings("bob")] == [dm]
    await store.append(dm, "alice", "hi", None, mentions=["bob"])
    assert await store.readings("bob") == [Reading(dm, 0, 1, 1, 1)]


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_markers_and_mentions_survive_reopening(store_url: str, reopen: Opener) -> None:
    first = await reopen()
    await first.mark("alice", LOBBY)
    await first.append(LOBBY, "bob", "@alice", None, mentions=["alice"])
    await first.append(LOBBY, "bob", "more", None)
    await first.mark("alice", LOBBY, 1)
    await first.open_direct(RoomName("dm:x"), ["alice", "bob"])
    await first.close()
    second = await reopen()
    assert await second.readings("alice", [LOBBY]) == [Reading(LOBBY, 1, 1, 0, 2)]
    assert await second.participants([RoomName("dm:x")]) == {
        RoomName("dm:x"): frozenset({"alice", "bob"})}


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_two_stores_on_one_database_share_markers(store_url: str, reopen: Opener) -> None:
    """Two nodes: a mark on one is seen by the other, and racing marks of one
    person keep the furthest."""
    a, b = await reopen(), await reopen()
    for i in range(10):
        await a.append(LOBBY, "bob", f"m{i}", None)
    await a.mark("alice", LOBBY, 0)
    await asyncio.gather(*(store.mark("alice", LOBBY, seq)
                           for seq in range(1, 11) for store in (a, b)))
    assert [r.read for r in await a.readings("alice")] == [10]
    assert (await b.mark("alice", LOBBY, 4)).read == 10
