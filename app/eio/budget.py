"""The node's budget for unsent data: however many readers stall at once.

Each session is bounded on its own (``max_backlog_bytes``), but 10,000
readers that stall together (a mobile network dropping, a partition) could
each hold up to that bound. :class:`BacklogBudget` bounds their sum: a session
with unsent data (bytes its WebSocket transport has not handed to the kernel,
or packets queued for its next poll) is *behind*, and while any is, a sweep
every :data:`SWEEP_S` adds up what they hold. Between sweeps what is written
to sessions that are behind is added to the last sum as it is written
(what they took meanwhile is not subtracted, so the sum only overestimates),
and the write that takes it past the budget sweeps at once, before more is
buffered. Past the budget the largest backlogs are cut first, until the rest
fit in :data:`LOW_WATER` of it (so the next sweep is some way off): the
readers furthest behind are the ones least likely to catch up, and they free
the most; once their transports have closed, the memory they held goes back
to the system (:func:`release_freed_memory`). An idle node runs no sweep.

The same sweep counts *late* deliveries: frames handed to a session that are
still unwritten ``late_after`` seconds on (:meth:`Session.overdue`), whether
or not there is a budget; the count (``late``) is what an operator alerts on
when deliveries stall with nobody cut.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

SWEEP_S = 0.1  # seconds between sweeps while any session is behind
LOW_WATER = 0.9  # of the budget: what a sweep that cuts leaves


class Behind(Protocol):
    closed: bool

    def backlog_bytes(self) -> int: ...

    def overdue(self, now: float, after: float) -> int: ...


class BacklogBudget:
    def __init__(self, budget: int, cut: Callable[[Behind], None],
                 late_after: float = 5.0) -> None:
        self.budget = budget  # bytes; 0: no budget
        self.late_after = late_after  # seconds
        self.late = 0  # frames counted late (a counter)
        self._cut = cut
        self._behind: set[Behind] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._release: asyncio.TimerHandle | None = None  # after cuts (one at a time)
        self._cut_since_release = False  # cuts after the pending release was set
        self.total = 0  # at the last sweep
        self._growth = 0  # written to sessions behind since then
        self.cuts = 0

    def note(self, session: Behind, written: int) -> None:
        """``written`` bytes went to ``session``, which has unsent data: count it
        until it has none."""
        if not self.budget:
            return
        self._behind.add(session)
        self._growth += written
        if self.total + self._growth > self.budget:
            self.sweep()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SWEEP_S, self.sweep)

    def sweep(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._growth = 0
        held: list[tuple[int, Behind]] = []
        total = late = 0
        now = asyncio.get_running_loop().time()
        for session in list(self._behind):
            size = 0 if session.closed else session.backlog_bytes()
            if size:
                held.append((size, session))
                total += size
                late += session.overdue(now, self.late_after)
            else:
                self._behind.discard(session)
        self.late += late
        if self.budget and total > self.budget:
            held.sort(key=lambda entry: entry[0], reverse=True)
            cut = 0
            for size, session in held:
                if total <= self.budget * LOW_WATER:
                    break
                self._cut(session)
                self._behind.discard(session)
                total -= size
                cut += 1
            self.cuts += cut
            log.warning("unsent data over the node's budget of %d bytes: cut the %d "
                        "sessions furthest behind", self.budget, cut)
            # their buffers are freed as their transports close, a turn or two on
            if self._release is None:
                self._release = asyncio.get_running_loop().call_later(SWEEP_S, self._released)
            else:
                self._cut_since_release = True
        self.total = total
        if self._behind:
            self._timer = asyncio.get_running_loop().call_later(SWEEP_S, self.sweep)

    def _released(self) -> None:
        """At most one release a sweep apart, and one after the last cut."""
        release_freed_memory()
        self._release = None
        if self._cut_since_release:
            self._cut_since_release = False
            self._release = asyncio.get_running_loop().call_later(SWEEP_S, self._released)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._release is not None:
            self._release.cancel()
            self._release = None
        self._behind.clear()


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to do
        return None
    return trim


_malloc_trim = _libc_trim()


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``).
    The buffers of sessions cut together are megabytes in pieces too small for
    their own mappings: freed, they stay resident in the heap for reuse, and
    the server's memory would stay at the peak of the burst that cut them."""
    if _malloc_trim is not None:
        _malloc_trim(0)
