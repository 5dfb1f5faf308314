"""Timers for many sessions at once: the heartbeat's.

Every session has a timer running at all times (its next ping, or the
deadline for its pong). As a loop timer of its own each costs a TimerHandle,
a copy of the context, its arguments and a libuv timer (about 0.6 KB of an
idle connection's 5.6), and a heap operation to set and another to cancel,
with every pong. :class:`TimerWheel` rounds each due time up to a slot of
:data:`RESOLUTION` seconds and keeps, per slot, the sessions due then with
their callbacks; one loop timer is armed for the earliest slot. Setting and
cancelling are a dict insertion and removal; the sessions due together are
called in one turn of the loop, in the order they were set. A timer fires at
most a slot late, never early.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RESOLUTION = 0.05  # seconds: how late a timer may fire


class TimerWheel:
    def __init__(self, resolution: float = RESOLUTION) -> None:
        self.resolution = resolution
        self._slots: dict[int, dict[Any, Callable[[Any], None]]] = {}
        self._order: list[int] = []  # the slots that have entries, earliest first (a heap)
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._slots.values())

    def set(self, owner: Any, delay: float, callback: Callable[[Any], None]) -> int:
        """Call ``callback(owner)`` ``delay`` seconds from now (at most a slot
        later); the slot, for :meth:`cancel`. One timer per owner and slot."""
        loop = asyncio.get_running_loop()
        slot = math.ceil((loop.time() + delay) / self.resolution)
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
            if self._armed_for is None or slot < self._armed_for:
                self._arm(loop, slot)
        entries[owner] = callback
        return slot

    def cancel(self, owner: Any, slot: int) -> None:
        """The timer set for ``owner`` in ``slot`` will not fire (an emptied
        slot is dropped when its time comes)."""
        entries = self._slots.get(slot)
        if entries is not None:
            entries.pop(owner, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(slot * self.resolution, self._fire)
        self._armed_for = slot

    def _fire(self) -> None:
        self._handle = self._armed_for = None
        loop = asyncio.get_running_loop()
        # (a loop timer may fire a hair early: its slot is then taken at the next)
        now = math.floor(loop.time() / self.resolution + 1e-6)
        order = self._order
        while order and order[0] <= now:
            entries = self._slots.pop(heapq.heappop(order), None)
            for owner, callback in (entries or {}).items():
                try:
                    callback(owner)
                except Exception:  # one session's failure must not stop the others'
                    log.exception("a timer's callback failed")
        if order:
            self._arm(loop, order[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._armed_for = None
        self._slots.clear()
        self._order.clear()
