"""Direct conversations: rooms only their participants may enter.

A direct conversation of a set of people (2 to :data:`MAX_PEOPLE`, in
token mode only, where a name is proven) is the room :func:`direct_room`
names: ``dm:`` and a digest of the set, so that the same people always meet
in the same room and nobody can tell who is in one from its name. Room
names with the ``dm:`` prefix are reserved: only a participant, as the
store recorded them when the conversation was opened, may join one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from ..core.errors import ChatError, ErrorCode
from ..core.models import RoomName

PREFIX = "dm:"
MAX_PEOPLE = 10
PERIOD = 3600.0  # seconds over which Openings counts
SWEEP_AT = 10_000  # pairs held before the ones with nothing recent are dropped


def is_direct(room: str) -> bool:
    return room.startswith(PREFIX)


def direct_room(people: Iterable[str]) -> RoomName:
    """The room of the conversation between ``people`` (in any order)."""
    digest = hashlib.sha256("\n".join(sorted(set(people))).encode()).hexdigest()
    return RoomName(PREFIX + digest[:40])


class Openings:
    """How many different direct conversations one person opened that include
    another, in the last :data:`PERIOD` seconds: at most ``most`` per pair
    (opening one again costs nothing). A person who opens conversation after
    conversation with the same bot or person, each with a made-up third name,
    is refused before they can fill its rooms. Kept per node, in memory: each
    entry is an open some connection's ``direct`` rate allowed, and entries
    older than the period are dropped as the table grows."""

    def __init__(self, most: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.most = most
        self._clock = clock
        self._opened: dict[tuple[str, str], dict[RoomName, float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> dict[RoomName, float]:
        rooms = self._opened.get(key, {})
        for room in [r for r, at in rooms.items() if at <= now - PERIOD]:
            del rooms[room]
        return rooms

    def open(self, opener: str, room: RoomName, people: Iterable[str]) -> None:
        """Count ``opener`` opening ``room`` with ``people``; refuse
        ``rate_limited`` (nothing counted) if that would pass the bound for
        one of them."""
        now = self._clock()
        others = sorted(set(people) - {opener})
        for other in others:
            rooms = self._recent((opener, other), now)
            if room not in rooms and len(rooms) >= self.most:
                wait = int((min(rooms.values()) + PERIOD - now) * 1000) + 1
                raise ChatError(ErrorCode.RATE_LIMITED, f"you opened {len(rooms)} direct "
                                f"conversations with {other!r} within the hour; try again "
                                "later", retry_after=wait)
        for other in others:
            self._opened.setdefault((opener, other), {})[room] = now
        if len(self._opened) > SWEEP_AT:
            for key in list(self._opened):
                if not self._recent(key, now):
                    del self._opened[key]
