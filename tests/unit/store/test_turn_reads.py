"""app/store/turn_reads.py: the reads asked in one turn run on the thread as
one job (at most MAX_READS each), in the order asked; one read's failure or
its caller's cancellation is its own; and through the SQLite store a storm
of joins' reads is a handful of jobs, not one each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from app.core.models import RoomName
from app.store.sqlite import SqliteStore
from app.store.turn_reads import MAX_READS, TurnReads

from ...conftest import until


class CountingExecutor(ThreadPoolExecutor):
    """A real one-thread executor that counts the jobs it is given."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    counting = CountingExecutor()
    yield counting
    counting.shutdown()


async def test_one_turns_reads_are_one_job_in_the_order_asked(executor: CountingExecutor) -> None:
    reads = TurnReads(executor)
    ran: list[int] = []
    threads: set[int] = set()

    def read(n: int) -> int:
        ran.append(n)
        threads.add(threading.get_ident())
        return n * n
    futures = [reads.call(read, n) for n in range(10)]
    assert await asyncio.gather(*futures) == [n * n for n in range(10)]
    assert executor.jobs == 1 and ran == list(range(10))
    assert threads and threading.get_ident() not in threads
    assert await reads.call(read, 11) == 121  # a later turn: a job of its own
    assert executor.jobs == 2


async def test_a_storm_of_reads_is_cut_into_jobs_of_max_reads(executor: CountingExecutor) -> None:
    reads = TurnReads(executor)
    count = MAX_READS * 3 + 1
    results = await asyncio.gather(*[reads.call(lambda n=n: n) for n in range(count)])
    assert results == list(range(count)) and executor.jobs == 4


async def test_a_failing_read_fails_alone(executor: CountingExecutor) -> None:
    reads = TurnReads(executor)

    def fail() -> None:
        raise ValueError("no such row")
    before, failing, after = reads.call(lambda: 1), reads.call(fail), reads.call(lambda: 3)
    assert await before == 1 and await after == 3
    with pytest.raises(ValueError, match="no such row"):
        await failing


async def test_a_cancelled_caller_leaves_the_others_their_results(
        executor: CountingExecutor) -> None:
    reads = TurnReads(executor)
    gone, staying = reads.call(lambda: "gone"), reads.call(lambda: "staying")
    gone.cancel()
    assert await staying == "staying" and gone.cancelled()


async def test_reads_after_shutdown_fail_rather_than_hang(executor: CountingExecutor) -> None:
    reads = TurnReads(executor)
    executor.shutdown()
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(reads.call(lambda: 1), 5)


async def test_the_sqlite_stores_joins_reads_go_in_a_few_jobs(
        tmp_path: Path, executor: CountingExecutor) -> None:
    """Three hundred people's standing in a room, asked together (a storm's
    joins), come back right in a handful of trips to the reader thread."""
    store = SqliteStore(tmp_path / "chat.db")
    await store.start()
    try:
        room = RoomName("lobby")
        await store.append(room, "alice", "hello", "c1")
        store._reads = TurnReads(executor)  # the store's own reads, counted
        found = await asyncio.gather(*[store.standing(room, f"user{n}") for n in range(300)])
        pages = await asyncio.gather(*[store.page(room, after=0) for _ in range(3)])
        assert len(found) == 300 and all(standing.role is None for _, standing in found)
        assert all([m.text for m in page.messages] == ["hello"] for page in pages)
        assert executor.jobs == (300 + MAX_READS - 1) // MAX_READS + 1
    finally:
        await store.close()


async def test_reads_the_executor_drops_at_shutdown_fail_rather_than_hang(
        executor: CountingExecutor) -> None:
    reads = TurnReads(executor)
    gate = threading.Event()
    running = reads.call(gate.wait, 10)
    await until(lambda: executor.jobs == 1)
    waiting = reads.call(lambda: "never run")
    await until(lambda: executor.jobs == 2)
    executor.shutdown(wait=False, cancel_futures=True)  # drops the waiting job
    gate.set()
    assert await running is True
    with pytest.raises(RuntimeError, match="not run"):
        await asyncio.wait_for(waiting, 5)
