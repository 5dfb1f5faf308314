"""The ``/chat`` namespace: the chat's Socket.IO interface, and nothing else.

Connects and disconnects open and close a connection of the chat's
(:mod:`app.chat.connections`); every other event goes to
:func:`app.chat.events.handle`, which parses it, calls one service of
:class:`~app.chat.services.Chat` and makes the ack. The namespace is also
the services' :class:`~app.chat.wire.Wire`: their emits, room entries and
disconnects go through python-socketio (and fan-out to the other nodes
beneath it).

Ordering: python-socketio starts one task per incoming event, in arrival
order, and nothing here awaits before the service is called, so one
connection's pipelined sends reach the store in the order it sent them
(:mod:`app.chat.messages`).
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError

from ..core.errors import ChatError, ErrorCode
from ..core.models import Sid
from ..core.peers import client_address
from ..files import FileStorage
from ..metrics import Metrics
from ..presence import Presence
from ..settings import Settings
from ..store import MessageStore
from .events import handle
from .services import Chat

log = logging.getLogger("app.chat")  # the event log: its name stays what operators filter on

NAMESPACE = "/chat"


def refuse(error: ChatError) -> ConnectionRefusedError:
    """A connect refusal whose CONNECT_ERROR data is ``{"code", "message"}``.

    python-socketio sends the first argument as ``message`` and the second as
    ``data``; with a single argument the code would be lost.
    """
    return ConnectionRefusedError(error.message, error.as_dict())


class ChatNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 files: FileStorage, metrics: Metrics) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self.metrics = metrics
        self.chat = Chat(settings, store, presence, files, metrics, self)

    # -- the services' Wire (emit, enter_room, leave_room, disconnect: inherited) ------

    async def end_room(self, room: str) -> None:
        await self.server.manager.end_room(NAMESPACE, room)

    def transport(self, sid: Sid) -> str:
        try:
            return str(self.server.transport(sid, NAMESPACE))
        except (KeyError, ValueError):  # the Engine.IO session is already gone
            return "gone"

    # -- connection life cycle ----------------------------------------------------

    async def on_connect(self, sid: Sid, environ: dict[str, Any],
                         auth: object = None) -> None:
        address = client_address(environ, self.settings.trust_forwarded)
        try:
            await self.chat.connections.open(sid, auth, address)
            if isinstance(auth, dict) and auth.get("catch_up") is True:
                self.server.catch_up_when_behind(sid, NAMESPACE)
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

    async def caught_up(self, sid: Sid) -> None:
        """The connection skipped events while behind and is live again
        (``RoomcastServer.catch_up_when_behind``)."""
        conn = self.chat.connections.get(sid)
        if conn is not None:
            await self.chat.recovery.resume(sid, set(conn.rooms))

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Connect and disconnect here; every other event is the chat's
        (:func:`~app.chat.events.handle`): ``args`` is the sid and the payload."""
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        return await handle(self.chat, args[0], event, args[1:])
