"""app/store/batching.py: group commit, with a write function of the test's own
(a batch that fails for one append's sake is written again one by one)."""

from __future__ import annotations

import asyncio

import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import Message, RoomName
from app.store.batching import Append, AppendQueue, Write, Written


class Outage(Exception):
    """The backend is unreachable."""


def make_queue(poison: str, outage: bool = False) -> tuple[AppendQueue, list[int]]:
    batches: list[int] = []

    async def write(batch: list[Write]) -> list[Written | ChatError]:
        batches.append(len(batch))
        if outage:
            raise Outage("down")
        appends = [a for a in batch if isinstance(a, Append)]
        if any(a.text == poison for a in appends):
            raise ValueError("this row cannot be written")
        return [(Message(a.room, i + 1, a.sender, a.text, 0, a.client_id), True)
                for i, a in enumerate(appends)]

    queue = AppendQueue(write, lambda exc: isinstance(exc, Outage), "test")
    queue.start()
    return queue, batches


async def test_one_bad_append_fails_alone() -> None:
    queue, batches = make_queue(poison="bad")
    texts = ["a", "b", "bad", "c"]
    results = await asyncio.gather(*(queue.append(Append(RoomName("r"), "s", t, None))
                                     for t in texts), return_exceptions=True)
    assert [r[0].text if isinstance(r, tuple) else type(r).__name__ for r in results] \
        == ["a", "b", "ValueError", "c"]
    assert batches == [4, 1, 1, 1, 1]  # the batch, then each append alone
    await queue.close()


async def test_an_outage_fails_the_whole_batch_as_unavailable() -> None:
    queue, batches = make_queue(poison="", outage=True)
    results = await asyncio.gather(*(queue.append(Append(RoomName("r"), "s", t, None))
                                     for t in "abc"), return_exceptions=True)
    assert all(isinstance(r, ChatError) and r.code == ErrorCode.UNAVAILABLE for r in results)
    assert batches == [3]  # not retried one by one: the backend is down for all
    await queue.close()


async def test_the_writer_outlives_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    """A write that ends its task (a driver raising CancelledError, never
    cancelled): the appends it was writing are refused unavailable, the writer
    is restarted for the rest and for later ones, the stop is logged at ERROR
    and reported by status() until a batch is written again."""
    crashes = [asyncio.CancelledError()]
    written: list[str] = []

    async def write(batch: list[Write]) -> list[Written | ChatError]:
        if crashes:
            raise crashes.pop()
        appends = [a for a in batch if isinstance(a, Append)]
        written.extend(a.text for a in appends)
        return [(Message(a.room, i + 1, a.sender, a.text, 0, a.client_id), True)
                for i, a in enumerate(appends)]

    queue = AppendQueue(write, lambda exc: False, "test")
    queue.start()
    first = asyncio.ensure_future(queue.append(Append(RoomName("r"), "s", "lost", None)))
    with pytest.raises(ChatError) as refused:
        await asyncio.wait_for(first, 5)
    assert refused.value.code is ErrorCode.UNAVAILABLE
    assert "the writer stopped (cancelled)" in queue.status()
    assert any(r.levelname == "ERROR" and "writer stopped" in r.getMessage()
               for r in caplog.records)
    message, created = await asyncio.wait_for(
        queue.append(Append(RoomName("r"), "s", "after", None)), 5)
    assert (message.text, created, written) == ("after", True, ["after"])
    assert queue.status() == "ok"
    await queue.close()
