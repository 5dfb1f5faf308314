"""The latest entries of the rooms webhooks want, as this node stored them.

Every webhook this node delivers reads a room's stream here first, and from
the store only what is not here (entries another node stored, or older than
what is kept): ten webhooks on one room cost no store read at all while
they keep up. A room's entries are kept contiguous by seq (one that comes
after a gap starts the room's tail again), the last :data:`PER_ROOM` of each
room and :data:`ENTRIES` (and :data:`BYTES`) in all: the rooms least
recently written lose theirs first. Entries are immutable: shared, never copied; so is each
entry's event, encoded once for all the webhooks that deliver it.
"""

from __future__ import annotations

import json
from collections import OrderedDict

from ..core.models import Change, Entry, Message, RoomName
from .webhook import Webhook, encode

PER_ROOM = 256
ENTRIES = 20_000
BYTES = 16 * 1024 * 1024  # of entries (at most, counted before they are kept), and of events


def weight(entry: Entry) -> int:
    """At most the bytes ``entry`` holds (its text as UTF-8, and the rest)."""
    if isinstance(entry, Message):
        return 256 + 4 * len(entry.text)
    if isinstance(entry, Change):
        return 256 + 4 * len(entry.value or "")
    return 256 + 4 * len(json.dumps(entry.details))


class Tail:
    def __init__(self, per_room: int = PER_ROOM, entries: int = ENTRIES,
                 size: int = BYTES) -> None:
        self.per_room = per_room
        self.bound = entries
        self.size = size
        self.rooms: OrderedDict[RoomName, list[Entry]] = OrderedDict()
        self.count = 0
        self.weight = 0  # of the entries kept
        self.events: OrderedDict[tuple[RoomName, int], bytes] = OrderedDict()  # encoded
        self.events_size = 0

    def add(self, entry: Entry) -> None:
        room = entry.room
        kept = self.rooms.get(room)
        if kept and entry.seq <= kept[-1].seq:
            return  # known (or older than the tail): the store has it
        if kept and entry.seq == kept[-1].seq + 1:
            kept.append(entry)
            if len(kept) > self.per_room:
                self._forget([kept.pop(0)])
        else:  # a first entry, or one after a gap
            self._forget(kept or [])
            self.rooms[room] = [entry]
        self.count += 1
        self.weight += weight(entry)
        self.rooms.move_to_end(room)
        while self.count > self.bound or self.weight > self.size:
            _, dropped = self.rooms.popitem(last=False)
            self._forget(dropped)

    def _forget(self, entries: list[Entry]) -> None:
        self.count -= len(entries)
        self.weight -= sum(weight(e) for e in entries)

    def cut(self, room: RoomName, before: int) -> None:
        """Retention removes ``room``'s entries stored before ``before`` (ms):
        so does the tail (a webhook behind them reads the store, which says
        they are gone)."""
        kept = self.rooms.get(room)
        if not kept or kept[0].ts >= before:
            return
        gone = [e for e in kept if e.ts < before]
        self._forget(gone)
        for entry in gone:
            if (found := self.events.pop((room, entry.seq), None)) is not None:
                self.events_size -= len(found)
        if len(gone) == len(kept):
            del self.rooms[room]
        else:  # (kept contiguous: from the first one kept on)
            self.rooms[room] = kept[kept.index(gone[-1]) + 1:]

    def encoded(self, hook: Webhook, entry: Entry) -> bytes:
        """``hook``'s event of ``entry``, encoded: once for all the webhooks whose
        event of it is the same (those with no mention in it)."""
        if hook.mentions(entry):
            return encode(hook.event(entry))
        key = (entry.room, entry.seq)
        found = self.events.get(key)
        if found is None:
            found = self.events[key] = encode(hook.event(entry))
            self.events_size += len(found)
            while len(self.events) > self.bound or self.events_size > self.size:
                self.events_size -= len(self.events.popitem(last=False)[1])
        return found

    def read(self, room: RoomName, after: int, limit: int) -> list[Entry] | None:
        """Up to ``limit`` entries after seq ``after``, if the tail holds the one
        just after it; None if it does not (read the store)."""
        kept = self.rooms.get(room)
        if not kept or not kept[0].seq <= after + 1 <= kept[-1].seq:
            return None
        start = after + 1 - kept[0].seq
        return kept[start:start + limit]
