"""Consumers' cursors: how far a bot (or any client) has handled each room, kept
by the server so that a consumer that restarts reads on where it stopped.

A cursor belongs to the connection's person and has a name of the client's
choosing (one person may run several consumers). ``join`` with ``cursor``
reads on from where it stands (:meth:`app.chat.rooms.Rooms.join`);
``advance`` moves it forward once the consumer has handled entries. The
store keeps it (never back, never past the room's latest).
"""

from __future__ import annotations

from typing import Any

from ..core.models import RoomName
from ..store import MessageStore
from .connections import Connection, Connections
from .protocol import AdvanceRequest

Ack = dict[str, Any]


def owner(name: str, cursor: str) -> str:
    """The store's key of ``name``'s cursor ``cursor`` (a name has no newline)."""
    return f"{name}\n{cursor}"


class Cursors:
    def __init__(self, store: MessageStore, connections: Connections) -> None:
        self.store = store
        self.connections = connections

    async def position(self, conn: Connection, room: RoomName, cursor: str) -> int | None:
        """Where ``conn``'s person's ``cursor`` stands in ``room`` (None: nowhere yet)."""
        return await self.store.cursor(owner(conn.name, cursor), room)

    async def advance(self, conn: Connection, req: AdvanceRequest) -> Ack:
        """Move the cursor forward to ``req.seq``; the ack says where it stands."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "read", "cursor moves")
        now = await self.store.advance(owner(conn.name, req.cursor), req.room, req.seq)
        return {"room": req.room, "cursor": req.cursor, "seq": now}
