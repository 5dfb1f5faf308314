"""SQLite connections of their own for expensive reads, each stopped at its deadline.

A search may cost far more than the reads a join, a history page or a send
need (:mod:`app.store.search` bounds it by the searched rooms, not by a
constant). So searches do not queue on the store's reader thread: they run
on :class:`Lanes`, a few threads each with its own read connection, and a
search still running at its deadline is stopped inside SQLite
(``Connection.interrupt()``), not merely no longer waited for: its lane is
free again at once, and nothing runs on after its answer has gone.

How many searches may wait for a lane is bounded by the caller (the chat's
search gate); a search that waits past its deadline is answered without
having run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..core.errors import ChatError, ErrorCode
from .search import too_slow

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Lane:
    """One thread and its connection. ``running`` and ``stopped`` (under
    ``lock``) make an interrupt stop the read it was meant for, whether that
    read has begun or not, and never the next one."""

    def __init__(self, name: str) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()
        self.running: object | None = None  # the token of the read under way
        self.stopped: object | None = None  # the token of a read stopped before it began

    def run(self, token: object, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self.conn is not None
        with self.lock:
            if self.stopped is token:
                raise sqlite3.OperationalError("interrupted")
            self.running = token
        try:
            return fn(self.conn)
        finally:
            with self.lock:
                self.running = None

    def interrupt(self, token: object) -> None:
        with self.lock:
            if self.running is token and self.conn is not None:
                self.conn.interrupt()
            else:
                self.stopped = token


class Lanes:
    """``count`` read connections to run expensive reads on, one at a time each."""

    def __init__(self, count: int, name: str) -> None:
        self._lanes = [_Lane(f"{name}-{i}") for i in range(count)]
        self._free: asyncio.Queue[_Lane] = asyncio.Queue()
        self.interrupted = 0  # reads stopped at their deadline (or when nobody waited)
        self.stopped = 0  # of those, the ones that ended stopped (not done anyway)

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            lane.conn = await loop.run_in_executor(lane.thread, connect)
            self._free.put_nowait(lane)

    async def run(self, what: str, fn: Callable[[sqlite3.Connection], T],
                  timeout: float) -> T:
        """``fn(conn)`` on a free lane, answered ``unavailable`` if it has not
        finished ``timeout`` seconds after the call (waiting for a lane counts),
        and then stopped; ``sqlite3.Error`` is ``unavailable`` too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            lane = await asyncio.wait_for(self._free.get(), timeout)
        except TimeoutError:
            raise too_slow(what, timeout) from None
        token = object()
        future = loop.run_in_executor(lane.thread, lane.run, token, fn)
        future.add_done_callback(lambda done: self._release(lane, done))
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
        except TimeoutError:
            lane.interrupt(token)
            self.interrupted += 1
            log.warning("%s stopped at its deadline of %g s", what, timeout)
            raise too_slow(what, timeout) from None
        except asyncio.CancelledError:
            lane.interrupt(token)  # nobody waits for it any more
            raise
        except sqlite3.Error as exc:
            log.warning("sqlite %s failed: %s", what, exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc

    def _release(self, lane: _Lane, done: asyncio.Future[Any]) -> None:
        """The lane is free once its read has ended (at once after an interrupt)."""
        if not done.cancelled() and isinstance(done.exception(), sqlite3.OperationalError) \
                and "interrupted" in str(done.exception()):
            self.stopped += 1
        self._free.put_nowait(lane)

    @property
    def free(self) -> int:
        """Lanes with no read on them now."""
        return self._free.qsize()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            if lane.conn is not None:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    lane.conn.interrupt()
                await loop.run_in_executor(lane.thread, lane.conn.close)
            lane.thread.shutdown(wait=True)

    def abort(self) -> None:
        for lane in self._lanes:
            if lane.conn is not None:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    lane.conn.interrupt()
