"""Direct conversations opened: the room of a set of people, and word to each of them.

What a direct conversation is (its room's name, who may enter it, how many
one person may open) is :mod:`app.chat.directs`; this service opens one:
recorded in the store as the people's own room, each of the others told
with a ``direct`` event wherever they are connected. Joining it is
:mod:`app.chat.rooms`' like any room.
"""

from __future__ import annotations

import logging
from typing import Any

from ..settings import Settings
from ..store import MessageStore
from .connections import Connection, Connections, person_room
from .directs import Openings, direct_room
from .protocol import DirectRequest
from .rooms import no_directs
from .wire import Wire
from ..core.errors import ChatError, ErrorCode

log = logging.getLogger("app.chat")

Ack = dict[str, Any]


class Directs:
    def __init__(self, settings: Settings, store: MessageStore, connections: Connections,
                 wire: Wire) -> None:
        self.settings = settings
        self.store = store
        self.connections = connections
        self.wire = wire
        self.openings = Openings(settings.max_new_directs_per_person)

    def check_enabled(self) -> None:
        if not self.settings.jwt_secret:
            raise no_directs()

    async def open(self, conn: Connection, req: DirectRequest) -> Ack:
        """Open (or find again) the direct conversation of ``conn``'s person and
        the people named; they are told with a ``direct`` event."""
        self.check_enabled()
        self.connections.limit(conn, "direct", "direct conversations opened")
        people = sorted({conn.name, *req.people})
        if len(people) < 2:
            raise ChatError(ErrorCode.BAD_REQUEST, "name someone other than yourself")
        room = direct_room(people)
        self.openings.open(conn.name, room, people)
        await self.store.open_direct(room, people)
        for name in people:
            if name != conn.name:
                await self.wire.emit("direct", {"room": room, "with": people,
                                                "from": conn.name}, room=person_room(name))
        log.info("direct sid=%s name=%r room=%s people=%d", conn.sid, conn.name, room,
                 len(people))
        return {"room": room, "with": people}
