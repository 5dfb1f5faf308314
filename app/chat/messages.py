"""Messages and the changes made to them: send, history, edit, delete, react, typing.

Every message and change is an entry of its room's stream, stored first
(the store gives it its seq) and then broadcast to the room, on every node,
as ``message`` or ``change``; a retried one (the same ``client_id``) is
found stored and not broadcast again. A message that mentions people is
also sent to each of them (``mention``), wherever they are connected.

Ordering: the transport starts one task per incoming event, in arrival
order, and :meth:`Messages.send` reaches ``store.append`` without
suspending; the store applies appends in call order, so one connection's
pipelined sends are stored in the order it sent them. Keep it that way: no
``await`` before ``append`` in ``send``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.models import Attachments as Carried, Entry, Message, now_ms
from ..core.policy import MODERATOR
from .. import tracing
from ..metrics import Metrics
from ..settings import Settings
from ..store import MessageStore
from .attachments import Attachments
from .connections import Connection, Connections, person_room
from .mentions import mentioned
from .protocol import ChangeRequest, HistoryRequest, SendRequest, TypingRequest
from .replies import Replies
from .wire import Wire

log = logging.getLogger("app.chat")

Ack = dict[str, Any]


class Messages:
    def __init__(self, settings: Settings, store: MessageStore, metrics: Metrics,
                 connections: Connections, replies: Replies, attachments: Attachments,
                 wire: Wire) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.connections = connections
        self.replies = replies
        self.attachments = attachments
        self.wire = wire
        # told of every entry stored (not of repeats): the webhooks
        self.watchers: list[Callable[[Entry], None]] = []

    async def send(self, conn: Connection, req: SendRequest) -> Ack:
        """Store a message and broadcast it; the ack has it as stored."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "send", "sends")
        people = conn.directs.get(req.room)
        # in a direct conversation every message is for all its people
        mentions = mentioned(req.text, conn.name) if people is None else \
            tuple(sorted(people - {conn.name}))
        ahead = conn.sending
        if req.attachments or ahead is not None:
            message, created = await self._send_in_turn(conn, req, mentions, ahead)
        else:
            message, created = await self._append(conn, req, mentions, ())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("send sid=%s room=%s seq=%d created=%s%s", conn.sid, req.room,
                      message.seq, created,
                      f" text={req.text!r}" if self.settings.log_message_text else "")
        if created:
            self.metrics.messages_received.inc()
            self._stored(message)
            if message.attachments:  # (before its members ask for links to them)
                await self.attachments.sent(message)
            await self._broadcast(message, conn)
            for name in mentions:
                await self.wire.emit("mention", {"room": message.room,
                                                 "message": message.as_dict()},
                                     room=person_room(name))
        return {"message": message.as_dict()}

    async def _append(self, conn: Connection, req: SendRequest, mentions: tuple[str, ...],
                      carried: Carried) -> tuple[Message, bool]:
        with self.metrics.store_seconds.labels("append").time(), tracing.child("store.append"):
            return await self.store.append(req.room, conn.name, req.text, req.client_id,
                                           req.reply_to, mentions, power=conn.identity.power,
                                           attachments=carried)

    async def _send_in_turn(self, conn: Connection, req: SendRequest,
                            mentions: tuple[str, ...], ahead: asyncio.Future[None] | None
                            ) -> tuple[Message, bool]:
        """A send that must wait before it reaches the store (for its files'
        records, or for a send of the connection ahead of it that waits): the
        sends after it wait for it in turn, so the store still takes one
        connection's sends in the order it sent them."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.sending = turn
        try:
            if ahead is not None:
                await asyncio.wait([ahead])  # (not cancelled with this task)
            carried = await self.attachments.carried(conn, req.room, req.attachments,
                                                     req.client_id) if req.attachments else ()
            return await self._append(conn, req, mentions, carried)
        finally:
            turn.set_result(None)
            if conn.sending is turn:
                conn.sending = None

    def _stored(self, entry: Entry) -> None:
        for watcher in self.watchers:
            watcher(entry)

    async def _broadcast(self, message: Message, sender: Connection) -> None:
        await self.wire.emit("message", message.as_dict(), room=message.room,
                             skip_sid=sender.sid)

    async def history(self, conn: Connection, req: HistoryRequest) -> Ack:
        """A page of a room: messages before a seq, or the stream after one."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "history", "history requests")
        self.replies.reserve(conn)
        query = self.store.page(req.room, before=req.before, after=req.after, limit=req.limit)
        page, entries, more = await self.replies.read(conn, query,
                                                      keep_newest=req.after is None)
        ack = {**entries, "more": more}
        if (gone := page.gone(req.after if req.before is None else None)) is not None:
            ack["gone"] = gone  # what retention removed of what was asked for
        return ack

    async def change(self, conn: Connection, req: ChangeRequest) -> Ack:
        """Make a change to a message: an entry of the room's stream, broadcast
        to the room as a ``change`` event like a message (a retried one, found
        by its client id, is not broadcast again). The ack has the message as
        it stands after and the change (null when nothing changed)."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "change", "changes")
        window = self.settings.edit_window
        with self.metrics.store_seconds.labels("alter").time():
            altered = await self.store.alter(
                req.room, conn.name, req.kind, req.seq, req.value, req.client_id,
                moderator=conn.identity.power >= MODERATOR,
                edits_from=int((time.time() - window) * 1000) if window else None)
        change = altered.change.as_dict() if altered.change is not None else None
        if altered.created and altered.change is not None:
            self._stored(altered.change)
            log.info("%s sid=%s name=%r room=%s seq=%d target=%d", req.kind, conn.sid,
                     conn.name, req.room, altered.change.seq, req.seq)
            await self.wire.emit("change", change, room=req.room, skip_sid=conn.sid)
            if altered.removed:  # a delete: the files go with the message
                await self.attachments.removed(altered.removed)
        return {"message": altered.message.as_dict(), "change": change}

    async def typing(self, conn: Connection, req: TypingRequest) -> Ack:
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "typing", "typing signals")
        if conn.muted and conn.muted.get(req.room, 0) > now_ms():
            raise ChatError(ErrorCode.FORBIDDEN, f"you are muted in {req.room!r}")
        await self.wire.emit("typing", {"room": req.room, "user": conn.name,
                                        "active": req.active},
                             room=req.room, skip_sid=conn.sid)
        return {}
