"""Governance: owners, moderators and members of rooms, and what they do.

Every action (create, configure, role, remove, ban, unban, mute, unmute) is
decided by the store in the order of the room's stream
(:func:`app.core.policy.decide`, :mod:`app.store.stream`) and becomes an
entry of it, broadcast to the room as a ``change`` without ``target``: a
client that was away receives the actions it missed with the messages,
once, in order. The same ``change`` reaching each node (through fan-out, as
every event does) is what that node acts on (:meth:`Governance.observed`):
the connections there of a person banned or removed leave the room (in
order with the room's events: nothing sent after the action reaches them),
and a mute holds back their typing signals.

Identity: in token mode a person's roles are theirs by the token's name; in
open (name) mode anyone may take any name, so nothing there gives power by
name: no room is created with an owner, no role is given and no room is
private; an API key's scope (moderate, admin) and a token's ``moderator``
claim give power in every room they may enter, whatever the mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.models import Entry, RoomName, now_ms
from ..core.policy import (MODERATOR, NO_STANDING, SENDS_OUT, Act, banned_message, check_join,
                           level)
from ..settings import Settings
from ..store import MessageStore
from .connections import Connection, Connections, log_failure, person_room
from .directs import is_direct
from .protocol import (AuditRequest, GovernRequest, InviteRequest, ReportRequest,
                       RevokeRequest)
from .rooms import Rooms
from .wire import Wire

log = logging.getLogger("app.chat")

Ack = dict[str, Any]

# what gives power by name, which open mode cannot prove
NEEDS_TOKENS = frozenset({"create", "role"})
RECHECKED = 10_000  # standings read to recheck a room's members after lost events
OPEN_REPORTS = 1000  # per room, until its moderators resolve some
OPEN_INVITES = 100  # per room, until they expire, are used up or revoked
REPORTED_TEXT = 300  # characters of the reported message kept with the report


class Governance:
    def __init__(self, settings: Settings, store: MessageStore, connections: Connections,
                 rooms: Rooms, wire: Wire, watchers: list[Callable[[Entry], None]]) -> None:
        self.settings = settings
        self.store = store
        self.connections = connections
        self.rooms = rooms
        self.wire = wire
        self.watchers = watchers  # told of every entry stored (the webhooks)
        self._ousting: set[asyncio.Task[None]] = set()  # presence of those taken out

    async def act(self, conn: Connection, req: GovernRequest) -> Ack:
        """Do an action; the ack has it as stored, the room's settings after it,
        and the standing of the person it was on."""
        room = req.room
        if is_direct(room):
            raise ChatError(ErrorCode.FORBIDDEN, "a direct conversation has no owners or "
                            "moderators")
        if not conn.identity.may_join(room):
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        if not self.settings.jwt_secret and (req.kind in NEEDS_TOKENS
                                             or any(k == "private" for k, _ in req.settings)):
            raise ChatError(ErrorCode.FORBIDDEN, "owners, roles and private rooms need token "
                            "mode (--jwt-secret): on this server anyone may take any name")
        retention = dict(req.settings).get("retention")
        bound = self.settings.retention
        if retention and bound and retention > bound:
            raise ChatError(ErrorCode.BAD_REQUEST, f"retention may be at most {bound} s here "
                            "(the server's --retention): 0 keeps the server's")
        self.connections.limit(conn, "change", "moderation actions")
        until = now_ms() + req.seconds * 1000 if req.seconds is not None else None
        act = Act(req.kind, req.user, req.role, until, req.reason, req.settings)
        governed = await self.store.govern(room, conn.name, act, req.client_id,
                                           power=conn.identity.power)
        action = governed.action.as_dict()
        if governed.created:
            for watcher in self.watchers:
                watcher(governed.action)
            log.info("%s sid=%s name=%r room=%s seq=%d user=%r", req.kind, conn.sid, conn.name,
                     room, governed.action.seq, req.user)
            await self.wire.emit("change", action, room=room, skip_sid=conn.sid)
        ack: Ack = {"action": action, "settings": governed.settings.as_dict()}
        if governed.standing is not None:
            ack["standing"] = governed.standing.as_dict(now_ms())
        return ack

    async def info(self, conn: Connection, room: RoomName) -> Ack:
        """A room's settings, your standing, and its people: to its moderators
        and owners everyone with a role, a ban or a mute; to the others, its
        owners and moderators."""
        if not conn.identity.may_join(room):
            raise ChatError(ErrorCode.UNAUTHORIZED, f"your token does not admit you to {room!r}")
        self.connections.limit(conn, "history", "room requests")
        settings, people = await self.store.standings(room)
        now = now_ms()
        you = people.get(conn.name)
        mine = level(you, conn.identity.power) if you is not None else conn.identity.power
        shown = {name: standing.as_dict(now) for name, standing in people.items()
                 if mine >= MODERATOR or (standing.role in ("owner", "moderator"))}
        return {"room": room, "governed": settings is not None,
                "settings": settings.as_dict() if settings is not None else None,
                "you": you.as_dict(now) if you is not None else {"role": None},
                "people": [{"user": name, **shown[name]} for name in sorted(shown)]}

    async def audit(self, conn: Connection, req: AuditRequest) -> Ack:
        """The room's actions, newest first (its moderators and owners only)."""
        await self._moderating(conn, req.room, "read its audit log")
        found = await self.store.actions(req.room, before=req.before, limit=req.limit + 1)
        return {"actions": [a.as_dict() for a in found[:req.limit]],
                "more": len(found) > req.limit}

    # -- invites ------------------------------------------------------------------

    async def invite(self, conn: Connection, req: InviteRequest) -> Ack:
        """A new invite to a private room: its code (shown this once; the store
        keeps its hash), which makes whoever joins with it a member, for
        ``seconds`` and ``uses`` joins, while its maker may still add members."""
        await self._moderating(conn, req.room, "invite people")
        self.connections.limit(conn, "change", "invites")
        kind = f"invite:{req.room}"
        now = now_ms()
        found = await self.store.records(kind)
        live = {k: i for k, i in found.items() if not expired(i, now)}
        for key in set(found) - set(live):
            await self.store.drop_record(kind, key)
        if len(live) >= OPEN_INVITES:
            raise ChatError(ErrorCode.TOO_LARGE, f"{req.room!r} has {len(live)} open invites; "
                            "revoke some first")
        code = secrets.token_urlsafe(16)
        digest = hashlib.sha256(code.encode()).hexdigest()
        shown = {"id": digest[:12], "room": req.room, "by": conn.name, "created": now,
                 "expires": now + req.seconds * 1000 if req.seconds else None,
                 "uses": req.uses}
        # (with the power the maker's identity gives: a token's moderator claim)
        await self.store.put_record(kind, digest, {**shown, "power": conn.identity.power})
        log.info("invite sid=%s name=%r room=%s id=%s", conn.sid, conn.name, req.room,
                 shown["id"])
        return {"invite": {**shown, "code": code}}

    async def invites(self, conn: Connection, room: RoomName) -> Ack:
        """The room's open invites, without their codes (moderators)."""
        await self._moderating(conn, room, "see its invites")
        now = now_ms()
        found = await self.store.records(f"invite:{room}")
        return {"room": room, "invites": sorted(
            ({k: v for k, v in i.items() if k != "power"} for i in found.values()
             if not expired(i, now)), key=lambda i: i["created"])}

    async def revoke(self, conn: Connection, req: RevokeRequest) -> Ack:
        await self._moderating(conn, req.room, "revoke its invites")
        kind = f"invite:{req.room}"
        for key, invite in (await self.store.records(kind)).items():
            if invite["id"] == req.id:
                await self.store.drop_record(kind, key)
                log.info("revoke sid=%s name=%r room=%s id=%s", conn.sid, conn.name,
                         req.room, req.id)
                return {"room": req.room, "id": req.id}
        raise ChatError(ErrorCode.NOT_FOUND, f"{req.room!r} has no open invite {req.id!r}")

    async def redeem(self, conn: Connection, room: RoomName, code: str) -> None:
        """Make ``conn``'s person a member of ``room`` with an invite's code: a
        ``role`` action by the invite's maker, decided by their standing now
        (one who may no longer add members makes invites that no longer work)."""
        if not self.settings.jwt_secret:
            raise ChatError(ErrorCode.FORBIDDEN, "invites need token mode (--jwt-secret)")
        self.connections.limit(conn, "change", "invites")
        kind, digest = f"invite:{room}", hashlib.sha256(code.encode()).hexdigest()
        invite = (await self.store.records(kind)).get(digest)
        now = now_ms()
        if invite is None or expired(invite, now):
            raise ChatError(ErrorCode.FORBIDDEN, f"that invite to {room!r} has expired, been "
                            "used up or revoked, or never was")
        _, you = await self.store.standing(room, conn.name)
        if you.is_banned(now):
            raise ChatError(ErrorCode.FORBIDDEN, banned_message(room, you))
        if you.role is not None:
            return  # a member already: the invite is not spent
        governed = await self.store.govern(
            room, invite["by"], Act("role", conn.name, "member", reason="invite"),
            f"invite:{invite['id']}:{conn.name}"[:64], power=int(invite.get("power", 0)))
        if invite.get("uses") is not None:
            left = int(invite["uses"]) - 1
            if left:
                await self.store.put_record(kind, digest, {**invite, "uses": left})
            else:
                await self.store.drop_record(kind, digest)
        if governed.created:
            for watcher in self.watchers:
                watcher(governed.action)
            log.info("redeem sid=%s name=%r room=%s id=%s", conn.sid, conn.name, room,
                     invite["id"])
            await self.wire.emit("change", governed.action.as_dict(), room=room)

    # -- reports ------------------------------------------------------------------

    async def report(self, conn: Connection, req: ReportRequest) -> Ack:
        """A member reports a message of the room to its moderators and owners
        (told at once with a ``report`` event, wherever they are connected);
        a second report of one message by one person replaces the first."""
        self.connections.member(conn, req.room)
        self.connections.limit(conn, "change", "reports")
        kind = f"report:{req.room}"
        key = f"{req.seq}:{conn.name}"
        page = await self.store.page(req.room, after=req.seq - 1, limit=1)
        reported = next((m for m in page.messages if m.seq == req.seq and not m.deleted), None)
        if reported is None:
            raise ChatError(ErrorCode.NOT_FOUND, f"there is no message {req.seq} in "
                            f"{req.room!r} to report")
        found = await self.store.records(kind)
        if key not in found and len(found) >= OPEN_REPORTS:
            raise ChatError(ErrorCode.TOO_LARGE, f"{req.room!r} has {len(found)} open reports;"
                            " its moderators have yet to resolve them")
        report = {"room": req.room, "seq": req.seq, "by": conn.name, "reason": req.reason,
                  "ts": now_ms(), "from": reported.sender,
                  "text": reported.text[:REPORTED_TEXT]}
        await self.store.put_record(kind, key, report)
        log.info("report sid=%s name=%r room=%s seq=%d", conn.sid, conn.name, req.room,
                 req.seq)
        await self._tell_moderators(req.room, report)
        return {"report": report}

    async def reports(self, conn: Connection, room: RoomName) -> Ack:
        """The room's open reports, oldest first (its moderators and owners)."""
        await self._moderating(conn, room, "read its reports")
        found = await self.store.records(f"report:{room}")
        return {"room": room, "reports": sorted(found.values(),
                                                key=lambda r: (r["ts"], r["seq"], r["by"]))}

    async def resolve(self, conn: Connection, req: ReportRequest) -> Ack:
        """Close every open report of message ``seq`` (what was done about it,
        if anything, is an action of its own: a delete, a ban, ...)."""
        await self._moderating(conn, req.room, "resolve its reports")
        self.connections.limit(conn, "change", "resolutions")
        kind = f"report:{req.room}"
        closed = [key for key, r in (await self.store.records(kind)).items()
                  if r.get("seq") == req.seq]
        for key in closed:
            await self.store.drop_record(kind, key)
        log.info("resolve sid=%s name=%r room=%s seq=%d reports=%d", conn.sid, conn.name,
                 req.room, req.seq, len(closed))
        resolution = {"room": req.room, "seq": req.seq, "resolved": len(closed),
                      "by": conn.name, "reason": req.reason, "ts": now_ms()}
        await self._tell_moderators(req.room, resolution)
        return resolution

    async def _moderating(self, conn: Connection, room: RoomName, what: str) -> None:
        self.connections.limit(conn, "history", "moderation requests")
        _, you = await self.store.standing(room, conn.name)
        if level(you, conn.identity.power) < MODERATOR:
            raise ChatError(ErrorCode.FORBIDDEN, f"only a moderator or an owner of {room!r} "
                            f"may {what}")

    async def _tell_moderators(self, room: RoomName, event: dict[str, Any]) -> None:
        _, people = await self.store.standings(room)
        for name, standing in people.items():
            if standing.role in ("owner", "moderator"):
                await self.wire.emit("report", event, room=person_room(name))

    # -- every node ---------------------------------------------------------------

    async def observed(self, change: Any) -> None:
        """A ``change`` event reached this node's members of its room: if it is
        an action on a person, act on their connections here. Runs as fan-out
        delivers the event, before the room's next one: it must not suspend."""
        if not isinstance(change, dict) or "target" in change:
            return  # a change to a message
        kind, room, user = change.get("kind"), change.get("room"), change.get("user")
        if kind not in ("ban", "remove", "mute", "unmute") or not isinstance(user, str) \
                or not isinstance(room, str):
            return
        for conn in [c for c in self.connections.by_sid.values() if c.name == user]:
            if kind == "mute":
                until = change.get("until")
                if isinstance(until, int):
                    conn.muted = {**(conn.muted or {}), RoomName(room): until}
            elif kind == "unmute":
                if conn.muted:
                    conn.muted.pop(RoomName(room), None)
            else:
                assert kind in SENDS_OUT
                await self.oust(conn, RoomName(room))

    async def recheck(self, room: RoomName) -> None:
        """Fan-out may have lost events of ``room``: take out of it this node's
        connections that its rules now keep out, and refresh their mutes."""
        here = [c for c in self.connections.by_sid.values() if room in c.rooms]
        if not here:
            return
        settings, people = await self.store.standings(room, RECHECKED)
        if settings is None:
            return
        complete = len(people) < RECHECKED  # else a member may be missing from it
        now = now_ms()
        for conn in here:
            standing = people.get(conn.name, NO_STANDING)
            if conn.name not in people and not complete:
                continue
            try:
                check_join(room, settings, standing, conn.identity.power, now)
            except ChatError:
                await self.oust(conn, room)
                continue
            if standing.muted is not None:
                conn.muted = {**(conn.muted or {}), room: standing.muted}
            elif conn.muted:
                conn.muted.pop(room, None)

    async def oust(self, conn: Connection, room: RoomName) -> None:
        """Take ``conn`` out of ``room`` now (a join of it under way fails); its
        presence follows in the background."""
        if room in conn.joining:
            conn.barred = (conn.barred or set()) | {room}
        if room not in conn.rooms and room not in conn.joining:
            return
        log.info("ousted sid=%s name=%r room=%s", conn.sid, conn.name, room)
        conn.rooms.pop(room, None)
        await self.wire.leave_room(conn.sid, room)
        task = asyncio.create_task(self.rooms.forget(conn, room), name=f"oust {conn.sid}")
        self._ousting.add(task)
        task.add_done_callback(self._ousting.discard)
        task.add_done_callback(log_failure)

    async def stop(self) -> None:
        await asyncio.gather(*self._ousting, return_exceptions=True)


def expired(invite: dict[str, Any], now: int) -> bool:
    return invite.get("expires") is not None and int(invite["expires"]) <= now
