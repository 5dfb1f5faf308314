"""The ``/chat`` namespace: join, leave, send, history, typing, rooms, renew,
read markers, mentions and direct conversations.

Each connection is also in its person's own Socket.IO room (:func:`person_room`,
a name no chat room can have): what concerns the person wherever they are
connected (their read markers moving, mentions of them, a direct conversation
opened with them) is emitted there, and fan-out carries it to every node. A
connection whose token admits it to some rooms only is in the person's
*limited* room instead, which gets their read markers but no mentions (a
mention would show it a message of a room it may not enter).

Each client event is answered through its ack: ``{"ok": True, ...}`` or
``{"ok": False, "error": {"code", "message"}}`` (see :func:`acked`). Handlers
parse the payload first and touch state only once it is valid.

Ordering: python-socketio starts one task per incoming event, in arrival
order. ``on_send`` reaches ``store.append`` without suspending, and the store
applies appends in call order, so one connection's pipelined sends are
stored in the order it sent them. Keep it that way: no ``await`` before
``append`` in ``on_send``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import socketio

from ..metrics import Metrics
from ..presence import Presence
from ..settings import RATED, Settings
from ..store import MessageStore
from .auth import Identity, identify, verify_token
from .directs import MAX_PEOPLE, Openings, direct_room, is_direct
from .errors import ChatError, ErrorCode, refuse
from .limits import InFlight, Rate, TokenBucket
from .mentions import mentioned
from .models import Entry, Message, Page, RoomName, Sid
from ..store.search import marked
from .paging import fit, wire_size
from .protocol import (
    JOIN_LATEST, JOIN_SINCE_MAX, ChangeRequest, SearchRequest, parse_delete, parse_direct,
    parse_edit, parse_history, parse_join, parse_leave, parse_reaction, parse_read,
    parse_renew, parse_rooms, parse_search, parse_send, parse_typing,
)
from .receipts import Receipts, receipt_list

log = logging.getLogger("app.chat")  # the event log: its name stays what operators filter on

NAMESPACE = "/chat"

Ack = dict[str, Any]
# what a node that is shutting down no longer takes on (its connections are about
# to close: the client retries on the node it reconnects to)
REFUSED_WHILE_DRAINING = frozenset({"send", "edit", "delete", "react", "unreact", "join",
                                    "read", "direct"})
Handler = Callable[["ChatNamespace", Sid, object], Awaitable[Ack]]


def _no_directs() -> ChatError:
    return ChatError(ErrorCode.FORBIDDEN, "direct conversations need token mode: this server "
                     "takes names without proof (start it with --jwt-secret)")


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
        task = self._in_flight(asyncio.current_task())
        try:
            if len(args) > 1:
                raise ChatError(ErrorCode.BAD_REQUEST, "send one payload map")
            if sid not in self.connections:
                raise ChatError(ErrorCode.BAD_REQUEST, "not connected")
            if self.draining and event in REFUSED_WHILE_DRAINING:
                raise ChatError(ErrorCode.UNAVAILABLE,
                                "this server is shutting down; reconnect and try again")
            return {"ok": True, **await handler(self, sid, args[0] if args else None)}
        except ChatError as exc:
            self._refused(sid, event, exc)
            return {"ok": False, "error": exc.as_dict()}
        except Exception:
            log.exception("unhandled error in %s sid=%s", event, sid)
            self.metrics.refused.labels(event, ErrorCode.INTERNAL).inc()
            return {"ok": False, "error": {"code": "internal", "message": "internal error"}}
        finally:
            self.handling.discard(task)
            self.metrics.ack_seconds.labels(event).observe(time.perf_counter() - started)
    return on_event


@dataclass(slots=True)
class Connection:
    """What the namespace knows about one connection."""

    identity: Identity
    transport: str
    address: str
    rooms: set[RoomName] = field(default_factory=set)
    joining: set[RoomName] = field(default_factory=set)  # joins in flight, not in rooms yet
    # one per event kind (and "reply_bytes"), made on first use: an idle
    # connection holds none
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    expiry: asyncio.TimerHandle | None = None  # token mode: ends the connection at exp
    expired: bool = False
    directs: dict[RoomName, frozenset[str]] = field(default_factory=dict)  # joined: people

    @property
    def name(self) -> str:
        return self.identity.name


def person_room(name: str, *, limited: bool = False) -> str:
    """The Socket.IO room of the connections of the person ``name`` (``@`` and
    the name: no chat room name has an ``@``); ``limited``: of those whose
    token admits them to some rooms only."""
    return "@" + name + ("\n" if limited else "")


def own_room(identity: Identity) -> str:
    return person_room(identity.name, limited=identity.rooms is not None)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A background task of the namespace ended: log how, if by failing."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)


def client_address(environ: dict[str, Any], trust_forwarded: bool) -> str:
    """The peer's address; with ``trust_forwarded``, the one our proxy appended
    to X-Forwarded-For (the last entry: earlier ones come from the client)."""
    if trust_forwarded:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[-1].strip())
    return str(environ.get("REMOTE_ADDR", ""))


class ChatNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 metrics: Metrics) -> None:
        super().__init__(NAMESPACE)
        self.settings = settings
        self.store = store
        self.presence = presence
        self.metrics = metrics
        self.connections: dict[Sid, Connection] = {}
        self.rates = {kind: Rate(getattr(settings, kind + "_rate"),
                                 getattr(settings, kind + "_burst")) for kind in RATED}
        self.openings = Openings(settings.max_new_directs_per_person)
        self.searches = InFlight("searches", per_node=settings.max_searches,
                                 per_name=settings.max_searches_per_name)
        self._expiring: set[asyncio.Task[Any]] = set()  # disconnects of expired tokens
        self.wire_size = wire_size(settings.serializer)
        self.per_name: Counter[str] = Counter()
        self.per_address: Counter[str] = Counter()
        self.draining = False  # set when shutdown begins
        # handlers running now: shutdown waits for them before closing the
        # backends, or their last store and presence calls would fail, or
        # open connections that nothing closes
        self.handling: set[asyncio.Task[Any]] = set()
        # rooms whose members must be told to catch up (see catch_up); None: all
        self._behind: set[RoomName] | None = set()
        self._catching_up: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.receipts = Receipts(self._send_receipts)

    def _in_flight(self, task: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
        if task is not None:
            self.handling.add(task)
        return task

    async def wait_handlers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the handlers running now to finish."""
        if self.handling:
            await asyncio.wait(list(self.handling), timeout=timeout)

    def _transport(self, sid: Sid) -> str:
        try:
            return str(self.server.transport(sid, NAMESPACE))
        except (KeyError, ValueError):  # the Engine.IO session is already gone
            return "gone"

    def _refused(self, sid: Sid, event: str, exc: ChatError) -> None:
        self.metrics.refused.labels(event, exc.code).inc()
        conn = self.connections.get(sid)
        log.info("refused %s sid=%s name=%r transport=%s code=%s", event, sid,
                 conn.name if conn else None, self._transport(sid), exc.code)

    # -- connection life cycle ----------------------------------------------

    async def on_connect(self, sid: Sid, environ: dict[str, Any],
                         auth: object = None) -> None:
        address = client_address(environ, self.settings.trust_forwarded)
        try:
            identity = identify(auth, self.settings.jwt_secret)
            self._check_connection_limits(identity.name, address)
        except ChatError as exc:
            self.metrics.refused.labels("connect", exc.code).inc()
            log.info("refused connect sid=%s addr=%s code=%s", sid, address, exc.code)
            raise refuse(exc) from None
        except Exception:  # ours, not the client's: said so, with its traceback
            log.exception("connect sid=%s addr=%s: identity check failed", sid, address)
            self.metrics.refused.labels("connect", ErrorCode.INTERNAL).inc()
            raise refuse(ChatError(ErrorCode.INTERNAL, "internal error")) from None
        transport = self.server.transport(sid, NAMESPACE)
        conn = self.connections[sid] = Connection(identity, transport, address)
        self._arm_expiry(sid, conn)
        self.per_name[identity.name] += 1
        self.per_address[address] += 1
        await self.enter_room(sid, own_room(identity))
        log.info("connect sid=%s name=%r transport=%s addr=%s", sid, identity.name, transport,
                 address)

    def _check_connection_limits(self, name: str, address: str) -> None:
        s = self.settings
        if self.per_name[name] >= s.max_connections_per_name:
            raise ChatError(ErrorCode.RATE_LIMITED, f"{name!r} already has "
                            f"{s.max_connections_per_name} connections; close one first")
        if self.per_address[address] >= s.max_connections_per_address:
            raise ChatError(ErrorCode.RATE_LIMITED, "too many connections from your address "
                            f"(at most {s.max_connections_per_address})")

    def _forget_connection(self, conn: Connection) -> None:
        for counter, key in ((self.per_name, conn.name), (self.per_address, conn.address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    async def on_disconnect(self, sid: Sid, reason: str = "") -> None:
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        task = self._in_flight(asyncio.current_task())
        try:
            await self._disconnected(sid, conn, reason)
        finally:
            self.handling.discard(task)

    def _arm_expiry(self, sid: Sid, conn: Connection) -> None:
        """End ``conn`` when its token expires (token mode), replacing any earlier timer."""
        if conn.expiry is not None:
            conn.expiry.cancel()
        if conn.identity.expires is not None:
            delay = max(0.0, conn.identity.expires - time.time())
            conn.expiry = asyncio.get_running_loop().call_later(delay, self._expire, sid, conn)

    def _expire(self, sid: Sid, conn: Connection) -> None:
        if self.connections.get(sid) is not conn:
            return
        conn.expired = True
        log.info("token expired sid=%s name=%r", sid, conn.name)
        task = asyncio.create_task(self.disconnect(sid), name=f"expiry of {sid}")
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)
        task.add_done_callback(_log_failure)

    async def drain(self) -> None:
        """Shutdown begins: take this node's connections out of presence in one
        step and tell each room's other members, on the other nodes, of each name
        that is thereby gone (once; not the leaving connections themselves). The
        disconnects that follow then have nothing left to announce."""
        self.draining = True
        # housekeeping stops first (a round under way would write back entries
        # of joins it saw in flight), and this node's members are gone from its
        # own view before they are gone from Redis
        await self.stop_housekeeping()
        leaving: dict[RoomName, list[Sid]] = {}
        for sid, conn in self.connections.items():
            for room in conn.rooms:
                leaving.setdefault(room, []).append(sid)
            conn.rooms.clear()
        try:
            gone = await self.presence.drain()
        except Exception:
            log.exception("draining presence failed; the other nodes will clean up")
            gone = []
        for room, name in gone:
            try:
                members = await self.presence.members(room)
                await self.emit("presence", {"room": room, "user": name, "event": "leave",
                                             "members": members},
                                room=room, skip_sid=leaving.get(room, []))
            except Exception:
                log.exception("announcing %r leaving %s failed", name, room)
        log.info("draining: %d names left %d rooms", len(gone), len({r for r, _ in gone}))

    async def _disconnected(self, sid: Sid, conn: Connection, reason: str) -> None:
        self._forget_connection(conn)
        if conn.expiry is not None:
            conn.expiry.cancel()
        if self.draining and reason == self.server.reason.SERVER_DISCONNECT:
            reason = "server_shutdown"
        elif conn.expired:
            reason = "token_expired"
        self.metrics.disconnected(reason)
        log.info("disconnect sid=%s name=%r transport=%s reason=%s", sid, conn.name,
                 conn.transport, reason)
        for room in sorted(conn.rooms):
            await self._forget(sid, conn, room)  # each room, whatever fails

    async def _forget(self, sid: Sid, conn: Connection, room: RoomName) -> None:
        """Drop ``sid`` from ``room``'s presence; announce it if the name left.
        The connection has left already: if presence fails, that is logged
        and its housekeeping repairs the entry (against conn.rooms) later."""
        conn.rooms.discard(room)
        conn.directs.pop(room, None)
        try:
            if await self.presence.leave(room, conn.name, sid):
                await self.announce_leave(room, conn.name)
        except Exception as exc:
            log.error("leave sid=%s room=%s: presence failed (%s); housekeeping repairs it",
                      sid, room, exc, exc_info=not isinstance(exc, ChatError))

    async def announce_leave(self, room: RoomName, name: str) -> None:
        """Tell the room that ``name`` left (also for names of a node that died)."""
        members = await self.presence.members(room)
        await self.emit("presence", {"room": room, "user": name,
                                     "event": "leave", "members": members}, room=room)

    async def announce_join(self, room: RoomName, name: str) -> None:
        """Tell the room that ``name`` is here (a join presence restored after
        a Redis outage, which the other nodes did not hear of then). Its own
        connections are told too: the member list they had may be one that
        an outage cut short."""
        members = await self.presence.members(room)
        await self.emit("presence", {"room": room, "user": name,
                                     "event": "join", "members": members}, room=room)

    def catch_up(self, rooms: Collection[str] | None) -> None:
        """Fan-out may have missed other nodes' events for ``rooms`` (None: every
        room): tell this node's members of each to catch up. Requests that
        come while a round runs are merged into the next one."""
        if rooms is None:
            self._behind = None
        elif self._behind is not None:
            self._behind.update(RoomName(room) for room in rooms)
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._send_catch_ups(), name="catch-up")
            self._catching_up.add_done_callback(_log_failure)

    async def _send_catch_ups(self) -> None:
        """Send each room with members here one ``catch_up`` event, to this node's
        members only: the room's latest seq (a client that has less asks
        ``history`` for the rest) and who is present now."""
        while self._behind is None or self._behind:
            here = {room for conn in self.connections.values() for room in conn.rooms}
            rooms = here if self._behind is None else here & self._behind
            self._behind = set()
            for room in sorted(rooms):
                try:
                    page = await self.store.page(room, limit=1)
                    members = await self.presence.members(room)
                except ChatError as exc:  # the next message's gap still shows it
                    log.warning("could not tell %s to catch up: %s", room, exc.message)
                    continue
                await self.emit("catch_up", {"room": room, "seq": page.latest,
                                             "members": members}, room=room, ignore_queue=True)
            log.info("told %d rooms to catch up", len(rooms))

    def start_housekeeping(self) -> None:
        """Presence housekeeping, for as long as this node serves (see Presence.maintain)."""
        self._housekeeping = asyncio.create_task(
            self.presence.maintain(self.local_members, self.announce_leave, self.announce_join),
            name="presence-housekeeping")
        self._housekeeping.add_done_callback(_log_failure)

    async def stop_housekeeping(self) -> None:
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop_catching_up(self) -> None:
        task = self._catching_up
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def local_members(self) -> list[tuple[RoomName, Sid, str]]:
        """Every (room, sid, name) joined on this node: presence's local truth."""
        return [(room, sid, conn.name) for sid, conn in list(self.connections.items())
                for room in conn.rooms]

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if not hasattr(self, "on_" + event):
            return {"ok": False, "error": ChatError(
                ErrorCode.BAD_REQUEST, f"unknown event {event!r}").as_dict()}
        return await super().trigger_event(event, *args)

    # -- events ---------------------------------------------------------------

    def _member(self, sid: Sid, room: RoomName) -> Connection:
        conn = self.connections[sid]
        if room not in conn.rooms:
            raise ChatError(ErrorCode.NOT_MEMBER, f"join {room!r} first")
        return conn

    def _bucket(self, conn: Connection, kind: str) -> TokenBucket:
        bucket = conn.buckets.get(kind)
        if bucket is None:
            bucket = conn.buckets[kind] = self.rates[kind].bucket()
        return bucket

    def _limit(self, conn: Connection, kind: str, what: str, cost: float = 1) -> None:
        """Spend ``cost`` from ``conn``'s ``kind`` bucket or refuse with rate_limited."""
        wait = self._bucket(conn, kind).take(cost)
        if wait:
            raise ChatError(ErrorCode.RATE_LIMITED, f"too many {what}; try again in {wait} ms",
                            retry_after=wait)

    def _reserve_reply(self, conn: Connection) -> None:
        """Take the most a join or history reply may cost, before doing the work
        (pipelined requests cannot all pass before the first is charged)."""
        self._limit(conn, "reply_bytes", "messages read", self.settings.max_reply_bytes)

    async def _read(self, conn: Connection, page: Awaitable[Page], *, keep_newest: bool
                    ) -> tuple[Page, Ack, bool]:
        """Await a reserved page; return it, its ``messages`` and, reading on,
        ``changes`` (in seq order) cut together to ``max_reply_bytes``, and
        whether more lie beyond them. What the reply did not use goes back to the connection's
        reply bucket."""
        budget = self.settings.max_reply_bytes
        used = 0
        try:
            with self.metrics.store_seconds.labels("page").time():
                read = await page
            stream: list[Entry] = sorted([*read.messages, *read.changes], key=lambda e: e.seq)
            kept, used, cut = fit([e.as_dict() for e in stream], budget, self.wire_size,
                                  keep_newest=keep_newest)
        finally:
            self._bucket(conn, "reply_bytes").charge(used - budget)
        entries: Ack = {"messages": [e for e in kept if "kind" not in e]}
        if not keep_newest:  # reading on: the stream, changes too
            entries["changes"] = [e for e in kept if "kind" in e]
        return read, entries, read.more or cut

    @acked
    async def on_join(self, sid: Sid, data: object = None) -> Ack:
        req = parse_join(data)
        conn = self.connections[sid]
        people = await self._may_join(conn, req.room)
        entering = req.room not in conn.rooms and req.room not in conn.joining
        if entering and len(conn.rooms) + len(conn.joining) >= self.settings.max_rooms:
            raise ChatError(ErrorCode.TOO_LARGE, f"a connection may be in at most "
                            f"{self.settings.max_rooms} rooms; leave one first")
        if people is None:  # (a direct conversation's join was charged before the store read)
            self._limit(conn, "join", "joins")
        self._reserve_reply(conn)
        if entering:
            # Counted before any await (pipelined joins cannot pass --max-rooms),
            # and in the Socket.IO room before reading history, so that whatever
            # is stored after the read is broadcast to us and nothing falls
            # between the two (a message may come both ways; clients drop seqs
            # they have).
            conn.joining.add(req.room)
            await self.enter_room(sid, req.room)
        if req.since is None:
            query = self.store.page(req.room, limit=JOIN_LATEST)
        else:
            query = self.store.page(req.room, after=req.since, limit=JOIN_SINCE_MAX)
        try:
            page, entries, more = await self._read(conn, query, keep_newest=req.since is None)
            reading = await self.store.mark(conn.name, req.room)
            receipts = await self.store.receipts(req.room) if self.settings.read_receipts \
                else None
            if entering:
                if people is not None:
                    conn.directs[req.room] = people
                await self._enter(sid, conn, req.room)  # the point of no return
            elif req.room not in conn.rooms:  # a join of it, racing this one, is not done
                raise ChatError(ErrorCode.UNAVAILABLE, f"already joining {req.room!r}; "
                                "try again")
        except BaseException:
            if entering and self.connections.get(sid) is conn:
                conn.rooms.discard(req.room)
                await self.leave_room(sid, req.room)
            raise
        finally:
            if entering:
                conn.joining.discard(req.room)
        ack = {"room": req.room, "seq": page.latest,
               "members": await self._members(conn, req.room), **entries, "more": more,
               "read": reading.read, "unread": reading.unread, "mentions": reading.mentions}
        if receipts is not None:
            ack["receipts"] = receipt_list(receipts)
        if people is not None:
            ack["with"] = sorted(people)
        return ack

    async def _may_join(self, conn: Connection, room: RoomName) -> frozenset[str] | None:
        """Refuse a join ``conn`` may not make; a direct conversation's people
        (the join is charged first: asking the store who is in it is work)."""
        if not conn.identity.may_join(room):
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        if not is_direct(room):
            return None
        if not self.settings.jwt_secret:
            raise _no_directs()
        self._limit(conn, "join", "joins")
        people = (await self.store.participants([room])).get(room, frozenset())
        if conn.name not in people:  # or no such conversation: the same answer
            raise ChatError(ErrorCode.FORBIDDEN,
                            "only its participants may join a direct conversation")
        return people

    async def _enter(self, sid: Sid, conn: Connection, room: RoomName) -> None:
        """Record ``sid`` in ``room``'s presence and tell the others. If presence
        fails, nothing has changed there (the caller leaves the Socket.IO room);
        once it has answered, the join is done, whatever fails after."""
        if self.connections.get(sid) is not conn:  # disconnected during the read
            raise ChatError(ErrorCode.BAD_REQUEST, "not connected")
        if not conn.identity.may_join(room):  # renewed meanwhile, to a token that does not
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        # A member from here on for housekeeping too (it leaves this entry alone
        # while the join's own presence call is under way).
        conn.rooms.add(room)
        conn.joining.discard(room)
        first = await self.presence.join(room, conn.name, sid)
        if self.connections.get(sid) is not conn:  # disconnected meanwhile
            await self.presence.leave(room, conn.name, sid)
            raise ChatError(ErrorCode.BAD_REQUEST, "not connected")
        if self.draining:  # after this node's presence was taken out in one step
            await self.presence.leave(room, conn.name, sid)
            raise ChatError(ErrorCode.UNAVAILABLE,
                            "this server is shutting down; reconnect and try again")
        if first:
            await self.emit("presence", {"room": room, "user": conn.name, "event": "join",
                                         "members": await self._members(conn, room)},
                            room=room, skip_sid=sid)
        log.info("join sid=%s name=%r transport=%s room=%s", sid, conn.name,
                 self._transport(sid), room)

    async def _members(self, conn: Connection, room: RoomName) -> list[str]:
        """``room``'s members; if presence cannot say, the members this node has
        (an answer to a join that is done, which must not fail for this)."""
        try:
            return await self.presence.members(room)
        except Exception as exc:
            log.error("members of %s: presence failed (%s); answering this node's",
                      room, exc, exc_info=not isinstance(exc, ChatError))
            return sorted({c.name for c in self.connections.values() if room in c.rooms}
                          | {conn.name})

    @acked
    async def on_leave(self, sid: Sid, data: object = None) -> Ack:
        req = parse_leave(data)
        conn = self._member(sid, req.room)
        self._limit(conn, "leave", "leaves")
        await self.leave_room(sid, req.room)
        await self._forget(sid, conn, req.room)
        log.info("leave sid=%s name=%r transport=%s room=%s", sid, conn.name,
                 self._transport(sid), req.room)
        return {}

    @acked
    async def on_send(self, sid: Sid, data: object = None) -> Ack:
        req = parse_send(data, max_text_length=self.settings.max_text_length)
        conn = self._member(sid, req.room)
        self._limit(conn, "send", "sends")
        people = conn.directs.get(req.room)
        # in a direct conversation every message is for all its people
        mentions = mentioned(req.text, conn.name) if people is None else \
            tuple(sorted(people - {conn.name}))
        with self.metrics.store_seconds.labels("append").time():
            message, created = await self.store.append(req.room, conn.name, req.text,
                                                       req.client_id, req.reply_to, mentions)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("send sid=%s room=%s seq=%d created=%s%s", sid, req.room, message.seq,
                      created, f" text={req.text!r}" if self.settings.log_message_text else "")
        if created:
            self.metrics.messages_received.inc()
            await self._broadcast(message, skip_sid=sid)
            for name in mentions:
                await self.emit("mention", {"room": message.room, "message": message.as_dict()},
                                room=person_room(name))
        return {"message": message.as_dict()}

    async def _broadcast(self, message: Message, skip_sid: Sid) -> None:
        await self.emit("message", message.as_dict(), room=message.room, skip_sid=skip_sid)

    @acked
    async def on_history(self, sid: Sid, data: object = None) -> Ack:
        req = parse_history(data)
        conn = self._member(sid, req.room)
        self._limit(conn, "history", "history requests")
        self._reserve_reply(conn)
        query = self.store.page(req.room, before=req.before, after=req.after, limit=req.limit)
        _, entries, more = await self._read(conn, query, keep_newest=req.after is None)
        return {**entries, "more": more}

    @acked
    async def on_search(self, sid: Sid, data: object = None) -> Ack:
        """Messages with the query's words, newest first, in one room the
        connection has joined or in all of them; each with its text cut into
        ``marked`` pieces (the matched words marked), bounded in bytes like a
        history reply; ``next`` goes on to older results."""
        req = parse_search(data)
        if req.room is not None:
            conn = self._member(sid, req.room)
            rooms = [req.room]
        else:
            conn = self.connections[sid]
            rooms = sorted(conn.rooms)
        self._limit(conn, "search", "searches")
        with self.searches.hold(conn.name):
            return await self._search(conn, req, rooms)

    async def _search(self, conn: Connection, req: SearchRequest, rooms: list[RoomName]
                      ) -> Ack:
        self._reserve_reply(conn)
        budget = self.settings.max_reply_bytes
        used = 0
        try:
            with self.metrics.store_seconds.labels("search").time():
                page = await self.store.search(rooms, req.terms, cursor=req.cursor,
                                               limit=req.limit,
                                               timeout=self.settings.search_timeout)
            results = [{"message": m.as_dict(), "marked": marked(m.text, req.terms)}
                       for m in page.messages]
            kept, used, cut = fit(results, budget, self.wire_size, keep_newest=False)
        finally:
            self._bucket(conn, "reply_bytes").charge(used - budget)
        more = page.more or cut
        return {"results": kept,
                "next": page.cursors[len(kept) - 1] if more and kept else None}

    @acked
    async def on_edit(self, sid: Sid, data: object = None) -> Ack:
        return await self._change(sid, parse_edit(
            data, max_text_length=self.settings.max_text_length))

    @acked
    async def on_delete(self, sid: Sid, data: object = None) -> Ack:
        return await self._change(sid, parse_delete(data))

    @acked
    async def on_react(self, sid: Sid, data: object = None) -> Ack:
        return await self._change(sid, parse_reaction(data, "react"))

    @acked
    async def on_unreact(self, sid: Sid, data: object = None) -> Ack:
        return await self._change(sid, parse_reaction(data, "unreact"))

    async def _change(self, sid: Sid, req: ChangeRequest) -> Ack:
        """Make a change to a message: an entry of the room's stream, broadcast
        to the room as a ``change`` event like a message (a retried one, found
        by its client id, is not broadcast again). The ack has the message as
        it stands after and the change (null when nothing changed)."""
        conn = self._member(sid, req.room)
        self._limit(conn, "change", "changes")
        window = self.settings.edit_window
        with self.metrics.store_seconds.labels("alter").time():
            altered = await self.store.alter(
                req.room, conn.name, req.kind, req.seq, req.value, req.client_id,
                moderator=conn.identity.moderator,
                edits_from=int((time.time() - window) * 1000) if window else None)
        change = altered.change.as_dict() if altered.change is not None else None
        if altered.created and change is not None:
            log.info("%s sid=%s name=%r room=%s seq=%d target=%d", req.kind, sid, conn.name,
                     req.room, change["seq"], req.seq)
            await self.emit("change", change, room=req.room, skip_sid=sid)
        return {"message": altered.message.as_dict(), "change": change}

    @acked
    async def on_typing(self, sid: Sid, data: object = None) -> Ack:
        req = parse_typing(data)
        conn = self._member(sid, req.room)
        self._limit(conn, "typing", "typing signals")
        await self.emit("typing", {"room": req.room, "user": conn.name, "active": req.active},
                        room=req.room, skip_sid=sid)
        return {}

    @acked
    async def on_rooms(self, sid: Sid, data: object = None) -> Ack:
        """The rooms with members now (no direct conversations), and the person's
        own rooms, most recently used first, with where they stand in each (a
        direct conversation also with its people)."""
        parse_rooms(data)
        conn = self.connections[sid]
        self._limit(conn, "rooms", "rooms requests")
        present = dict(await self.presence.rooms())
        mine = await self.store.readings(conn.name)
        directs = await self.store.participants([r.room for r in mine if is_direct(r.room)])
        listed: list[dict[str, Any]] = []
        for reading in mine:
            if is_direct(reading.room) and conn.name not in directs.get(reading.room, ()):
                continue  # (a room named dm:... before direct conversations were)
            entry = {"name": reading.room, "members": present.get(reading.room, 0),
                     "read": reading.read, "unread": reading.unread,
                     "mentions": reading.mentions, "seq": reading.latest}
            if reading.room in directs:
                entry["with"] = sorted(directs[reading.room])
            listed.append(entry)
        seen = {r.room for r in mine}
        listed += [{"name": name, "members": count} for name, count in present.items()
                   if name not in seen and not is_direct(name)]
        return {"rooms": listed}

    @acked
    async def on_read(self, sid: Sid, data: object = None) -> Ack:
        """Move the person's read marker in a room forward; their other
        connections (any node) are told at once, the room's members (with
        receipts on) in the next round."""
        req = parse_read(data)
        conn = self._member(sid, req.room)
        self._limit(conn, "read", "read marks")
        reading = await self.store.mark(conn.name, req.room, req.seq)
        for limited in (False, True):
            await self.emit("read", reading.as_dict(), skip_sid=sid,
                            room=person_room(conn.name, limited=limited))
        if self.settings.read_receipts:
            self.receipts.add(req.room, conn.name, reading.read)
        return reading.as_dict()

    async def _send_receipts(self, room: RoomName, data: dict[str, Any]) -> None:
        await self.emit("receipt", data, room=room)

    @acked
    async def on_direct(self, sid: Sid, data: object = None) -> Ack:
        """Open (or find again) the direct conversation of the connection's person
        and the people named; they are told with a ``direct`` event. The room is
        then joined like any other, by its participants only."""
        conn = self.connections[sid]
        if not self.settings.jwt_secret:
            raise _no_directs()
        req = parse_direct(data, max_people=MAX_PEOPLE)
        self._limit(conn, "direct", "direct conversations opened")
        people = sorted({conn.name, *req.people})
        if len(people) < 2:
            raise ChatError(ErrorCode.BAD_REQUEST, "name someone other than yourself")
        room = direct_room(people)
        self.openings.open(conn.name, room, people)
        await self.store.open_direct(room, people)
        for name in people:
            if name != conn.name:
                await self.emit("direct", {"room": room, "with": people, "from": conn.name},
                                room=person_room(name))
        log.info("direct sid=%s name=%r room=%s people=%d", sid, conn.name, room, len(people))
        return {"room": room, "with": people}

    @acked
    async def on_renew(self, sid: Sid, data: object = None) -> Ack:
        req = parse_renew(data)
        conn = self.connections[sid]
        self._limit(conn, "renew", "renewals")
        if not self.settings.jwt_secret:
            raise ChatError(ErrorCode.BAD_REQUEST, "this server takes names, not tokens")
        identity = verify_token(req.token, self.settings.jwt_secret)
        if identity.name != conn.name:
            raise ChatError(ErrorCode.UNAUTHORIZED, "the token is for another user")
        outside = sorted(room for room in conn.rooms if not identity.may_join(room))
        if outside:
            raise ChatError(ErrorCode.UNAUTHORIZED,
                            f"the token does not admit you to {outside[0]!r}; leave it first")
        # in force before any await: a join in flight checks it again before it
        # enters (_enter), so none can enter a room the new token does not admit
        previous, conn.identity = conn.identity, identity
        self._arm_expiry(sid, conn)
        if own_room(identity) != own_room(previous):
            await self.leave_room(sid, own_room(previous))
            await self.enter_room(sid, own_room(identity))
        log.info("renew sid=%s name=%r", sid, conn.name)
        expires = identity.expires
        return {"expires": int(expires) if expires is not None and expires.is_integer()
                else expires}
