"""What a store keeps per person: read markers, mentions, direct conversations.

A person's **read marker** in a room is the seq up to which they have read.
It only moves forward, never past the room's latest seq, and the first time
a person enters a room it starts at the room's latest (nothing is unread on
arrival). Its row (``markers``: name, room, seq, at) also makes the room one
of the person's rooms for good; ``at`` (ms) is when the person last entered
or read it, and orders "your rooms", most recent first.

A **mention** is a row (``mentions``: name, room, seq) written with the
message that mentions the person, in the same transaction; a deleted
message's mentions go with it. **Unread counts** are counted from these rows
and the messages after the marker, each up to
:data:`~app.core.models.UNREAD_COUNTED`, so a count costs at most that many
index entries however far behind a person is.

A **direct conversation** is a room with a fixed set of participants
(``directs``: room, name), recorded when it is opened; the chat layer names
such rooms and decides who may enter them.

Marks go through the store's write queue (:mod:`app.store.batching`) like
appends, so that a crowd joining at once costs one commit (and, in SQLite,
two statements however many marks: each statement gives up the GIL);
:func:`fold` decides what each mark of a batch does, the same way in every
store.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.models import RoomName, now_ms

YOUR_ROOMS_LISTED = 100  # a person's rooms in one list, most recently used first
RECEIPTS_LISTED = 100  # read markers of a room in one list, furthest read first

MarkerKey = tuple[str, RoomName]  # (name, room)


@dataclass(frozen=True, slots=True)
class Mark:
    """Move ``name``'s marker in ``room`` forward to ``seq``; with None, the
    person enters the room (a first time: the marker starts at the latest)."""

    name: str
    room: RoomName
    seq: int | None = None


def fold(marks: list[Mark], markers: dict[MarkerKey, int], heads: dict[RoomName, int]
         ) -> list[int]:
    """Apply ``marks`` in order to ``markers`` (the stored ones of the batch's
    keys; updated in place) and return each mark's marker after it. ``heads``
    are the rooms' latest seqs (a room missing has none)."""
    after = []
    for mark in marks:
        key = (mark.name, mark.room)
        head = heads.get(mark.room, 0)
        old = markers.get(key)
        if mark.seq is None:
            seq = head if old is None else old
        else:
            seq = max(old or 0, min(mark.seq, head))
        markers[key] = seq
        after.append(seq)
    return after


class UseClock:
    """The ``at`` of marker rows: wall-clock ms, but strictly increasing within
    a process, so that rooms used one after the other within a millisecond
    still list in the order they were used."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        self._last = max(now_ms(), self._last + 1)
        return self._last
