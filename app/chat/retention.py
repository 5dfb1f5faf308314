"""Retention: removing what rooms no longer keep.

Every ``--retention-interval`` seconds each node looks for entries past
their room's retention (``--retention``, or the shorter one a room's owner
set: :class:`~app.core.policy.RoomSettings`) and has the store remove them
(:meth:`~app.store.MessageStore.purge`), ``--retention-batch`` at a time: each
batch is one short transaction, and the next waits four times as long as it
took (:data:`SHARE`), so a purge holds the store's writer (SQLite's one
thread) a fifth of the time at most and never for long at once: a million
messages go in minutes while the chat's writes go first. (Batches of 1,000
back to back made S1's p50 8.5 times slower on SQLite while a million
went; bench/README.md.)
Several nodes may look at once: the store lets one purge a room at a time.

What is removed is said, never silently skipped: a read of the stream into
the removed range answers ``gone`` (:meth:`~app.core.models.Page.gone`), and
the first page of a room's history says where the room now begins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..core.models import Attachments, RoomName, now_ms
from ..metrics import Metrics
from ..settings import Settings
from ..store import MessageStore
from .connections import log_failure

log = logging.getLogger("app.chat")

SHARE = 0.2  # of the store's time a purge may take: after each batch, a pause 4x as long


class Retention:
    def __init__(self, settings: Settings, store: MessageStore, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.removed = 0  # entries removed by this node
        # told of each room's cut after a purge: (room, ms) before which its
        # entries are gone (the webhooks' tail of recent entries)
        self.watchers: list[Callable[[RoomName, int], None]] = []
        # told of the files of the messages a purge removed (the attachments
        # service, which deletes them: set by the chat)
        self.files_gone: Callable[[Attachments], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")
        self._task.add_done_callback(log_failure)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.retention_interval)
            try:
                await self.sweep()
            except Exception as exc:  # the store was down, say: the next round tries again
                log.warning("retention: a sweep failed (%s); trying again in %g s", exc,
                            self.settings.retention_interval)

    async def kept(self) -> dict[RoomName, int]:
        """Each room with a retention, and how many seconds it keeps."""
        bound = self.settings.retention
        rooms = dict.fromkeys(await self.store.heads(), bound) if bound else {}
        for room, settings in (await self.store.governed()).items():
            if settings.retention:
                rooms[room] = min(settings.retention, bound) if bound else settings.retention
        return rooms

    async def sweep(self) -> int:
        """One look at every room: remove what is past its retention; how much."""
        now, total = now_ms(), 0
        for room, seconds in sorted((await self.kept()).items()):
            total += await self.purge(room, now - seconds * 1000)
        if total:
            log.info("retention: removed %d entries", total)
        return total

    async def purge(self, room: RoomName, before: int) -> int:
        """Remove ``room``'s entries stored before ``before`` (ms), batch by batch."""
        batch, total = self.settings.retention_batch, 0
        while True:
            started = time.perf_counter()
            # the files of the messages this batch may remove: read first, theirs
            # deleted once the store says how far the batch went
            ahead = await self.store.page(room, after=0, limit=batch)
            carried = [m for m in ahead.messages if m.attachments and m.ts < before]
            removed = await self.store.purge(room, before, batch)
            total += removed
            self.removed += removed
            if carried and removed and self.files_gone is not None:
                upto = (await self.store.page(room, after=0, limit=1)).purged
                await self.files_gone(tuple(a for m in carried if m.seq <= upto
                                            for a in m.attachments))
            if removed < batch:
                for watcher in self.watchers:  # (each node, even when another one purged)
                    watcher(room, before)
                return total
            await asyncio.sleep((time.perf_counter() - started) * (1 - SHARE) / SHARE)
