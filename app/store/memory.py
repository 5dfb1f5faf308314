"""An in-process store for tests.

Limits: everything is lost when the process exits, and it cannot be shared
between processes, so it must never back a deployment (clients recovering
with ``since`` would see seq numbers start again at 1).
"""

from __future__ import annotations

import bisect

from ..chat.models import Message, Page, RoomName, now_ms
from . import MessageStore, check_storable, page_bounds


class MemoryStore:
    def __init__(self) -> None:
        self._rooms: dict[RoomName, list[Message]] = {}
        self._by_client_id: dict[tuple[RoomName, str, str], Message] = {}

    async def append(self, room: RoomName, sender: str, text: str,
                     client_id: str | None) -> tuple[Message, bool]:
        check_storable(sender, text, client_id)
        if client_id is not None:
            stored = self._by_client_id.get((room, sender, client_id))
            if stored is not None:
                return stored, False
        messages = self._rooms.setdefault(room, [])
        message = Message(room, len(messages) + 1, sender, text, now_ms(), client_id)
        messages.append(message)
        if client_id is not None:
            self._by_client_id[(room, sender, client_id)] = message
        return message, True

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        page_bounds(before, after, limit)
        messages = self._rooms.get(room, [])
        seqs = range(1, len(messages) + 1)  # seq n sits at index n - 1
        if after is not None:
            start = bisect.bisect_right(seqs, after)
            chunk = messages[start:start + limit]
            more = start + limit < len(messages)
        else:
            end = len(messages) if before is None else bisect.bisect_left(seqs, before)
            start = max(0, end - limit)
            chunk = messages[start:end]
            more = start > 0
        return Page(chunk, more, len(messages))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def abort(self) -> None:
        return None

    def status(self) -> str:
        return "ok"


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    return MemoryStore()
