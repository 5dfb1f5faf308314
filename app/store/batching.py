"""Group commit shared by the stores: appends queue up in call order and one
writer task writes everything queued so far as one batch.

Call order is store order: ``append`` only queues its request (no ``await``
before that), the writer takes batches from the front of the queue, and the
callers' futures are resolved in queue order. So one connection's pipelined
sends keep their order, and a batch costs one round trip and one commit.

The writer outlives any failure: should it ever stop other than by
:meth:`AppendQueue.close` (a bug, or a driver raising ``CancelledError``),
that is logged at ERROR with its traceback, the appends it was writing are
refused ``unavailable`` (a client's resend with the same ``client_id`` finds
them if they were stored), a new writer starts on the rest, and :meth:`AppendQueue.status` (in
``/healthz`` as ``store_writer``) says so until a batch is written again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.models import Attachments, Message, Reading, RoomName
from . import check_storable
from .markers import Mark
from ..core.policy import Act
from .stream import Alter, Altered, Append, Govern, Governed, Request, Result

log = logging.getLogger(__name__)

MAX_BATCH = 500  # writes per transaction

__all__ = ["Append", "AppendQueue", "QueuedWrites", "Request", "Result", "Write", "Written"]

Write = Request | Mark  # what goes through the queue
Written = Result | Reading
# the result of each write, or the ChatError it is refused with alone
WriteBatch = Callable[[list[Write]], Awaitable[list[Written | ChatError]]]


class AppendQueue:
    """Runs ``write(batch)`` for queued appends; an exception that ``is_outage``
    accepts fails the batch's appends with ``unavailable``, any other with itself."""

    def __init__(self, write: WriteBatch, is_outage: Callable[[BaseException], bool],
                 name: str) -> None:
        self._write = write
        self._is_outage = is_outage
        self._name = name
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._writing: list[tuple[Write, asyncio.Future[Any]]] = []  # the batch in hand
        self._failure = ""  # why the writer last stopped, until a batch is written again
        self.closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"{self._name}-writer")
        self._writer.add_done_callback(self._writer_ended)

    def status(self) -> str:
        """"ok", or why the writer last stopped (it was restarted)."""
        return self._failure or "ok"

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if self.closing:
            if exc is not None:
                log.error("%s: the writer failed while closing", self._name, exc_info=exc)
            return
        why = "cancelled" if exc is None else f"{type(exc).__name__}: {exc}"
        held, self._writing = self._writing, []  # written or not: nobody can say
        log.error("%s: the writer stopped (%s); refusing the %d appends it was writing "
                  "and starting another for the %d queued", self._name, why, len(held),
                  len(self._queue), exc_info=exc)
        self._failure = f"the writer stopped ({why}) and was restarted"
        unavailable = ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable")
        for _, future in held:
            if not future.done():
                future.set_exception(unavailable)
        self.start()

    async def append(self, request: Write) -> Any:
        """Queue ``request`` (an append or a change); its result once written."""
        if self.closing:
            raise ChatError(ErrorCode.UNAVAILABLE, "the server is shutting down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._writing = self._queue[:MAX_BATCH]
                del self._queue[:MAX_BATCH]
                await self._write_settling(self._writing)
                self._writing = []
            if self.closing:
                return

    async def _write_settling(self, batch: list[tuple[Write, asyncio.Future[Any]]]
                              ) -> None:
        """Write ``batch`` and settle its futures. An outage fails them all
        (``unavailable``); any other error is one append's doing, so the batch is
        written again one append at a time and only the offender fails."""
        try:
            results = await self._write([request for request, _ in batch])
        except Exception as exc:
            if self._is_outage(exc):
                log.warning("%s: writing %d messages failed: %s", self._name, len(batch), exc)
                unavailable = ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(unavailable)
            elif len(batch) > 1:
                log.warning("%s: a batch of %d failed (%s: %s); writing them one by one",
                            self._name, len(batch), type(exc).__name__, exc)
                for one in batch:
                    await self._write_settling([one])
            else:
                log.error("%s: an append failed: %s: %s", self._name, type(exc).__name__, exc)
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
            return
        self._failure = ""
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, ChatError):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Refuse new appends, write the queued ones, stop the writer."""
        if self.closing:
            return
        self.closing = True
        if self._writer is not None:
            self._wakeup.set()
            await self._writer


class QueuedWrites:
    """``append`` and ``alter`` of a store whose writes all go through one
    :class:`AppendQueue` (``_appends``), so that both keep call order."""

    _appends: AppendQueue

    async def append(self, room: RoomName, sender: str, text: str, client_id: str | None,
                     reply_to: int | None = None, mentions: Sequence[str] = (), *,
                     power: int = 0, attachments: Attachments = ()) -> tuple[Message, bool]:
        check_storable(sender, text, client_id)
        result: tuple[Message, bool] = await self._appends.append(
            Append(room, sender, text, client_id, reply_to, tuple(mentions), power,
                   attachments))
        return result

    async def govern(self, room: RoomName, sender: str, act: Act, client_id: str | None, *,
                     power: int = 0) -> Governed:
        check_storable(sender, act.reason, client_id)
        result: Governed = await self._appends.append(
            Govern(room, sender, act, client_id, power))
        return result

    async def mark(self, name: str, room: RoomName, seq: int | None = None) -> Reading:
        reading: Reading = await self._appends.append(Mark(name, room, seq))
        return reading

    async def alter(self, room: RoomName, sender: str, kind: str, target: int,
                    value: str | None, client_id: str | None, *,
                    moderator: bool = False, edits_from: int | None = None) -> Altered:
        check_storable(sender, value or "", client_id)
        result: Altered = await self._appends.append(
            Alter(room, sender, kind, target, value, client_id, moderator, edits_from))
        return result

    def status(self) -> str:
        return self._appends.status()
