"""In-process presence.

Limits: it sees only this process's connections, so with several nodes each
would report its own members only. Entries are removed as soon as the last
connection of a name leaves a room, so an empty room costs nothing.

Housekeeping (:meth:`maintain`) compares the entries with the node's live
connections every ``interval`` seconds and repairs what a failure left
behind (a leave or join whose record failed half way), announcing each name
it thereby removes or adds.
"""

from __future__ import annotations

import asyncio
import bisect
import logging

from ..core.models import RoomName, Sid
from . import LocalMembers, OnJoined, OnLeft, Presence


log = logging.getLogger(__name__)


class MemoryPresence:
    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._rooms: dict[RoomName, dict[str, set[Sid]]] = {}
        self._failing = ""  # what the last repair raised
        self.rounds = 0  # repairs completed (that waiting on one can count)

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

    async def count(self, room: RoomName) -> int:
        return len(self._rooms.get(room, ()))

    async def page(self, room: RoomName, cursor: str | None,
                   limit: int) -> tuple[list[str], str | None]:
        """By name: the cursor is the last name listed."""
        names = sorted(self._rooms.get(room, ()))
        start = 0 if cursor is None else bisect.bisect_right(names, cursor)
        listed = names[start:start + limit]
        more = start + limit < len(names)
        return listed, (listed[-1] if more and listed else None)

    async def rooms(self) -> list[tuple[RoomName, int]]:
        return sorted((room, len(names)) for room, names in self._rooms.items())

    async def maintain(self, local: LocalMembers, on_left: OnLeft,
                       on_joined: OnJoined) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.repair(local, on_left, on_joined)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failing = f"repair: {type(exc).__name__}: {exc}"
                log.exception("presence repair failed")
            else:
                self._failing = ""

    async def repair(self, local: LocalMembers, on_left: OnLeft, on_joined: OnJoined) -> None:
        """Make the entries what the live connections say; announce the names
        that thereby leave or arrive. (Nothing here suspends between reading
        and changing: no join or leave can run in between.)"""
        live = {(room, sid, name) for room, sid, name in local()}
        recorded = {(room, sid, name) for room, names in self._rooms.items()
                    for name, sids in names.items() for sid in sids}
        stale, missing = recorded - live, live - recorded
        left = [(room, name) for room, sid, name in sorted(stale)
                if await self.leave(room, name, sid)]
        joined = [(room, name) for room, sid, name in sorted(missing)
                  if await self.join(room, name, sid)]
        if stale or missing:
            log.warning("presence: repaired %d stale and %d missing entries",
                        len(stale), len(missing))
        for room, name in left:
            await on_left(room, name)
        for room, name in joined:
            await on_joined(room, name)
        self.rounds += 1

    async def drain(self) -> list[tuple[RoomName, str]]:
        self._rooms.clear()
        return []  # one node: everyone who could be told is leaving too

    async def hand_off(self, grace: float) -> None:
        return None  # one node: nobody else to keep them for

    def status(self) -> str:
        return self._failing or "ok"

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._rooms.clear()

    def __len__(self) -> int:
        """Connections recorded in all rooms (for leak checks)."""
        return sum(len(sids) for names in self._rooms.values() for sids in names.values())


_: type[Presence] = MemoryPresence
