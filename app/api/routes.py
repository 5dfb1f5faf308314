"""The HTTP API, ``/api/v1/``: the chat for backends, through the same services.

Each endpoint is a row of :data:`ENDPOINTS`: its method and path, the scope
a key needs, the models its path, query and body are validated with and
the model of its reply (:mod:`app.api.models`; the OpenAPI document is made
from the same rows, :mod:`app.api.openapi`), and what it does. Most do a
``/chat`` event through :func:`app.chat.events.perform`, exactly as a
socket's event is done: the same parsing, limits, ordering, fan-out and
error codes.

A key acts through a connection of its own that no socket carries
(:meth:`Api.caller`): its identity is the key's name, it is in the one room
the request names (if the key's rooms admit it; a direct conversation only
if the key's name is one of its people), it has no presence, and its rate
budgets are the key's, kept between requests. Every request also spends one
token of the key's ``--api-rate``; past it the answer is 429 with
``Retry-After``.

Errors are ``{"ok": false, "error": {"code", "message"}}`` with the socket
protocol's codes and the matching HTTP status (:data:`~app.core.errors.HTTP_STATUS`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..chat.auth import Identity
from ..chat.connections import Connection
from ..chat.events import perform
from ..chat.services import Chat
from ..core.errors import HTTP_STATUS, ChatError, ErrorCode
from ..core.limits import Rate, TokenBucket
from ..core.models import RoomName, Sid
from ..hooks.service import Webhooks
from ..hooks.webhook import Webhook
from ..settings import Settings
from . import models as m
from .keys import ApiKey, digest, parse_keys

log = logging.getLogger("app.api")

PREFIX = "/api/v1"
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One request, validated: the key, its connection, and the parsed parts."""

    key: ApiKey
    conn: Connection
    path: Any
    query: Any
    body: Any
    headers: Any  # the validated headers (header_model), if the endpoint reads any


Action = Callable[["Api", Call], Awaitable[Json]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # after PREFIX
    name: str  # the OpenAPI operationId
    summary: str
    scope: str
    action: Action
    reply: type[BaseModel]
    path_model: type[BaseModel] | None = None
    query_model: type[BaseModel] | None = None
    body_model: type[BaseModel] | None = None
    header_model: type[BaseModel] | None = None
    status: int = 200


class Api:
    """The keys, their connections and their request budgets."""

    def __init__(self, chat: Chat, settings: Settings, webhooks: Webhooks) -> None:
        self.chat = chat
        self.webhooks = webhooks
        self.settings = settings
        self.keys = parse_keys(settings.api_keys)
        self.rate = Rate(settings.api_rate, settings.api_burst)
        self.requests: dict[str, TokenBucket] = {}  # by key digest
        self.budgets: dict[str, dict[str, TokenBucket]] = {}  # each key's event buckets

    def authenticate(self, request: web.Request) -> ApiKey:
        """The key of ``Authorization: Bearer <key>``; ``unauthorized`` if none."""
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        key = self.keys.get(digest(presented.strip())) if scheme.lower() == "bearer" else None
        if key is None:
            raise ChatError(ErrorCode.UNAUTHORIZED,
                            "send a valid API key as Authorization: Bearer <key>")
        bucket = self.requests.get(key.digest)
        if bucket is None:
            bucket = self.requests[key.digest] = self.rate.bucket()
        wait = bucket.take(1)
        if wait:
            raise ChatError(ErrorCode.RATE_LIMITED,
                            f"too many requests with this key; try again in {wait} ms",
                            retry_after=wait)
        return key

    def caller(self, key: ApiKey) -> Connection:
        """A connection for one request of ``key``: no socket, the key's budgets."""
        identity = Identity(key.name, moderator=key.may("moderate"), admin="admin" in key.scopes)
        return Connection(Sid(f"api:{key.name}"), identity, "http", "api",
                          buckets=self.budgets.setdefault(key.digest, {}))

    async def enter(self, call: Call, room: RoomName) -> None:
        """Put the request's connection in ``room``, if the key may act there."""
        if not call.key.admits(room):
            raise ChatError(ErrorCode.FORBIDDEN, f"this API key may not act in {room!r}")
        people = await self.chat.rooms.admit(call.conn, room)
        if people is None:
            await self.chat.rooms.ruled(call.conn, room)
        else:
            call.conn.directs[room] = people
        call.conn.rooms[room] = None

    async def event(self, call: Call, event: str, payload: Json, room: RoomName | None
                    ) -> Json:
        """Do ``event`` as a socket would (in ``room``, entered first)."""
        if room is not None:
            await self.enter(call, room)
        ack = await perform(self.chat, call.conn, event, payload)
        if not ack["ok"]:
            error = ack["error"]
            raise ChatError(ErrorCode(error["code"]), error["message"],
                            retry_after=error.get("retry_after"))
        return ack


# -- what each endpoint does ---------------------------------------------------------

def _client_id(call: Call) -> str | None:
    given: str | None = call.body.client_id or call.headers.key
    return given


async def post_message(api: Api, call: Call) -> Json:
    room = call.path.room
    return await api.event(call, "send", {"room": room, "text": call.body.text,
                                          "client_id": _client_id(call),
                                          "reply_to": call.body.reply_to,
                                          "attachments": call.body.attachments}, room)


async def grant_upload(api: Api, call: Call) -> Json:
    room = call.path.room
    return await api.event(call, "upload", {"room": room, "name": call.body.name,
                                            "size": call.body.size}, room)


async def file_link(api: Api, call: Call) -> Json:
    p = call.path
    ack = await api.event(call, "files", {"room": p.room, "ids": [p.file]}, p.room)
    link = ack["files"].get(p.file)
    if link is None:
        raise ChatError(ErrorCode.NOT_FOUND, f"no file {p.file} in {p.room!r}")
    return {"ok": True, "url": link["url"], "thumbnail": link.get("thumbnail"),
            "expires": ack["expires"]}


async def edit_message(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "edit", {"room": p.room, "seq": p.seq, "text": call.body.text,
                                          "client_id": _client_id(call)}, p.room)


async def delete_message(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "delete", {"room": p.room, "seq": p.seq,
                                            "client_id": call.headers.key},
                           p.room)


async def react(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "react", {"room": p.room, "seq": p.seq, "emoji": p.emoji},
                           p.room)


async def unreact(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "unreact", {"room": p.room, "seq": p.seq, "emoji": p.emoji},
                           p.room)


async def history(api: Api, call: Call) -> Json:
    q = call.query
    payload = {"room": call.path.room, "limit": q.limit,
               **({"before": q.before} if q.before is not None else {}),
               **({"after": q.after} if q.after is not None else {})}
    return await api.event(call, "history", payload, call.path.room)


async def search(api: Api, call: Call) -> Json:
    q = call.query
    return await api.event(call, "search", {"room": call.path.room, "query": q.q,
                                            "cursor": q.cursor, "limit": q.limit},
                           call.path.room)


async def rooms(api: Api, call: Call) -> Json:
    ack = await api.event(call, "rooms", {}, None)
    return {**ack, "rooms": [r for r in ack["rooms"] if call.key.admits(r["name"])]}


async def members(api: Api, call: Call) -> Json:
    q = call.query
    payload = {"room": call.path.room, "limit": q.limit,
               **({"next": q.next} if q.next is not None else {})}
    ack = await api.event(call, "members", payload, call.path.room)
    return {"ok": True, "room": ack["room"], "members": ack["members"], "count": ack["count"],
            "next": ack.get("members_next")}


async def open_direct(api: Api, call: Call) -> Json:
    return await api.event(call, "direct", {"with": call.body.with_}, None)


async def cursor(api: Api, call: Call) -> Json:
    p = call.path
    await api.enter(call, p.room)
    api.chat.connections.limit(call.conn, "read", "cursor reads")
    return {"ok": True, "room": p.room, "cursor": p.cursor,
            "seq": await api.chat.cursors.position(call.conn, p.room, p.cursor)}


async def advance(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "advance", {"room": p.room, "cursor": p.cursor,
                                             "seq": call.body.seq}, p.room)


async def act(api: Api, call: Call) -> Json:
    given = call.body.model_dump(exclude_unset=True)  # (a role given as null takes it away)
    kind = given.pop("kind")
    return await api.event(call, kind, {**given, "room": call.path.room,
                                        "client_id": _client_id(call)}, call.path.room)


async def audit(api: Api, call: Call) -> Json:
    q = call.query
    return await api.event(call, "audit", {"room": call.path.room, "limit": q.limit,
                                           **({"before": q.before} if q.before else {})},
                           call.path.room)


async def invite(api: Api, call: Call) -> Json:
    return await api.event(call, "invite", {"room": call.path.room,
                                            **call.body.model_dump(exclude_none=True)},
                           call.path.room)


async def invites(api: Api, call: Call) -> Json:
    return await api.event(call, "invites", {"room": call.path.room}, call.path.room)


async def revoke(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "revoke", {"room": p.room, "id": p.id}, p.room)


async def report(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "report", {"room": p.room, "seq": p.seq,
                                            "reason": call.body.reason}, p.room)


async def resolve(api: Api, call: Call) -> Json:
    p = call.path
    return await api.event(call, "resolve", {"room": p.room, "seq": p.seq}, p.room)


async def reports(api: Api, call: Call) -> Json:
    return await api.event(call, "reports", {"room": call.path.room}, call.path.room)


async def room_info(api: Api, call: Call) -> Json:
    return await api.event(call, "room_info", {"room": call.path.room}, call.path.room)


async def end_person(api: Api, call: Call) -> Json:
    await api.chat.connections.end_person(call.path.name)
    return {"ok": True, "name": call.path.name}


def _shown(api: Api, hook: Webhook, *, secret: bool = False) -> Json:
    return {**hook.as_dict(secret=secret), "delivering": api.webhooks.status(hook.id)}


async def create_webhook(api: Api, call: Call) -> Json:
    b = call.body
    hook = await api.webhooks.create(b.url, b.rooms, b.events, b.mention, call.key.rooms)
    return {"ok": True, "webhook": _shown(api, hook, secret=True)}


async def list_webhooks(api: Api, call: Call) -> Json:
    return {"ok": True, "webhooks": [_shown(api, hook) for hook in await api.webhooks.all()]}


async def get_webhook(api: Api, call: Call) -> Json:
    return {"ok": True, "webhook": _shown(api, await api.webhooks.get(call.path.id))}


async def delete_webhook(api: Api, call: Call) -> Json:
    await api.webhooks.delete(call.path.id)
    return {"ok": True, "id": call.path.id}


async def list_dead_letters(api: Api, call: Call) -> Json:
    return {"ok": True, "dead_letters": await api.webhooks.dead_letters(call.path.id)}


async def replay_dead_letter(api: Api, call: Call) -> Json:
    return {"ok": True, "events": await api.webhooks.replay(call.path.id, call.path.letter)}


ROOM = "/rooms/{room}"
HOOK = "/webhooks/{id}"
MESSAGE = ROOM + "/messages/{seq}"
ENDPOINTS = [
    Endpoint("GET", "/rooms", "listRooms", "The rooms with members now, and the key "
             "identity's own rooms (those the key's rooms admit)", "read", rooms, m.Rooms),
    Endpoint("GET", ROOM + "/members", "listMembers", "Who is in a room now (on every node)",
             "read", members, m.Members, path_model=m.RoomPath,
             query_model=m.MembersQuery),
    Endpoint("GET", ROOM + "/messages", "history", "A page of a room's history: the latest, "
             "before a seq (older), or the stream after one (newer, with changes)", "read",
             history, m.History, path_model=m.RoomPath, query_model=m.HistoryQuery),
    Endpoint("POST", ROOM + "/messages", "postMessage", "Post a message as the key's "
             "identity (idempotent with client_id or an Idempotency-Key header)", "publish",
             post_message, m.Posted, path_model=m.RoomPath, body_model=m.PostBody,
             header_model=m.IdempotencyHeader),
    Endpoint("POST", ROOM + "/uploads", "grantUpload", "Grant an upload of a file to the "
             "room, as the key's identity (limits counted now): then upload it with tus "
             "to the grant's url and send its id in postMessage's attachments", "publish",
             grant_upload, m.Granted, path_model=m.RoomPath, body_model=m.UploadBody),
    Endpoint("GET", ROOM + "/files/{file}", "fileLink", "A link to a file sent in the room "
             "(and its thumbnail), valid for --file-link-ttl", "read", file_link, m.FileLink,
             path_model=m.FilePath),
    Endpoint("PATCH", MESSAGE, "editMessage", "Edit one of the key identity's messages",
             "publish", edit_message, m.Changed, path_model=m.MessagePath,
             body_model=m.EditBody, header_model=m.IdempotencyHeader),
    Endpoint("DELETE", MESSAGE, "deleteMessage", "Delete a message (another's: moderate)",
             "publish", delete_message, m.Changed, path_model=m.MessagePath,
             header_model=m.IdempotencyHeader),
    Endpoint("PUT", MESSAGE + "/reactions/{emoji}", "react", "React to a message", "publish",
             react, m.Changed, path_model=m.ReactionPath),
    Endpoint("DELETE", MESSAGE + "/reactions/{emoji}", "unreact", "Take a reaction back",
             "publish", unreact, m.Changed, path_model=m.ReactionPath),
    Endpoint("GET", ROOM + "/search", "search", "Messages of a room with the query's words, "
             "newest first", "read", search, m.SearchReply, path_model=m.RoomPath,
             query_model=m.SearchQuery),
    Endpoint("GET", ROOM + "/cursors/{cursor}", "getCursor", "Where the key identity's "
             "cursor stands in a room (read on with history after it)", "read", cursor,
             m.Cursor, path_model=m.CursorPath),
    Endpoint("PUT", ROOM + "/cursors/{cursor}", "advanceCursor", "Move the key identity's "
             "cursor forward, once the entries up to seq are handled", "read", advance,
             m.Cursor, path_model=m.CursorPath, body_model=m.CursorBody),
    Endpoint("GET", ROOM, "roomInfo", "A room's settings, where the key's identity stands, "
             "and its owners and moderators (to a moderator: everyone with a role, a ban or "
             "a mute)", "read", room_info, m.RoomInfo, path_model=m.RoomPath),
    Endpoint("POST", ROOM + "/actions", "act", "Govern a room as the key's identity: create "
             "it, configure it, give roles, remove, ban or mute people (the rules of "
             "docs/protocol.md; moderate: a moderator of the key's rooms, admin: an owner)",
             "moderate", act, m.Acted, path_model=m.RoomPath, body_model=m.ActionBody,
             header_model=m.IdempotencyHeader),
    Endpoint("GET", ROOM + "/actions", "audit", "A room's audit log: its actions, newest "
             "first", "moderate", audit, m.Audit, path_model=m.RoomPath,
             query_model=m.AuditQuery),
    Endpoint("POST", ROOM + "/invites", "invite", "A new invite to a private room: its code "
             "(shown this once) lets whoever joins with it in as a member (token mode)",
             "moderate", invite, m.Invited, path_model=m.RoomPath, body_model=m.InviteBody,
             status=200),
    Endpoint("GET", ROOM + "/invites", "listInvites", "A room's open invites (without their "
             "codes)", "moderate", invites, m.Invites, path_model=m.RoomPath),
    Endpoint("DELETE", ROOM + "/invites/{id}", "revokeInvite", "End an invite", "moderate",
             revoke, m.Revoked, path_model=m.InvitePath),
    Endpoint("POST", MESSAGE + "/reports", "report", "Report a message to the room's "
             "moderators and owners", "publish", report, m.Reported,
             path_model=m.MessagePath, body_model=m.ReasonBody),
    Endpoint("DELETE", MESSAGE + "/reports", "resolve", "Close the open reports of a "
             "message", "moderate", resolve, m.Resolved, path_model=m.MessagePath),
    Endpoint("GET", ROOM + "/reports", "listReports", "A room's open reports, oldest first",
             "moderate", reports, m.Reports, path_model=m.RoomPath),
    Endpoint("POST", "/directs", "openDirect", "Open (or find again) the direct conversation "
             "of the key's identity and the people named (token mode)", "publish",
             open_direct, m.Direct, body_model=m.DirectBody),
    Endpoint("POST", "/people/{name}/disconnect", "disconnectPerson", "End every connection "
             "of a person, on every node (they may connect again)", "admin", end_person,
             m.Disconnected, path_model=m.PersonPath),
    Endpoint("POST", "/webhooks", "createWebhook", "Subscribe a URL to the events of rooms "
             "(from now on); the reply holds its signing secret, shown this once", "admin",
             create_webhook, m.WebhookReply, body_model=m.WebhookBody, status=201),
    Endpoint("GET", "/webhooks", "listWebhooks", "Every webhook (without secrets)", "admin",
             list_webhooks, m.WebhookList),
    Endpoint("GET", HOOK, "getWebhook", "One webhook, and how its delivery goes if this "
             "node delivers it", "admin", get_webhook, m.WebhookReply,
             path_model=m.WebhookPath),
    Endpoint("DELETE", HOOK, "deleteWebhook", "Stop a webhook and forget it (its cursors "
             "and dead letters too)", "admin", delete_webhook, m.Deleted,
             path_model=m.WebhookPath),
    Endpoint("GET", HOOK + "/dead-letters", "listDeadLetters", "The deliveries given up "
             "(--webhook-give-up), oldest first", "admin", list_dead_letters, m.DeadLetters,
             path_model=m.WebhookPath),
    Endpoint("POST", HOOK + "/dead-letters/{letter}/replay", "replayDeadLetter", "Deliver "
             "a dead letter's events again, now, once; acknowledged, it is no longer kept",
             "admin", replay_dead_letter, m.Replayed, path_model=m.DeadLetterPath),
]


# -- the HTTP side -------------------------------------------------------------------

def failure(exc: ChatError) -> web.Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after / 1000)))
    return web.json_response({"ok": False, "error": exc.as_dict()},
                             status=HTTP_STATUS.get(exc.code, 400), headers=headers)


def invalid(exc: ValidationError, where: str) -> ChatError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or where
    return ChatError(ErrorCode.BAD_REQUEST, f"{where} {field}: {first['msg']}")


async def _body(request: web.Request, model: type[BaseModel], limit: int) -> BaseModel:
    if request.content_length is not None and request.content_length > limit:
        raise ChatError(ErrorCode.TOO_LARGE, f"the body is over {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ChatError(ErrorCode.TOO_LARGE, f"the body is over {limit} bytes")
    try:
        data = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ChatError(ErrorCode.BAD_REQUEST, "the body must be JSON") from None
    if not isinstance(data, dict):
        raise ChatError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, "body") from None


def _named(headers: Any, model: type[BaseModel] | None) -> dict[str, str]:
    """The headers ``model`` reads, by the names it gives them (HTTP's are
    case-insensitive; a model's aliases are not)."""
    if model is None:
        return {}
    names = [f.alias or n for n, f in model.model_fields.items()]
    return {name: headers[name] for name in names if name in headers}


def _parts(model: type[BaseModel] | None, values: Any, where: str) -> Any:
    if model is None:
        return None
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise invalid(exc, where) from None


API_KEY = web.AppKey("api", Api)


def handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        api = request.app[API_KEY]
        try:
            key = api.authenticate(request)
            if not key.may(endpoint.scope):
                raise ChatError(ErrorCode.FORBIDDEN,
                                f"this API key lacks the {endpoint.scope} scope")
            call = Call(key, api.caller(key),
                        _parts(endpoint.path_model, request.match_info, "path"),
                        _parts(endpoint.query_model, request.query, "query"),
                        None if endpoint.body_model is None else await _body(
                            request, endpoint.body_model, api.settings.api_max_body),
                        _parts(endpoint.header_model, _named(request.headers,
                                                             endpoint.header_model), "header"))
            reply = await endpoint.action(api, call)
        except ChatError as exc:
            log.info("api %s %s refused %s", endpoint.method, request.path, exc.code)
            return failure(exc)
        return web.json_response(reply, status=endpoint.status)
    return handle


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under ``/api/``, aiohttp's own refusals (no such path or method) are
    JSON errors like the API's."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if not request.path.startswith(PREFIX + "/") or exc.status < 400:
            raise
        code = ErrorCode.NOT_FOUND if exc.status == 404 else ErrorCode.BAD_REQUEST
        return web.json_response({"ok": False, "error": {"code": str(code),
                                                         "message": exc.reason}},
                                 status=exc.status, headers={
                                     k: v for k, v in exc.headers.items() if k == "Allow"})


def setup_api(app: web.Application) -> None:
    """Add ``/api/v1/``: the endpoints and ``openapi.json``. The server puts
    an :class:`Api` at ``app[API_KEY]`` once the chat's services exist."""
    from .openapi import document
    spec = document(ENDPOINTS, PREFIX)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    app.middlewares.append(json_errors)
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, PREFIX + endpoint.path, handler(endpoint))
