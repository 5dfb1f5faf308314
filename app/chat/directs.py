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
from collections.abc import Iterable

from .models import RoomName

PREFIX = "dm:"
MAX_PEOPLE = 10


def is_direct(room: str) -> bool:
    return room.startswith(PREFIX)


def direct_room(people: Iterable[str]) -> RoomName:
    """The room of the conversation between ``people`` (in any order)."""
    digest = hashlib.sha256("\n".join(sorted(set(people))).encode()).hexdigest()
    return RoomName(PREFIX + digest[:40])
