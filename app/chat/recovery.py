"""Recovery: telling connections to catch up on what they were not sent.

A connection whose client catches up by itself (it connects with
``auth.catch_up``) is not cut when it reads slower than its rooms speak:
past its backlog bound the server drops the events of :data:`RECOVERABLE`
waiting for it and sends it no more of them; once it has read what is left
it gets one ``catch_up`` per room it is in (:meth:`Recovery.resume`), read
after its live events flow again, so that what it fetches and what it is
sent meet with no gap.

When this node's link to the others (Redis fan-out) may have missed events
of some rooms (it came back after an outage, or another node could not
publish some), each such room with members here gets one ``catch_up`` event,
to this node's members only: the room's latest seq (a client that has less
asks ``history`` for the rest) and who is present now, and the room's
rules are applied afresh to this node's members (a ban whose event was lost
still takes the person out). Requests that come while a round runs are
merged into the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from ..core.errors import ChatError
from ..core.models import RoomName, Sid
from ..store import MessageStore
from .connections import log_failure
from .governance import Governance
from .rooms import Rooms
from .wire import Wire

log = logging.getLogger("app.chat")

# Room events a client that catches up gets again: entries of a room's stream
# (history), its members (in ``catch_up``) and typing signals (gone anyway).
# The others (acks, mentions, read markers, receipts, reports) are never dropped.
RECOVERABLE = frozenset({"message", "change", "presence", "typing"})


class Recovery:
    def __init__(self, store: MessageStore, rooms: Rooms, governance: Governance,
                 wire: Wire) -> None:
        self.store = store
        self.rooms = rooms  # (and their roster: who is present, as members are told)
        self.governance = governance
        self.wire = wire
        # rooms whose members must be told to catch up; None: all
        self._behind: set[RoomName] | None = set()
        self._catching_up: asyncio.Task[None] | None = None

    def catch_up(self, rooms: Collection[str] | None) -> None:
        """Fan-out may have missed other nodes' events for ``rooms`` (None: every
        room): tell this node's members of each to catch up."""
        if rooms is None:
            self._behind = None
        elif self._behind is not None:
            self._behind.update(RoomName(room) for room in rooms)
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._send_catch_ups(), name="catch-up")
            self._catching_up.add_done_callback(log_failure)

    async def _send_catch_ups(self) -> None:
        while self._behind is None or self._behind:
            here = self.rooms.here()
            rooms = here if self._behind is None else here & self._behind
            self._behind = set()
            for room in sorted(rooms):
                try:
                    await self.governance.recheck(room)
                    page = await self.store.page(room, limit=1)
                    listing = await self.rooms.roster.listing(room)
                except ChatError as exc:  # the next message's gap still shows it
                    log.warning("could not tell %s to catch up: %s", room, exc.message)
                    continue
                await self.wire.emit("catch_up", {"room": room, "seq": page.latest,
                                                  **listing},
                                     room=room, ignore_queue=True)
            log.info("told %d rooms to catch up", len(rooms))

    async def resume(self, sid: Sid, rooms: Collection[RoomName]) -> None:
        """Connection ``sid`` was not sent some events of ``rooms`` and is live
        again: tell it where each room is now (a ``catch_up`` to it alone)."""
        for room in sorted(rooms):
            try:
                page = await self.store.page(room, limit=1)
                listing = await self.rooms.roster.listing(room)
            except ChatError as exc:  # the next message's gap still shows it
                log.warning("could not tell sid=%s to catch up on %s: %s", sid, room,
                            exc.message)
                continue
            await self.wire.emit("catch_up", {"room": room, "seq": page.latest, **listing},
                                 room=sid, ignore_queue=True)
        log.info("sid=%s caught up: told it where its %d rooms are", sid, len(rooms))

    async def stop(self) -> None:
        task = self._catching_up
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
