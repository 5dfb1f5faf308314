"""The ``/chat`` events: parse the payload, call one service, acknowledge.

:data:`EVENTS` maps each event a client may send to the parse and the
service call it means; :func:`handle` runs one for a connection and makes
every outcome an ack map: ``{"ok": True, ...}`` or ``{"ok": False, "error":
{"code", "message"}}``. It knows no socket: the Socket.IO namespace
(:mod:`app.chat.namespace`) passes each event to it, and so do the tests of
the unit tier (:mod:`tests.unit.chat`), which get the very acks a client
would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.models import Sid
from .connections import Connection
from .directs import MAX_PEOPLE
from ..core.policy import ACTIONS
from .. import tracing
from .protocol import (
    parse_advance, parse_audit, parse_delete, parse_direct, parse_edit, parse_govern,
    parse_history, parse_join, parse_leave, parse_reaction, parse_read, parse_renew, parse_room,
    parse_invite, parse_members, parse_report, parse_revoke, parse_rooms, parse_search,
    parse_send, parse_typing, parse_upload, parse_files,
)
from .governance import Governance
from .services import Chat

log = logging.getLogger("app.chat")  # the event log: its name stays what operators filter on

Ack = dict[str, Any]
Event = Callable[[Chat, Connection, object], Awaitable[Ack]]

# what a node that is shutting down no longer takes on (its connections are about
# to close: the client retries on the node it reconnects to). With a presence
# grace its connections stay members until each closes, over the drain window,
# and go on sending meanwhile: only joins are refused.
REFUSED_WHILE_DRAINING = frozenset({"send", "edit", "delete", "react", "unreact", "join",
                                    "read", "direct", "upload", *ACTIONS})
REFUSED_WHILE_HANDING_OFF = frozenset({"join"})


async def _join(chat: Chat, conn: Connection, data: object) -> Ack:
    req = parse_join(data)
    if req.invite is not None:  # a member first, by the invite
        await chat.governance.redeem(conn, req.room, req.invite)
    return await chat.rooms.join(conn, req)


async def _leave(chat: Chat, conn: Connection, data: object) -> Ack:
    await chat.rooms.leave(conn, parse_leave(data).room)
    return {}


async def _send(chat: Chat, conn: Connection, data: object) -> Ack:
    with tracing.child("parse"):
        req = parse_send(data, max_text_length=chat.settings.max_text_length)
    return await chat.messages.send(conn, req)


async def _upload(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.attachments.offer(
        conn, parse_upload(data, max_file_bytes=chat.settings.max_file_bytes))


async def _files(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.attachments.links(conn, parse_files(data))


async def _history(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.history(conn, parse_history(data))


async def _search(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.search.search(conn, parse_search(data))


async def _edit(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.change(
        conn, parse_edit(data, max_text_length=chat.settings.max_text_length))


async def _delete(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.change(conn, parse_delete(data))


async def _react(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.change(conn, parse_reaction(data, "react"))


async def _unreact(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.change(conn, parse_reaction(data, "unreact"))


async def _typing(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.messages.typing(conn, parse_typing(data))


async def _rooms(chat: Chat, conn: Connection, data: object) -> Ack:
    parse_rooms(data)
    return await chat.reads.rooms(conn)


async def _members(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.rooms.members_page(conn, parse_members(data))


async def _read(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.reads.mark(conn, parse_read(data))


async def _direct(chat: Chat, conn: Connection, data: object) -> Ack:
    chat.directs.check_enabled()  # (before the payload: name mode says so first)
    return await chat.directs.open(conn, parse_direct(data, max_people=MAX_PEOPLE))


async def _advance(chat: Chat, conn: Connection, data: object) -> Ack:
    return await chat.cursors.advance(conn, parse_advance(data))


async def _renew(chat: Chat, conn: Connection, data: object) -> Ack:
    req = parse_renew(data)
    chat.connections.limit(conn, "renew", "renewals")
    expires = await chat.connections.renew(conn, req.token)
    return {"expires": int(expires) if expires is not None and expires.is_integer()
            else expires}


def _govern(kind: str) -> Event:
    async def act(chat: Chat, conn: Connection, data: object) -> Ack:
        return await chat.governance.act(conn, parse_govern(kind, data))
    return act


def _governance(call: Callable[[Governance, Connection, Any], Awaitable[Ack]],
                parse: Callable[[object], Any]) -> Event:
    """An event of the governance service: ``call(governance, conn, parse(data))``."""
    async def event(chat: Chat, conn: Connection, data: object) -> Ack:
        return await call(chat.governance, conn, parse(data))
    return event


EVENTS: dict[str, Event] = {
    "join": _join, "leave": _leave, "send": _send, "history": _history, "search": _search,
    "edit": _edit, "delete": _delete, "react": _react, "unreact": _unreact,
    "typing": _typing, "rooms": _rooms, "members": _members, "read": _read,
    "direct": _direct, "renew": _renew, "upload": _upload, "files": _files,
    "advance": _advance, **{kind: _govern(kind) for kind in ACTIONS},
    "room_info": _governance(Governance.info, parse_room),
    "audit": _governance(Governance.audit, parse_audit),
    "invite": _governance(Governance.invite, parse_invite),
    "invites": _governance(Governance.invites, parse_room),
    "revoke": _governance(Governance.revoke, parse_revoke),
    "report": _governance(Governance.report, parse_report),
    "reports": _governance(Governance.reports, parse_room),
    "resolve": _governance(Governance.resolve, parse_report),
}


async def handle(chat: Chat, sid: Sid, event: str, args: tuple[Any, ...]) -> Ack:
    """Run ``event`` for connection ``sid``; every outcome is an ack map.

    An unknown event, or more than one payload argument, is ``bad_request``;
    the rest is :func:`perform`'s.
    """
    if event not in EVENTS:
        return {"ok": False, "error": ChatError(
            ErrorCode.BAD_REQUEST, f"unknown event {event!r}").as_dict()}
    if len(args) > 1:
        return refused(chat, sid, None, event, ChatError(ErrorCode.BAD_REQUEST,
                                                         "send one payload map"))
    conn = chat.connections.by_sid.get(sid)
    if conn is None:
        return refused(chat, sid, None, event,
                       ChatError(ErrorCode.BAD_REQUEST, "not connected"))
    return await perform(chat, conn, event, args[0] if args else None)


async def perform(chat: Chat, conn: Connection, event: str, payload: object) -> Ack:
    """Run the known ``event`` for ``conn`` (a socket's connection, or an API
    key's: :mod:`app.api`); every outcome is an ack map.

    A :class:`ChatError` becomes its code and message (logged and counted as
    a refusal); anything else is logged with its traceback and answered
    ``internal``, with no detail. The time to the ack is measured per event,
    and a sampled event is traced (:mod:`app.tracing`).
    """
    started = time.perf_counter()
    task = chat.working()
    tracer = chat.tracer
    traced = tracer.event(event, conn.transport) if tracer is not None else None
    ack: Ack = {"ok": False}
    try:
        if chat.draining and event in (REFUSED_WHILE_HANDING_OFF if chat.settings.presence_grace
                                       else REFUSED_WHILE_DRAINING):
            raise ChatError(ErrorCode.UNAVAILABLE,
                            "this server is shutting down; reconnect and try again")
        ack = {"ok": True, **await EVENTS[event](chat, conn, payload)}
    except ChatError as exc:
        ack = refused(chat, conn.sid, conn, event, exc)
    except Exception:
        log.exception("unhandled error in %s sid=%s", event, conn.sid)
        chat.metrics.refused.labels(event, ErrorCode.INTERNAL).inc()
        ack = {"ok": False, "error": {"code": "internal", "message": "internal error"}}
    finally:
        if traced is not None and tracer is not None:
            tracer.end(traced, ack)
        chat.done(task)
        chat.metrics.ack_seconds.labels(event).observe(time.perf_counter() - started)
    return ack


def refused(chat: Chat, sid: Sid, conn: Connection | None, event: str, exc: ChatError
            ) -> Ack:
    """The ack of a refusal, logged and counted."""
    chat.metrics.refused.labels(event, exc.code).inc()
    transport = chat.wire.transport(sid)
    if transport == "gone" and conn is not None:  # no socket carries it (the HTTP API's)
        transport = conn.transport
    log.info("refused %s sid=%s name=%r transport=%s code=%s", event, sid,
             conn.name if conn else None, transport, exc.code)
    return {"ok": False, "error": exc.as_dict()}
