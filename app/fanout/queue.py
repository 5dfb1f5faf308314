"""The ordered, bounded queue of events a node publishes to the others.

Emits put their encoded event here, in the order they were emitted (which,
for a room's messages, is seq order), and one publisher takes them out in
batches and publishes each batch in that order on one connection: so the
other nodes receive a room's events in the order they happened here, and an
emit never waits for Redis.

The queue holds at most ``max_bytes`` of encoded events. What does not fit
is *lost* to the other nodes, and so is, once a publish fails, the failed
batch, everything queued behind it and everything emitted until the
publisher can publish again (:meth:`suspend`, :meth:`resume`): late events
would only replay a past the other nodes' clients have already moved on
from (a member list that has changed since, typing long over). The queue
remembers the rooms lost events concerned (:class:`Lost`), and the publisher
then tells the other nodes to have their clients catch up on those rooms
from the store (the room's latest seq, who is present now). Nothing a client
relies on is lost that way: messages are stored before they are emitted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_LOST_ROOMS = 1_000  # past it, "every room" is remembered instead


@dataclass
class Lost:
    """The rooms whose events the other nodes may have missed (``everything``:
    too many to name, or events not addressed to one room)."""

    rooms: set[str] = field(default_factory=set)
    everything: bool = False

    def add(self, room: object) -> None:
        if self.everything:
            return
        if not isinstance(room, str) or len(self.rooms) >= MAX_LOST_ROOMS:
            self.everything = True
            self.rooms.clear()
        else:
            self.rooms.add(room)

    def __bool__(self) -> bool:
        return self.everything or bool(self.rooms)

    def names(self) -> list[str] | None:
        """The rooms, sorted; None for every room."""
        return None if self.everything else sorted(self.rooms)


class PublishQueue:
    """Encoded events waiting to be published, oldest first, at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._events: deque[tuple[object, bytes]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.lost = Lost()
        self.lost_events = 0  # events never published, since start
        self.closed = False
        self.suspended = False

    def __len__(self) -> int:
        return len(self._events)

    @property
    def size(self) -> int:
        """Bytes queued."""
        return self._bytes

    def put(self, room: object, payload: bytes) -> bool:
        """Queue ``payload`` (an event for ``room``); False if it did not fit (or
        the queue is closed or suspended), in which case ``room`` is remembered
        as lost."""
        if self.closed or self.suspended or self._bytes + len(payload) > self.max_bytes:
            self.lost_events += 1
            self.lost.add(room)
            return False
        self._events.append((room, payload))
        self._bytes += len(payload)
        self._ready.set()
        return True

    async def batch(self, max_events: int, max_bytes: int,
                    timeout: float) -> list[tuple[object, bytes]]:
        """The oldest events, at least one unless ``timeout`` s pass first (then
        none), at most ``max_events`` and (past the first) ``max_bytes``. With
        lost rooms to tell of, it does not wait."""
        if not self._events:
            if self.closed or self.lost:
                return []
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        taken: list[tuple[object, bytes]] = []
        size = 0
        events = self._events
        while events and len(taken) < max_events:
            room, payload = events[0]
            if taken and size + len(payload) > max_bytes:
                break
            events.popleft()
            taken.append((room, payload))
            size += len(payload)
        self._bytes -= size
        return taken

    def lose(self, rooms: Iterable[object]) -> None:
        """Remember ``rooms`` as lost (their events were taken but not published)."""
        for room in rooms:
            self.lost_events += 1
            self.lost.add(room)

    def suspend(self) -> None:
        """Publishing failed: what is queued is lost, and so is every event put
        until :meth:`resume`."""
        self.lose(room for room, _ in self._events)
        self._events.clear()
        self._bytes = 0
        self.suspended = True

    def resume(self) -> None:
        self.suspended = False

    def merge(self, lost: Lost) -> None:
        """Remember again what :meth:`take_lost` handed out and could not be told."""
        if lost.everything:
            self.lost.add(None)
        for room in lost.rooms:
            self.lost.add(room)

    def take_lost(self) -> Lost:
        lost, self.lost = self.lost, Lost()
        return lost

    def close(self) -> None:
        """Refuse further events; :meth:`batch` hands out what is queued, then
        returns at once with none."""
        self.closed = True
        self._ready.set()
