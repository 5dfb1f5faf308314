"""The roster: who is in a room as its members are told it, whatever its size.

Presence (:mod:`app.presence`) knows who is in a room; the roster decides
what a member hears of it, so that a room of 10,000 people costs each of them
a bounded amount rather than the traffic of all the others:

* **The list, paged.** A join's ack (and a ``catch_up``) carries the room's
  ``count`` and its ``members``: every name of a small room (up to
  ``--presence-list-max``), else a first page of as many, with ``members_next`` to
  ask ``members`` for the rest (:meth:`Roster.page`), each page costing about
  its size whatever the room's.
* **Changes, at once in a small room, coalesced in a large one.** In a room
  of up to ``--presence-list-max`` names each name's arrival or departure is
  one ``presence`` event with the whole list, as it always was. In a larger
  one they are gathered and told once per ``--presence-tick`` per node:
  ``{room, joined, left, count}`` (a name that came and went within the tick
  is not told at all; at most ``--presence-max-names`` of each, with ``more``
  if there were others), so a member hears at most one presence event a tick
  per room and node, of bounded size, and ``count`` is always the room's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..core.models import RoomName, Sid
from ..presence import Presence
from ..settings import Settings
from .connections import log_failure
from .wire import Wire

log = logging.getLogger("app.chat")


class Roster:
    def __init__(self, settings: Settings, presence: Presence, wire: Wire) -> None:
        self.settings = settings
        self.presence = presence
        self.wire = wire
        # rooms with changes not yet told: room -> name -> "join" | "leave"
        self._changes: dict[RoomName, dict[str, str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._telling: asyncio.Task[None] | None = None

    # -- the list -------------------------------------------------------------------

    async def listing(self, room: RoomName) -> dict[str, Any]:
        """``{"members", "count"}`` and, for a large room, ``members_next``."""
        count = await self.presence.count(room)
        if count <= self.settings.presence_list_max:
            members = await self.presence.members(room)
            return {"members": members, "count": len(members)}
        return await self.page(room, None, self.settings.presence_list_max, count=count)

    async def page(self, room: RoomName, cursor: str | None, limit: int, *,
                   count: int | None = None) -> dict[str, Any]:
        """A page of the room's names (from ``cursor``), its ``count`` and the
        cursor of the rest (``members_next``), if any."""
        names, rest = await self.presence.page(room, cursor, limit)
        reply: dict[str, Any] = {
            "members": names,
            "count": count if count is not None else await self.presence.count(room)}
        if rest is not None:
            reply["members_next"] = rest
        return reply

    # -- changes ----------------------------------------------------------------------

    async def changed(self, room: RoomName, name: str, event: str, *,
                      skip_sid: Sid | list[Sid] | None = None) -> None:
        """``name`` arrived in (``event`` "join") or left ("leave") ``room``:
        tell its members, at once or with the tick's other changes."""
        if room not in self._changes:
            count = await self.presence.count(room)
            if count <= self.settings.presence_list_max and room not in self._changes:
                members = await self.presence.members(room)
                await self.wire.emit("presence", {"room": room, "user": name, "event": event,
                                                  "members": members, "count": len(members)},
                                     room=room, skip_sid=skip_sid)
                return
        pending = self._changes.setdefault(room, {})
        if pending.get(name, event) != event:  # came and went (or went and came back)
            del pending[name]  # within the tick: nothing to tell
        else:
            pending[name] = event
        if self._timer is None and self._telling is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.settings.presence_tick, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._telling = asyncio.create_task(self._tell(), name="presence tick")
        self._telling.add_done_callback(self._told)

    def _told(self, task: asyncio.Task[None]) -> None:
        self._telling = None
        log_failure(task)
        if self._changes and self._timer is None:  # what came while it told
            self._timer = asyncio.get_running_loop().call_later(
                self.settings.presence_tick, self._tick)

    async def _tell(self) -> None:
        changes, self._changes = self._changes, {}
        cap = self.settings.presence_max_names
        for room, pending in changes.items():
            if not pending:
                continue
            joined = sorted(n for n, e in pending.items() if e == "join")
            left = sorted(n for n, e in pending.items() if e == "leave")
            try:
                event: dict[str, Any] = {"room": room, "joined": joined[:cap],
                                         "left": left[:cap]}
                if len(joined) > cap or len(left) > cap:
                    event["more"] = True
                count = await self.presence.count(room)
                if count <= self.settings.presence_list_max:  # small again: the whole list
                    event["members"] = await self.presence.members(room)
                    count = len(event["members"])
                event["count"] = count
                await self.wire.emit("presence", event, room=room)
            except Exception:
                log.exception("telling %s of %d presence changes failed", room, len(pending))

    async def flush(self) -> None:
        """Tell what is gathered now (the node is shutting down)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._telling is not None:
            await asyncio.gather(self._telling, return_exceptions=True)
        if self._changes:
            await self._tell()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._telling
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._changes.clear()
