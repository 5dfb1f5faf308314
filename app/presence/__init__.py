"""Presence: which names are in which rooms, and when a name arrives or leaves.

A name is present in a room while any of its connections has joined it.
``join`` and ``leave`` say whether the call changed that, so the caller
emits exactly one ``presence`` event per name. Implementations:

=============  ===========================  ===============================
scheme         module                       for
=============  ===========================  ===============================
``memory``     :mod:`app.presence.memory`   one node
=============  ===========================  ===============================
"""

from __future__ import annotations

from typing import Protocol

from ..models import RoomName, Sid


class Presence(Protocol):
    async def join(self, room: RoomName, name: str, sid: Sid) -> bool:
        """Record that connection ``sid`` of ``name`` is in ``room``;
        True if ``name`` was not present there before."""

    async def leave(self, room: RoomName, name: str, sid: Sid) -> bool:
        """Forget that connection; True if ``name`` is no longer present."""

    async def members(self, room: RoomName) -> list[str]:
        """The names present in ``room``, sorted."""

    async def rooms(self) -> list[tuple[RoomName, int]]:
        """Every room with anyone present, with its member count, by name."""

    async def close(self) -> None:
        """Release the backend."""


def open_presence() -> Presence:
    from .memory import MemoryPresence
    return MemoryPresence()
