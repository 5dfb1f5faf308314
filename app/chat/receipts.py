"""Read receipts: a room's members see up to where each of them has read.

Receipts are sent in rounds: the marks made on this node during one
:data:`INTERVAL` go to each room's members as one ``receipt`` event (per
person only the furthest mark), so however many members read each new
message, a room gets at most one receipt event per node per interval, of at
most :data:`~app.store.markers.RECEIPTS_LISTED` people (those who read
furthest; the others' markers are in the next join ack).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..store.markers import RECEIPTS_LISTED
from ..core.models import RoomName

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between rounds

Emit = Callable[[RoomName, dict[str, Any]], Awaitable[None]]


def receipt_list(marks: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """The wire form: ``[{"user", "seq"}]``, furthest read first."""
    return [{"user": name, "seq": seq}
            for name, seq in sorted(marks, key=lambda m: (-m[1], m[0]))]


class Receipts:
    def __init__(self, emit: Emit, interval: float = INTERVAL) -> None:
        self._emit = emit
        self._interval = interval
        self._due: dict[RoomName, dict[str, int]] = {}
        self._round: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Rooms with receipts waiting for the next round."""
        return len(self._due)

    def add(self, room: RoomName, name: str, seq: int) -> None:
        """``name`` has read ``room`` up to ``seq``: tell the room in the next round."""
        marks = self._due.setdefault(room, {})
        marks[name] = max(seq, marks.get(name, 0))
        if self._round is None:
            self._round = asyncio.create_task(self._send_round(), name="read-receipts")

    async def _send_round(self) -> None:
        try:
            await asyncio.sleep(self._interval)
        finally:
            self._round = None
        due, self._due = self._due, {}
        for room, marks in due.items():
            try:
                await self._emit(room, {"room": room, "receipts": receipt_list(
                    marks.items())[:RECEIPTS_LISTED]})
            except Exception:
                log.exception("read receipts for %s failed", room)

    async def close(self) -> None:
        """Stop; receipts not sent yet are dropped (the members read them on join)."""
        task, self._round = self._round, None
        self._due.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
