"""The reads asked for in one turn of the event loop go to a store's reader
thread as one job.

A reconnect storm asks for thousands of small reads within a few turns (each
joiner's standing in its room, its read position, the room's page). Handed
to the thread one at a time, each cost a wake-up of the thread, a hand-back
to the loop and the GIL passed to and fro around it: in S4 (1,000 clients
rejoining at once, ``bench/README.md``) that hand-off, not the reads, was
what kept SQLite's Roomcast behind the memory store's. Gathered per turn,
up to :data:`MAX_READS` reads cost one hand-off each way.

Order is kept: the thread runs jobs in the order they were given and a
job's reads in the order they were asked. A read's failure is its own: the
others' results stand. A read whose caller has gone (cancelled: its
deadline passed) still runs, as it would have on the thread; its result is
dropped.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

MAX_READS = 64  # reads in one job: the first asked does not wait behind a thousand

Asked = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class TurnReads:
    """``call(fn, *args)``: ``fn(*args)`` on ``executor``'s thread, with the other
    calls of the same turn."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._asked: list[Asked] = []

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._give, loop)
        self._asked.append((fn, args, future))
        return future

    def _give(self, loop: asyncio.AbstractEventLoop) -> None:
        asked, self._asked = self._asked, []
        for start in range(0, len(asked), MAX_READS):
            job = asked[start:start + MAX_READS]
            try:
                done = self._executor.submit(_run, [(fn, args) for fn, args, _ in job])
            except RuntimeError as exc:  # the executor was shut down
                _settle(job, None, exc)
                continue
            done.add_done_callback(functools.partial(_hand_back, loop, job))


def _run(reads: list[tuple[Callable[..., Any], tuple[Any, ...]]]
         ) -> list[tuple[bool, Any]]:
    """(On the thread.) Each read's result, or the exception it raised."""
    results: list[tuple[bool, Any]] = []
    for fn, args in reads:
        try:
            results.append((True, fn(*args)))
        except Exception as exc:
            results.append((False, exc))
    return results


def _hand_back(loop: asyncio.AbstractEventLoop, job: list[Asked],
               done: Future[list[tuple[bool, Any]]]) -> None:
    """(On the thread.) The job's results to the loop, in one callback."""
    exc = RuntimeError("the read was not run") if done.cancelled() else done.exception()
    results = None if exc is not None else done.result()
    try:
        loop.call_soon_threadsafe(_settle, job, results, exc)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


def _settle(job: list[Asked], results: list[tuple[bool, Any]] | None,
            exc: BaseException | None) -> None:
    for index, (_, _, future) in enumerate(job):
        if future.done():
            continue
        if results is None:
            future.set_exception(exc or RuntimeError("the read was not run"))
            continue
        ok, value = results[index]
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
