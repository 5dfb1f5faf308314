"""The ``/chat`` namespace: the chat's Socket.IO interface, and nothing else.

Each ``on_<event>`` handler parses the payload (:mod:`app.chat.protocol`),
calls one service of :class:`~app.chat.services.Chat` and acknowledges:
``{"ok": True, ...}`` or ``{"ok": False, "error": {"code", "message"}}``
(see :func:`acked`). The namespace is also the services'
:class:`~app.chat.wire.Wire`: their emits, room entries and disconnects go
through python-socketio (and fan-out to the other nodes beneath it).

Ordering: python-socketio starts one task per incoming event, in arrival
order, and nothing here awaits before the service is called, so one
connection's pipelined sends reach the store in the order it sent them
(:mod:`app.chat.messages`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError

from ..core.errors import ChatError, ErrorCode
from ..core.models import Sid
from ..metrics import Metrics
from ..presence import Presence
from ..settings import Settings
from ..store import MessageStore
from ..core.peers import client_address
from .connections import Connection
from .directs import MAX_PEOPLE
from .protocol import (
    parse_delete, parse_direct, parse_edit, parse_history, parse_join, parse_leave,
    parse_reaction, parse_read, parse_renew, parse_rooms, parse_search, parse_send,
    parse_typing,
)
from .services import Chat

log = logging.getLogger("app.chat")  # the event log: its name stays what operators filter on

NAMESPACE = "/chat"

Ack = dict[str, Any]
# what a node that is shutting down no longer takes on (its connections are about
# to close: the client retries on the node it reconnects to)
REFUSED_WHILE_DRAINING = frozenset({"send", "edit", "delete", "react", "unreact", "join",
                                    "read", "direct"})
Handler = Callable[["ChatNamespace", Connection, object], Awaitable[Ack]]


def refuse(error: ChatError) -> ConnectionRefusedError:
    """A connect refusal whose CONNECT_ERROR data is ``{"code", "message"}``.

    python-socketio sends the first argument as ``message`` and the second as
    ``data``; with a single argument the code would be lost.
    """
    return ConnectionRefusedError(error.message, error.as_dict())


def acked(handler: Handler) -> Callable[..., Awaitable[Ack]]:
    """Wrap an event handler so that every outcome is an ack map.

    A :class:`ChatError` becomes its code and message (logged and counted as
    a refusal); anything else is logged with its traceback and answered
    ``internal``, with no detail. More than one payload argument is
    ``bad_request``. The time to the ack is measured per event.
    """
    event = handler.__name__.removeprefix("on_")

    @functools.wraps(handler)
    async def on_event(self: ChatNamespace, sid: Sid, *args: Any) -> Ack:
        started = time.perf_counter()
        chat = self.chat
        task = chat.working()
        try:
            if len(args) > 1:
                raise ChatError(ErrorCode.BAD_REQUEST, "send one payload map")
            conn = chat.connections.require(sid)
            if chat.draining and event in REFUSED_WHILE_DRAINING:
                raise ChatError(ErrorCode.UNAVAILABLE,
                                "this server is shutting down; reconnect and try again")
            return {"ok": True, **await handler(self, conn, args[0] if args else None)}
        except ChatError as exc:
            self._refused(sid, event, exc)
            return {"ok": False, "error": exc.as_dict()}
        except Exception:
            log.exception("unhandled error in %s sid=%s", event, sid)
            self.metrics.refused.labels(event, ErrorCode.INTERNAL).inc()
            return {"ok": False, "error": {"code": "internal", "message": "internal error"}}
        finally:
            chat.done(task)
            self.metrics.ack_seconds.labels(event).observe(time.perf_counter() - started)
    return on_event


class ChatNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 metrics: Metrics) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self.metrics = metrics
        self.chat = Chat(settings, store, presence, metrics, self)

    # -- the services' Wire (emit, enter_room, leave_room, disconnect: inherited) ------

    def transport(self, sid: Sid) -> str:
        try:
            return str(self.server.transport(sid, NAMESPACE))
        except (KeyError, ValueError):  # the Engine.IO session is already gone
            return "gone"

    def _refused(self, sid: Sid, event: str, exc: ChatError) -> None:
        self.metrics.refused.labels(event, exc.code).inc()
        conn = self.chat.connections.by_sid.get(sid)
        log.info("refused %s sid=%s name=%r transport=%s code=%s", event, sid,
                 conn.name if conn else None, self.transport(sid), exc.code)

    # -- connection life cycle ----------------------------------------------------

    async def on_connect(self, sid: Sid, environ: dict[str, Any],
                         auth: object = None) -> None:
        address = client_address(environ, self.settings.trust_forwarded)
        try:
            await self.chat.connections.open(sid, auth, address)
        except ChatError as exc:
            self.metrics.refused.labels("connect", exc.code).inc()
            log.info("refused connect sid=%s addr=%s code=%s", sid, address, exc.code)
            raise refuse(exc) from None
        except Exception:  # ours, not the client's: said so, with its traceback
            log.exception("connect sid=%s addr=%s: identity check failed", sid, address)
            self.metrics.refused.labels("connect", ErrorCode.INTERNAL).inc()
            raise refuse(ChatError(ErrorCode.INTERNAL, "internal error")) from None

    async def on_disconnect(self, sid: Sid, reason: str = "") -> None:
        conn = self.chat.connections.close(sid)
        if conn is None:
            return
        if self.chat.draining and reason == self.server.reason.SERVER_DISCONNECT:
            reason = "server_shutdown"
        elif conn.expired:
            reason = "token_expired"
        task = self.chat.working()
        try:
            await self.chat.disconnected(conn, reason)
        finally:
            self.chat.done(task)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if not hasattr(self, "on_" + event):
            return {"ok": False, "error": ChatError(
                ErrorCode.BAD_REQUEST, f"unknown event {event!r}").as_dict()}
        return await super().trigger_event(event, *args)

    # -- events: parse, call a service, acknowledge ---------------------------------

    @acked
    async def on_join(self, conn: Connection, data: object) -> Ack:
        return await self.chat.rooms.join(conn, parse_join(data))

    @acked
    async def on_leave(self, conn: Connection, data: object) -> Ack:
        await self.chat.rooms.leave(conn, parse_leave(data).room)
        return {}

    @acked
    async def on_send(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.send(
            conn, parse_send(data, max_text_length=self.settings.max_text_length))

    @acked
    async def on_history(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.history(conn, parse_history(data))

    @acked
    async def on_search(self, conn: Connection, data: object) -> Ack:
        return await self.chat.search.search(conn, parse_search(data))

    @acked
    async def on_edit(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.change(
            conn, parse_edit(data, max_text_length=self.settings.max_text_length))

    @acked
    async def on_delete(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.change(conn, parse_delete(data))

    @acked
    async def on_react(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.change(conn, parse_reaction(data, "react"))

    @acked
    async def on_unreact(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.change(conn, parse_reaction(data, "unreact"))

    @acked
    async def on_typing(self, conn: Connection, data: object) -> Ack:
        return await self.chat.messages.typing(conn, parse_typing(data))

    @acked
    async def on_rooms(self, conn: Connection, data: object) -> Ack:
        parse_rooms(data)
        return await self.chat.reads.rooms(conn)

    @acked
    async def on_read(self, conn: Connection, data: object) -> Ack:
        return await self.chat.reads.mark(conn, parse_read(data))

    @acked
    async def on_direct(self, conn: Connection, data: object) -> Ack:
        self.chat.directs.check_enabled()  # (before the payload: name mode says so first)
        return await self.chat.directs.open(conn, parse_direct(data, max_people=MAX_PEOPLE))

    @acked
    async def on_renew(self, conn: Connection, data: object) -> Ack:
        req = parse_renew(data)
        self.chat.connections.limit(conn, "renew", "renewals")
        expires = await self.chat.connections.renew(conn, req.token)
        return {"expires": int(expires) if expires is not None and expires.is_integer()
                else expires}
