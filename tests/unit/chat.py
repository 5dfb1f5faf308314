"""The chat's services with plain calls: the memory store, memory presence and a
Wire that records what would go out, with no socket and no server."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from app.chat.connections import Connection
from app.chat.services import Chat
from app.core.models import Sid
from app.metrics import Metrics
from app.presence.memory import MemoryPresence
from app.settings import Settings
from app.store.memory import MemoryStore

from ..conftest import UNLIMITED

Sent = tuple[str, Any]  # (event, data) as one connection receives it


class RecordingWire:
    """The transport's rooms, and what each connection would have received."""

    def __init__(self) -> None:
        self.rooms: defaultdict[str, set[Sid]] = defaultdict(set)
        self.received: defaultdict[Sid, list[Sent]] = defaultdict(list)
        self.disconnected: list[Sid] = []

    async def emit(self, event: str, data: Any = None, *, room: str | None = None,
                   skip_sid: Sid | Sequence[Sid] | None = None,
                   ignore_queue: bool = False) -> None:
        skipped = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        for sid in sorted(self.rooms.get(room or "", set()) - skipped):
            self.received[sid].append((event, data))

    async def enter_room(self, sid: Sid, room: str) -> None:
        self.rooms[room].add(sid)

    async def leave_room(self, sid: Sid, room: str) -> None:
        self.rooms[room].discard(sid)

    async def disconnect(self, sid: Sid) -> None:
        self.disconnected.append(sid)

    def transport(self, sid: Sid) -> str:
        return "websocket"

    def take(self, conn: Connection, event: str | None = None) -> list[Any]:
        """What ``conn`` received (of ``event``) since last asked."""
        got, self.received[conn.sid] = self.received[conn.sid], []
        return [data for name, data in got if event is None or name == event]


class Harness:
    """A node's chat services on in-memory backends."""

    def __init__(self, **settings: Any) -> None:
        self.settings = Settings(**{**UNLIMITED, **settings})
        self.store = MemoryStore()
        self.presence = MemoryPresence()
        self.wire = RecordingWire()
        self.chat = Chat(self.settings, self.store, self.presence, Metrics(), self.wire)
        self._sids = 0

    async def connect(self, name: str, **auth: Any) -> Connection:
        self._sids += 1
        return await self.chat.connections.open(Sid(f"sid{self._sids}"),
                                                auth or {"name": name}, "127.0.0.1")
