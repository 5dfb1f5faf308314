"""In-process presence.

Limits: it sees only this process's connections, so with several nodes each
would report its own members only. Entries are removed as soon as the last
connection of a name leaves a room, so an empty room costs nothing.
"""

from __future__ import annotations

import asyncio

from ..chat.models import RoomName, Sid
from . import LocalMembers, OnJoined, OnLeft, Presence


class MemoryPresence:
    def __init__(self) -> None:
        self._rooms: dict[RoomName, dict[str, set[Sid]]] = {}

    async def join(self, room: RoomName, name: str, sid: Sid) -> bool:
        sids = self._rooms.setdefault(room, {}).setdefault(name, set())
        first = not sids
        sids.add(sid)
        return first

    async def leave(self, room: RoomName, name: str, sid: Sid) -> bool:
        names = self._rooms.get(room)
        sids = names.get(name) if names is not None else None
        if names is None or sids is None or sid not in sids:
            return False
        sids.discard(sid)
        if sids:
            return False
        del names[name]
        if not names:
            del self._rooms[room]
        return True

    async def members(self, room: RoomName) -> list[str]:
        return sorted(self._rooms.get(room, ()))

    async def rooms(self) -> list[tuple[RoomName, int]]:
        return sorted((room, len(names)) for room, names in self._rooms.items())

    async def maintain(self, local: LocalMembers, on_left: OnLeft,
                       on_joined: OnJoined) -> None:
        await asyncio.Event().wait()  # nothing to repair in one process

    async def drain(self) -> list[tuple[RoomName, str]]:
        self._rooms.clear()
        return []  # one node: everyone who could be told is leaving too

    def status(self) -> str:
        return "ok"  # nothing to keep

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._rooms.clear()

    def __len__(self) -> int:
        """Connections recorded in all rooms (for leak checks)."""
        return sum(len(sids) for names in self._rooms.values() for sids in names.values())


_: type[Presence] = MemoryPresence
