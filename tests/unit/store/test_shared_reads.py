"""app/store/shared.py through Deadlines: the joins of a room that ask for the
same page in one turn of the loop share one read; the next turn reads again.
(A room's read receipts are shared the same way, in their wire form, by the
chat's Rooms: tests/unit/test_reading.py.)"""

from __future__ import annotations

import asyncio

from app.core.models import Page, RoomName
from app.store.deadline import Deadlines
from app.store.memory import MemoryStore

from ...conftest import until


class Counted(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.pages = 0

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        self.pages += 1
        return await super().page(room, before=before, after=after, limit=limit)


async def test_a_page_asked_in_one_turn_is_read_once_and_again_the_next_turn() -> None:
    store = Counted()
    room = RoomName("r")
    await store.append(room, "ann", "hi", None)
    shared = Deadlines(store, timeout=5, max_pending=100)
    asks = [asyncio.ensure_future(shared.page(room)) for _ in range(50)]
    other = asyncio.ensure_future(shared.page(RoomName("elsewhere")))
    answers = await asyncio.gather(*asks)
    assert store.pages == 2  # r once, elsewhere once
    assert all([m.text for m in answer.messages] == ["hi"] for answer in answers)
    assert (await other).messages == []
    await store.append(room, "bob", "there", None)  # a later turn reads what is stored by then
    assert [m.text for m in (await shared.page(room)).messages] == ["hi", "there"]
    assert store.pages == 3


async def test_one_caller_cancelled_does_not_cancel_the_read_for_the_others() -> None:
    store = Counted()
    shared = Deadlines(store, timeout=5, max_pending=100)
    first = asyncio.ensure_future(shared.page(RoomName("r")))
    second = asyncio.ensure_future(shared.page(RoomName("r")))
    await until(lambda: store.pages == 1)  # (both are waiting on the one read)
    first.cancel()
    assert (await second).messages == []
    assert first.cancelled() and store.pages == 1


async def test_the_same_page_asked_in_one_turn_is_read_once() -> None:
    store = Counted()
    room = RoomName("r")
    for i in range(3):
        await store.append(room, "ann", f"m{i}", None)
    shared = Deadlines(store, timeout=5, max_pending=100)
    same = [asyncio.ensure_future(shared.page(room, after=1, limit=10)) for _ in range(20)]
    different = asyncio.ensure_future(shared.page(room, after=2, limit=10))
    pages = await asyncio.gather(*same)
    assert store.pages == 2
    assert all([m.seq for m in page.messages] == [2, 3] for page in pages)
    assert [m.seq for m in (await different).messages] == [3]
