"""Reads: where each person stands in each room, and what they are shown of it.

``read`` moves a person's read marker forward: their other connections (on
any node) are told at once, the room's members (with receipts on) in the
next round (:mod:`app.chat.receipts`). ``rooms`` lists the rooms with
members now and the person's own rooms, most recently used first, with
where they stand in each.
"""

from __future__ import annotations

from typing import Any

from ..core.models import RoomName, now_ms
from ..core.policy import admits
from ..presence import Presence
from ..settings import Settings
from ..store import MessageStore
from .connections import Connection, Connections, person_room
from .directs import is_direct
from .protocol import ReadRequest
from .receipts import Receipts
from .wire import Wire

Ack = dict[str, Any]


class Reads:
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 connections: Connections, wire: Wire) -> None:
        self.settings = settings
        self.store = store
        self.presence = presence
        self.connections = connections
        self.wire = wire
        self.receipts = Receipts(self._send_receipts)

    async def mark(self, conn: Connection, req: ReadRequest) -> Ack:
        """Move the person's read marker in a room forward; where they stand now."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "read", "read marks")
        reading = await self.store.mark(conn.name, req.room, req.seq)
        for limited in (False, True):
            await self.wire.emit("read", reading.as_dict(), skip_sid=conn.sid,
                                 room=person_room(conn.name, limited=limited))
        if self.settings.read_receipts:
            self.receipts.add(req.room, conn.name, reading.read)
        return reading.as_dict()

    async def _send_receipts(self, room: RoomName, data: dict[str, Any]) -> None:
        await self.wire.emit("receipt", data, room=room)

    async def rooms(self, conn: Connection) -> Ack:
        """The rooms with members now (no direct conversations), and the person's
        own rooms, most recently used first, with where they stand in each (a
        direct conversation also with its people)."""
        self.connections.limit(conn, "rooms", "rooms requests")
        present = dict(await self.presence.rooms())
        mine = await self.store.readings(conn.name)
        directs = await self.store.participants([r.room for r in mine if is_direct(r.room)])
        # governed rooms listed only to those they admit: none from which one is
        # banned, and a private room to its members only
        rules = await self.store.rules(conn.name, sorted({r.room for r in mine} | set(present)))
        now = now_ms()
        kept_out = {room for room, (settings, standing) in rules.items() if not admits(
            room, settings, standing, conn.identity.power, now)}
        listed: list[dict[str, Any]] = []
        for reading in mine:
            if is_direct(reading.room) and conn.name not in directs.get(reading.room, ()):
                continue  # (a room named dm:... before direct conversations were)
            if reading.room in kept_out:
                continue
            entry = {"name": reading.room, "members": present.get(reading.room, 0),
                     "read": reading.read, "unread": reading.unread,
                     "mentions": reading.mentions, "seq": reading.latest}
            if reading.room in directs:
                entry["with"] = sorted(directs[reading.room])
            listed.append(entry)
        seen = {r.room for r in mine}
        listed += [{"name": name, "members": count} for name, count in present.items()
                   if name not in seen and not is_direct(name) and name not in kept_out]
        return {"rooms": listed}
