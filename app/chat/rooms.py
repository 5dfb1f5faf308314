"""Rooms: who is in which room. The one owner of membership.

A connection is in a room when it is in ``Connection.rooms`` (this node's
truth), in the transport's room of that name (it receives the room's events)
and in presence (every node's view, by name). :class:`Rooms` alone changes
all three, in an order that leaves no gap: a joining connection enters the
transport's room *before* its history is read, so whatever is stored after
the read reaches it, and it is recorded in presence only once the join can
no longer fail. Each name's arrival and departure is told to the room once
(``presence`` events), whichever node it happens on.

A connection that **drops** (its transport closed, timed out or failed, or
its node shut down) stays in presence for ``--presence-grace`` seconds
after it is gone (:meth:`Rooms.forget_all` with ``linger``): the person
back within it, on any node, was never seen to leave, and their return is
no join (presence counts their name as present all along); after it, the
entry goes as a leave would, announced if the name is then gone. A leave,
a goodbye from the client, or the server ending the connection (a ban, an
expired token) takes the name out at once. A node shutting down hands its
entries to the others the same way (:meth:`Rooms.drain`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.models import JOIN, JOIN_CLIENT_ID, Entry, RoomName, Sid, now_ms
from ..core.policy import Act, RoomSettings, Standing, check_join
from ..presence import Presence
from ..settings import Settings
from ..store import MessageStore
from ..store.shared import TurnShared
from .connections import Connection, Connections, log_failure
from .cursors import owner
from .directs import is_direct
from .protocol import JOIN_LATEST, JOIN_SINCE_MAX, JoinRequest, MembersRequest
from .receipts import receipt_list
from .replies import Replies
from .roster import Roster
from .wire import Wire

log = logging.getLogger("app.chat")

Ack = dict[str, Any]


MAX_LINGERING = 200_000  # dropped connections' entries in their grace, at most (then: at once)


def no_directs() -> ChatError:
    return ChatError(ErrorCode.FORBIDDEN, "direct conversations need token mode: this server "
                     "takes names without proof (start it with --jwt-secret)")


class Rooms:
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 connections: Connections, replies: Replies, wire: Wire,
                 watchers: list[Callable[[Entry], None]]) -> None:
        self.settings = settings
        self.store = store
        self.presence = presence
        self.connections = connections
        self.replies = replies
        self.wire = wire
        self.watchers = watchers  # told of every entry stored (the webhooks)
        self.roster = Roster(settings, presence, wire)  # what members are told of presence
        self._receipts = TurnShared()  # a room's receipts in their wire form, per turn
        self.draining = False  # this node is shutting down: no new joins
        self._housekeeping: asyncio.Task[None] | None = None
        # dropped connections' entries, kept for --presence-grace: (room, sid) ->
        # (name, the timer that forgets it); and the forgetting under way
        self.lingering: dict[tuple[RoomName, Sid], tuple[str, asyncio.TimerHandle]] = {}
        self._forgetting: set[asyncio.Task[None]] = set()

    # -- join -----------------------------------------------------------------------

    async def join(self, conn: Connection, req: JoinRequest) -> Ack:
        """Join (or rejoin, with ``since``) a room: its latest messages, or the
        stream after ``since``, where the person stands, its members."""
        room = req.room
        people = await self.admit(conn, room)
        entering = room not in conn.rooms and room not in conn.joining
        if entering and len(conn.rooms) + len(conn.joining) >= self.settings.max_rooms:
            raise ChatError(ErrorCode.TOO_LARGE, f"a connection may be in at most "
                            f"{self.settings.max_rooms} rooms; leave one first")
        if people is None:  # (a direct conversation's join was charged before the store read)
            self.connections.limit(conn, "join", "joins")
        self.replies.reserve(conn)
        if conn.barred:  # a ban or removal during an earlier join is read afresh
            conn.barred.discard(room)
        if entering:  # counted before any await: pipelined joins cannot pass --max-rooms
            conn.joining[room] = None
        try:
            # The room's rules, read before entering the transport's room (one
            # they keep out receives nothing of it); an action stored after the
            # read reaches this node as an event, which bars the join.
            settings, standing = await self.ruled(conn, room)
            if entering:
                # In the transport's room before reading history, so that whatever
                # is stored after the read is broadcast to us and nothing falls
                # between the two (a message may come both ways; clients drop seqs
                # they have).
                await self.wire.enter_room(conn.sid, room)
            if conn.barred and room in conn.barred:
                raise ChatError(ErrorCode.FORBIDDEN, f"you were taken out of {room!r}")
            if entering and req.since is None and people is None and self.settings.record_joins:
                await self._first_entry(conn, room)
            since, position = req.since, None
            if req.cursor is not None:  # a consumer reads on from where it stands
                position = await self.store.cursor(owner(conn.name, req.cursor), room)
                since = position if since is None else since
            query = self.store.page(room, limit=JOIN_LATEST) if since is None else \
                self.store.page(room, after=since, limit=JOIN_SINCE_MAX)
            page, entries, more = await self.replies.read(conn, query,
                                                          keep_newest=since is None)
            reading = await self.store.mark(conn.name, room)
            receipts = await self.receipts(room) if self.settings.read_receipts else None
            if entering:
                if people is not None:
                    conn.directs[room] = people
                await self._enter(conn, room)  # the point of no return
            elif room not in conn.rooms:  # a join of it, racing this one, is not done
                raise ChatError(ErrorCode.UNAVAILABLE, f"already joining {room!r}; try again")
        except BaseException:
            if entering and self.connections.is_current(conn):
                conn.rooms.pop(room, None)
                await self.wire.leave_room(conn.sid, room)
            raise
        finally:
            if entering:
                conn.joining.pop(room, None)
        ack = {"room": room, "seq": page.latest, **await self.listing(conn, room),
               **entries, "more": more, "read": reading.read, "unread": reading.unread,
               "mentions": reading.mentions}
        if receipts is not None:
            ack["receipts"] = receipts
        if (gone := page.gone(since)) is not None:  # what retention removed of it
            ack["gone"] = gone
        if settings is not None:  # a governed room: its settings, and where you stand
            ack["settings"] = settings.as_dict()
            ack["you"] = standing.as_dict(now_ms())
        if people is not None:
            ack["with"] = sorted(people)
        if req.cursor is not None:
            ack["cursor"] = position
        return ack

    async def receipts(self, room: RoomName) -> list[dict[str, Any]]:
        """``room``'s read receipts in their wire form, read and built once for
        all the joins of the room in one turn of the loop (a reconnect storm's
        hundreds: :mod:`app.store.shared`). Shared: not to be changed."""
        return await self._receipts.call(room, lambda: self._receipt_list(room))

    async def _receipt_list(self, room: RoomName) -> list[dict[str, Any]]:
        return receipt_list(await self.store.receipts(room))

    async def admit(self, conn: Connection, room: RoomName) -> frozenset[str] | None:
        """Refuse ``conn`` a room it may not enter (join, or act in through the
        HTTP API); a direct conversation's people (the join is charged first:
        asking the store who is in it is work)."""
        if not conn.identity.may_join(room):
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        if not is_direct(room):
            return None
        if not self.settings.jwt_secret:
            raise no_directs()
        self.connections.limit(conn, "join", "joins")
        people = (await self.store.participants([room])).get(room, frozenset())
        if conn.name not in people:  # or no such conversation: the same answer
            raise ChatError(ErrorCode.FORBIDDEN,
                            "only its participants may join a direct conversation")
        return people

    async def ruled(self, conn: Connection, room: RoomName
                    ) -> tuple[RoomSettings | None, Standing]:
        """Refuse ``conn`` a room whose rules keep it out (banned; private and
        not a member: :func:`app.core.policy.check_join`); the room's settings
        and its standing there, which also says whether it is muted."""
        settings, standing = await self.store.standing(room, conn.name)
        check_join(room, settings, standing, conn.identity.power, now_ms())
        if standing.muted is not None:
            conn.muted = {**(conn.muted or {}), room: standing.muted}
        elif conn.muted:
            conn.muted.pop(room, None)
        return settings, standing

    async def _first_entry(self, conn: Connection, room: RoomName) -> None:
        """With --record-joins, a person's first entry to a room (they have no
        read marker there yet) is an entry of its stream, recorded once (its
        client id is the server's: a join that failed after it finds it again),
        and told to the room's other members as a ``change`` and to the
        watchers (the webhooks' ``joins``). Before the history read: the
        joiner's page counts it."""
        if await self.store.readings(conn.name, [room]):
            return  # been here before
        joined = await self.store.govern(room, conn.name, Act(JOIN), JOIN_CLIENT_ID)
        if joined.created:
            for watcher in self.watchers:
                watcher(joined.action)
            await self.wire.emit("change", joined.action.as_dict(), room=room,
                                 skip_sid=conn.sid)

    async def _enter(self, conn: Connection, room: RoomName) -> None:
        """Record ``conn`` in ``room``'s presence and tell the others. If presence
        fails, nothing has changed there (the caller leaves the transport's
        room); once it has answered, the join is done, whatever fails after."""
        if not self.connections.is_current(conn):  # disconnected during the read
            raise ChatError(ErrorCode.BAD_REQUEST, "not connected")
        if not conn.identity.may_join(room):  # renewed meanwhile to a token that does not
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        if conn.barred and room in conn.barred:  # banned or removed meanwhile
            raise ChatError(ErrorCode.FORBIDDEN, f"you were taken out of {room!r}")
        # A member from here on for housekeeping too (it leaves this entry alone
        # while the join's own presence call is under way).
        conn.rooms[room] = None
        conn.joining.pop(room, None)
        first = await self.presence.join(room, conn.name, conn.sid)
        if not self.connections.is_current(conn):  # disconnected meanwhile
            await self.presence.leave(room, conn.name, conn.sid)
            raise ChatError(ErrorCode.BAD_REQUEST, "not connected")
        if self.draining:  # after this node's presence was taken out in one step
            await self.presence.leave(room, conn.name, conn.sid)
            raise ChatError(ErrorCode.UNAVAILABLE,
                            "this server is shutting down; reconnect and try again")
        if first:  # the join is done: telling the others must not undo it
            try:
                await self.roster.changed(room, conn.name, "join", skip_sid=conn.sid)
            except Exception as exc:
                log.error("join sid=%s room=%s: telling the room failed (%s); its members "
                          "learn of it from the next change or catch_up", conn.sid, room, exc,
                          exc_info=not isinstance(exc, ChatError))
        log.info("join sid=%s name=%r transport=%s room=%s", conn.sid, conn.name,
                 self.wire.transport(conn.sid), room)

    async def listing(self, conn: Connection, room: RoomName) -> dict[str, Any]:
        """``room``'s members (all, or a first page) and count; if presence cannot
        say, the members this node has (an answer to a join that is done, which
        must not fail for this)."""
        try:
            return await self.roster.listing(room)
        except Exception as exc:
            log.error("members of %s: presence failed (%s); answering this node's",
                      room, exc, exc_info=not isinstance(exc, ChatError))
            members = sorted({c.name for c in self.connections.by_sid.values()
                              if room in c.rooms} | {conn.name})
            return {"members": members, "count": len(members)}

    async def members_page(self, conn: Connection, req: MembersRequest) -> dict[str, Any]:
        """A page of a room's members (``members``), for a member of it."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "members", "member-list pages")
        return {"room": req.room, **await self.roster.page(req.room, req.cursor, req.limit)}

    # -- leave ----------------------------------------------------------------------

    async def leave(self, conn: Connection, room: RoomName) -> None:
        self.connections.member(conn, room)
        self.connections.limit(conn, "leave", "leaves")
        await self.wire.leave_room(conn.sid, room)
        await self.forget(conn, room)
        log.info("leave sid=%s name=%r transport=%s room=%s", conn.sid, conn.name,
                 self.wire.transport(conn.sid), room)

    async def forget_all(self, conn: Connection, *, linger: bool = False) -> None:
        """A connection closed: out of each of its rooms, whatever fails; with
        ``linger`` (it dropped), its presence stays for ``--presence-grace``."""
        grace = self.settings.presence_grace
        for room in sorted(conn.rooms):
            if linger and grace and len(self.lingering) < MAX_LINGERING:
                conn.rooms.pop(room, None)
                conn.directs.pop(room, None)
                key = (room, conn.sid)
                timer = asyncio.get_running_loop().call_later(grace, self._linger_ends, key)
                self.lingering[key] = (conn.name, timer)
            else:
                await self.forget(conn, room)

    def _linger_ends(self, key: tuple[RoomName, Sid]) -> None:
        name, _ = self.lingering.pop(key)
        task = asyncio.create_task(self._forget_entry(*key, name),
                                   name=f"presence grace of {key[1]} in {key[0]}")
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)
        task.add_done_callback(log_failure)

    async def _forget_entry(self, room: RoomName, sid: Sid, name: str) -> None:
        """A dropped connection's grace is over: its entry goes, and its name's
        departure is told if nobody came back under that name meanwhile."""
        try:
            if await self.presence.leave(room, name, sid):
                await self.announce_leave(room, name)
        except Exception as exc:
            log.error("presence grace of sid=%s in %s: presence failed (%s); housekeeping "
                      "repairs it", sid, room, exc, exc_info=not isinstance(exc, ChatError))

    async def stop_lingering(self) -> None:
        """Shutdown: no grace ends on this node any more (the entries are the
        other nodes' now, or nobody's: see :meth:`drain`)."""
        for _, timer in self.lingering.values():
            timer.cancel()
        self.lingering.clear()
        await asyncio.gather(*self._forgetting, return_exceptions=True)

    async def forget(self, conn: Connection, room: RoomName) -> None:
        """Drop ``conn`` from ``room``'s presence; announce it if the name left.
        The connection has left already: if presence fails, that is logged
        and its housekeeping repairs the entry (against conn.rooms) later."""
        conn.rooms.pop(room, None)
        conn.directs.pop(room, None)
        try:
            if await self.presence.leave(room, conn.name, conn.sid):
                await self.announce_leave(room, conn.name)
        except Exception as exc:
            log.error("leave sid=%s room=%s: presence failed (%s); housekeeping repairs it",
                      conn.sid, room, exc, exc_info=not isinstance(exc, ChatError))

    async def announce_leave(self, room: RoomName, name: str) -> None:
        """Tell the room that ``name`` left (also for names of a node that died)."""
        await self.roster.changed(room, name, "leave")

    async def announce_join(self, room: RoomName, name: str) -> None:
        """Tell the room that ``name`` is here (a join presence restored after
        a Redis outage, which the other nodes did not hear of then). Its own
        connections are told too: the member list they had may be one that
        an outage cut short."""
        await self.roster.changed(room, name, "join")

    # -- the node's part --------------------------------------------------------------

    def local_members(self) -> list[tuple[RoomName, Sid, str]]:
        """Every (room, sid, name) joined on this node, and every dropped one
        within its grace: presence's local truth."""
        return [(room, sid, conn.name) for sid, conn in list(self.connections.by_sid.items())
                for room in conn.rooms] + [(room, sid, name) for (room, sid), (name, _)
                                           in list(self.lingering.items())]

    def here(self) -> set[RoomName]:
        """The rooms with a member connected to this node."""
        return {room for conn in self.connections.by_sid.values() for room in conn.rooms}

    async def drain(self) -> None:
        """Shutdown begins. With ``--presence-grace``, this node's entries are
        handed to the cluster for the grace (:meth:`Presence.hand_off`) and its
        connections, as they close, linger like any dropped one: a person who
        reconnects to another node within it is never seen to leave. Without
        it, take this node's connections out of presence in one step and tell
        each room's other members, on the other nodes, of each name that is
        thereby gone (once; not the leaving connections themselves)."""
        self.draining = True
        # housekeeping stops first (a round under way would write back entries
        # of joins it saw in flight), and this node's members are gone from its
        # own view before they are gone from Redis
        await self.stop_housekeeping()
        if self.settings.presence_grace:
            try:
                await self.presence.hand_off(self.settings.presence_grace)
            except Exception:
                log.exception("handing presence off failed; the other nodes will clean up")
            log.info("draining: presence kept for %g s (--presence-grace)",
                     self.settings.presence_grace)
            return
        leaving: dict[RoomName, list[Sid]] = {}
        for sid, conn in self.connections.by_sid.items():
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
                await self.roster.changed(room, name, "leave", skip_sid=leaving.get(room, []))
            except Exception:
                log.exception("announcing %r leaving %s failed", name, room)
        await self.roster.flush()  # (a large room's, gathered: told before the node goes)
        log.info("draining: %d names left %d rooms", len(gone), len({r for r, _ in gone}))

    def start_housekeeping(self) -> None:
        """Presence housekeeping, for as long as this node serves (see Presence.maintain)."""
        self._housekeeping = asyncio.create_task(
            self.presence.maintain(self.local_members, self.announce_leave, self.announce_join),
            name="presence-housekeeping")
        self._housekeeping.add_done_callback(log_failure)

    async def stop_housekeeping(self) -> None:
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
