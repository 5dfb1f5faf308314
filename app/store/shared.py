"""Identical reads begun in one turn of the event loop share one call.

When a room's members come back at once (a node restarted, a network
returned), their joins reach the same read of the same room within a turn
of the loop, hundreds at a time: one call answers them all.

Only within a turn. A joiner enters the room (from then on it is sent what
is broadcast there) and then reads; what was broadcast before it entered
must be in what it reads. Whatever is broadcast in a turn of the loop was
committed before that turn began (the store's answer comes back to the loop
as a callback of a later turn than its commit), and a read asked for in a
turn begins in it or after it (the shared call starts as a task): so every
caller in the turn reads all that was broadcast before it entered, and what
is broadcast after reaches it live. A read asked for in an earlier turn
could miss what was broadcast between it and a later joiner's entry: the
next turn starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class TurnShared:
    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future[Any]] = {}

    async def call(self, key: Hashable, start: Callable[[], Awaitable[T]]) -> T:
        """``start()``'s result, or that of the call begun this turn for ``key``.
        One caller's cancellation does not cancel it for the others."""
        future = self._calls.get(key)
        if future is None:
            if not self._calls:  # (forgotten at the start of the next turn)
                asyncio.get_running_loop().call_soon(self._calls.clear)
            future = self._calls[key] = asyncio.ensure_future(start())
            future.add_done_callback(_retrieved)
        result: T = await asyncio.shield(future)
        return result


def _retrieved(future: asyncio.Future[Any]) -> None:
    """(Its callers may all have gone: its failure is theirs, not the loop's to report.)"""
    if not future.cancelled():
        future.exception()
