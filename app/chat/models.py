"""The values that travel between the store, the namespace and clients."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NewType

RoomName = NewType("RoomName", str)
"""A room's name: 1 to 64 ASCII letters, digits and ``_ . : -``."""

Sid = NewType("Sid", str)
"""A Socket.IO session id in the ``/chat`` namespace: one connection."""


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Message:
    """One stored chat message. ``seq`` is 1, 2, 3, ... per room, without gaps."""

    room: RoomName
    seq: int
    sender: str
    text: str
    ts: int
    client_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """The wire form: ``{"room", "seq", "from", "text", "ts", "client_id"}``."""
        return {
            "room": self.room,
            "seq": self.seq,
            "from": self.sender,
            "text": self.text,
            "ts": self.ts,
            "client_id": self.client_id,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """A slice of one room's history, ascending by seq.

    ``more`` says whether messages exist beyond the slice in the direction
    the query was paging (older for ``before`` or the latest page, newer for
    ``after``). ``latest`` is the room's highest seq when read (0 if empty).
    """

    messages: list[Message]
    more: bool
    latest: int
