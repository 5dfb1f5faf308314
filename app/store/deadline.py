"""Every store call on a deadline, and a bound on how many may be in flight.

:class:`Deadlines` wraps any :class:`~app.store.MessageStore`. A call that
has not finished after ``timeout`` seconds is answered ``unavailable``: a
database link that goes silent (no error, no answer) then costs a client a
few seconds, not for ever. The call itself is not cancelled, only no longer
waited for: cancelling a query on a silent link would wait on that link too,
and an append may still commit, which is why clients resend with the same
``client_id`` (stored once). Calls still running inside the store, answered
or not, count against ``max_pending``; past it, appends and reads are
answered ``unavailable`` at once, so an outage cannot pile up work without
bound.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from ..core.errors import ChatError, ErrorCode
from ..core.models import Action, Attachments, Message, Page, Reading, RoomName
from ..core.policy import Act, RoomSettings, Standing
from . import MessageStore
from .search import SEARCH_TIMEOUT, SearchPage
from .shared import TurnShared
from .stream import Altered, Governed

log = logging.getLogger(__name__)

T = TypeVar("T")


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Deadlines:
    def __init__(self, store: MessageStore, *, timeout: float, max_pending: int) -> None:
        self.store = store
        self.timeout = timeout
        self.max_pending = max_pending
        self.pending = 0  # calls running inside the store
        self.timed_out = 0
        self.closed = False
        self.shared = TurnShared()

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        if self.pending >= self.max_pending:
            close = getattr(call, "close", None)
            if close is not None:
                close()  # never started
            raise ChatError(ErrorCode.UNAVAILABLE, f"the message store has {self.pending} "
                            "calls waiting; try again later")
        task = asyncio.ensure_future(call)
        self.pending += 1
        task.add_done_callback(self._finished)
        # Waited for until done or the deadline, whichever comes first; never
        # cancelled by it, nor by the caller's cancellation (one future and one
        # timer: asyncio.wait_for over asyncio.shield took 11.9 us, this 8.2; four
        # of them a join)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        wake = functools.partial(_wake, waiter)
        task.add_done_callback(wake)
        timer = loop.call_later(self.timeout, wake, None)
        try:
            await waiter
        finally:
            timer.cancel()
        if not task.done():
            self.timed_out += 1
            log.warning("store %s took over %g s: answered unavailable", what, self.timeout)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store did not answer in time")
        return task.result()

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if not task.cancelled():
            task.exception()  # retrieved: a late failure nobody waits for is not news

    async def append(self, room: RoomName, sender: str, text: str, client_id: str | None,
                     reply_to: int | None = None, mentions: Sequence[str] = (), *,
                     power: int = 0, attachments: Attachments = ()) -> tuple[Message, bool]:
        return await self._call("append", self.store.append(
            room, sender, text, client_id, reply_to, mentions, power=power,
            attachments=attachments))

    async def govern(self, room: RoomName, sender: str, act: Act, client_id: str | None, *,
                     power: int = 0) -> Governed:
        return await self._call("govern", self.store.govern(room, sender, act, client_id,
                                                            power=power))

    async def standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        return await self._call("standing", self.store.standing(room, name))

    async def standings(self, room: RoomName, limit: int = 1000
                        ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        return await self._call("standings", self.store.standings(room, limit))

    async def rules(self, name: str, rooms: Sequence[RoomName]
                    ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        return await self._call("rules", self.store.rules(name, rooms))

    async def governed(self) -> dict[RoomName, RoomSettings]:
        return await self._call("governed", self.store.governed())

    async def purge(self, room: RoomName, before: int, limit: int) -> int:
        return await self._call("purge", self.store.purge(room, before, limit))

    async def actions(self, room: RoomName, *, before: int | None = None,
                      limit: int = 50) -> list[Action]:
        return await self._call("actions", self.store.actions(room, before=before,
                                                              limit=limit))

    async def alter(self, room: RoomName, sender: str, kind: str, target: int,
                    value: str | None, client_id: str | None, *,
                    moderator: bool = False, edits_from: int | None = None) -> Altered:
        return await self._call("alter", self.store.alter(
            room, sender, kind, target, value, client_id, moderator=moderator,
            edits_from=edits_from))

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        return await self.shared.call(("page", room, before, after, limit), lambda: self._call(
            "page", self.store.page(room, before=before, after=after, limit=limit)))

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20,
                     timeout: float = SEARCH_TIMEOUT) -> SearchPage:
        return await self._call("search", self.store.search(
            rooms, terms, cursor=cursor, limit=limit, timeout=min(timeout, self.timeout)))

    async def mark(self, name: str, room: RoomName, seq: int | None = None) -> Reading:
        return await self._call("mark", self.store.mark(name, room, seq))

    async def readings(self, name: str, rooms: Sequence[RoomName] | None = None
                       ) -> list[Reading]:
        return await self._call("readings", self.store.readings(name, rooms))

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        return await self._call("receipts", self.store.receipts(room))

    async def open_direct(self, room: RoomName, names: Sequence[str]) -> None:
        await self._call("open_direct", self.store.open_direct(room, names))

    async def participants(self, rooms: Sequence[RoomName]) -> dict[RoomName, frozenset[str]]:
        return await self._call("participants", self.store.participants(rooms))

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        return await self._call("cursor", self.store.cursor(owner, room))

    async def advance(self, owner: str, room: RoomName, seq: int) -> int:
        return await self._call("advance", self.store.advance(owner, room, seq))

    async def heads(self) -> dict[RoomName, int]:
        return await self._call("heads", self.store.heads())

    async def cursors(self, owner: str) -> dict[RoomName, int]:
        return await self._call("cursors", self.store.cursors(owner))

    async def set_cursors(self, owner: str, positions: Mapping[RoomName, int]) -> None:
        await self._call("set_cursors", self.store.set_cursors(owner, positions))

    async def drop_cursors(self, owner: str) -> None:
        await self._call("drop_cursors", self.store.drop_cursors(owner))

    async def put_record(self, kind: str, key: str, body: dict[str, Any]) -> None:
        await self._call("put_record", self.store.put_record(kind, key, body))

    async def records(self, kind: str) -> dict[str, dict[str, Any]]:
        return await self._call("records", self.store.records(kind))

    async def record(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._call("record", self.store.record(kind, key))

    async def drop_record(self, kind: str, key: str) -> bool:
        return await self._call("drop_record", self.store.drop_record(kind, key))

    async def drop_records(self, kind: str) -> int:
        return await self._call("drop_records", self.store.drop_records(kind))

    async def ping(self) -> None:
        await self._call("ping", self.store.ping())

    def abort(self) -> None:
        self.store.abort()

    def status(self) -> str:
        return self.store.status()

    async def close(self) -> None:
        """Close the store once (shutdown closes it in its order; the context
        that opened it closes it again, which then does nothing)."""
        if self.closed:
            return
        self.closed = True
        await self.store.close()
