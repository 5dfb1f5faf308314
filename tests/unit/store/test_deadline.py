"""app/store/deadline.py: a store call past its deadline is answered
``unavailable`` and left running (counted as pending until it ends); a
caller's cancellation leaves it running too; a call's own failure is the
caller's."""

from __future__ import annotations

import asyncio

import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import RoomName
from app.store.deadline import Deadlines
from app.store.memory import MemoryStore

from ...conftest import until


class Held(MemoryStore):
    """Its cursor reads wait until released; they fail when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fail = False
        self.finished = 0

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        await self.release.wait()
        self.finished += 1
        if self.fail:
            raise ChatError(ErrorCode.CONFLICT, "told to fail")
        return 7


async def test_a_call_past_its_deadline_is_unavailable_and_runs_on() -> None:
    store = Held()
    deadlines = Deadlines(store, timeout=0.05, max_pending=10)
    with pytest.raises(ChatError) as refused:
        await deadlines.cursor("ann", RoomName("r"))
    assert refused.value.code == ErrorCode.UNAVAILABLE
    assert deadlines.timed_out == 1 and deadlines.pending == 1
    store.release.set()
    await until(lambda: deadlines.pending == 0)
    assert store.finished == 1  # it ran to its end
    assert await deadlines.cursor("ann", RoomName("r")) == 7  # and the next is answered


async def test_a_cancelled_caller_leaves_the_call_running() -> None:
    store = Held()
    deadlines = Deadlines(store, timeout=5, max_pending=10)
    caller = asyncio.ensure_future(deadlines.cursor("ann", RoomName("r")))
    await until(lambda: deadlines.pending == 1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    store.release.set()
    await until(lambda: deadlines.pending == 0)
    assert store.finished == 1 and deadlines.timed_out == 0


async def test_a_failure_is_the_callers_and_past_max_pending_none_start() -> None:
    store = Held()
    store.fail = True
    deadlines = Deadlines(store, timeout=5, max_pending=2)
    held = [asyncio.ensure_future(deadlines.cursor("ann", RoomName("r"))) for _ in range(2)]
    await until(lambda: deadlines.pending == 2)
    with pytest.raises(ChatError) as full:
        await deadlines.cursor("ann", RoomName("r"))
    assert full.value.code == ErrorCode.UNAVAILABLE and "2 calls waiting" in full.value.message
    store.release.set()
    for call in held:
        with pytest.raises(ChatError) as failed:
            await call
        assert failed.value.code == ErrorCode.CONFLICT
    assert store.finished == 2 and deadlines.pending == 0
