"""Connections: who is connected to this node, as whom, and what each may spend.

:class:`Connections` owns every :class:`Connection` of this node: it admits
a new one (identity, the per-name and per-address bounds), ends it when its
token expires unless renewed, forgets it, and meters what each spends
(token buckets per event kind, the reply-bytes budget). Which rooms a
connection is in is :mod:`app.chat.rooms`' to say.

Each connection is also in its person's own room (:func:`person_room`, a
name no chat room can have): what concerns the person wherever they are
connected (their read markers moving, mentions of them, a direct
conversation opened with them) is emitted there, and fan-out carries it to
every node. A connection whose token admits it to some rooms only is in the
person's *limited* room instead, which gets their read markers but no
mentions (a mention would show it a message of a room it may not enter).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ChatError, ErrorCode
from ..core.limits import Rate, TokenBucket
from ..core.models import RoomName, Sid
from ..metrics import Metrics
from ..settings import RATED, Settings
from .auth import Identity, identify, verify_token
from .wire import Wire

log = logging.getLogger("app.chat")  # the event log: its name stays what operators filter on


@dataclass(slots=True)
class Connection:
    """What the chat knows about one connection."""

    sid: Sid
    identity: Identity
    transport: str
    address: str
    # the rooms it is in, and its joins in flight, not in rooms yet (dicts used
    # as ordered sets: an empty one is 64 bytes, a set 216)
    rooms: dict[RoomName, None] = field(default_factory=dict)
    joining: dict[RoomName, None] = field(default_factory=dict)
    # one per event kind (and "reply_bytes"), made on first use: an idle
    # connection holds none, nor the dict
    buckets: dict[str, TokenBucket] | None = None
    expiry: asyncio.TimerHandle | None = None  # token mode: ends the connection at exp
    expired: bool = False
    directs: dict[RoomName, frozenset[str]] = field(default_factory=dict)  # joined: people
    # governance (app.chat.governance), made on first use: the rooms it is muted
    # in (until, ms), and those a ban or removal took it out of while it joined
    muted: dict[RoomName, int] | None = None
    barred: set[RoomName] | None = None
    # the last of its sends that waits before it reaches the store (for its
    # files): the sends after it wait for it (app.chat.messages)
    sending: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self.identity.name


def person_room(name: str, *, limited: bool = False) -> str:
    """The room of the connections of the person ``name`` (``@`` and the name:
    no chat room name has an ``@``); ``limited``: of those whose token admits
    them to some rooms only."""
    return "@" + name + ("\n" if limited else "")


def own_room(identity: Identity) -> str:
    return person_room(identity.name, limited=identity.rooms is not None)


def log_failure(task: asyncio.Task[Any]) -> None:
    """A background task of the chat ended: log how, if by failing."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s failed", task.get_name(), exc_info=exc)


class Connections(Mapping[Sid, Connection]):
    """This node's connections, by sid (a read-only mapping)."""

    def __init__(self, settings: Settings, metrics: Metrics, wire: Wire) -> None:
        self.settings = settings
        self.metrics = metrics
        self.wire = wire
        self.by_sid: dict[Sid, Connection] = {}
        self.per_name: Counter[str] = Counter()
        self.per_address: Counter[str] = Counter()
        self.rates = {kind: Rate(getattr(settings, kind + "_rate"),
                                 getattr(settings, kind + "_burst")) for kind in RATED}
        self._expiring: set[asyncio.Task[Any]] = set()  # disconnects of expired tokens

    def __getitem__(self, sid: Sid) -> Connection:
        return self.by_sid[sid]

    def __iter__(self) -> Iterator[Sid]:
        return iter(self.by_sid)

    def __len__(self) -> int:
        return len(self.by_sid)

    # -- life cycle ---------------------------------------------------------------

    async def open(self, sid: Sid, auth: object, address: str) -> Connection:
        """Admit connection ``sid`` (raises :class:`ChatError` to refuse it)."""
        identity = identify(auth, self.settings.jwt_secret)
        s = self.settings
        if self.per_name[identity.name] >= s.max_connections_per_name:
            raise ChatError(ErrorCode.RATE_LIMITED, f"{identity.name!r} already has "
                            f"{s.max_connections_per_name} connections; close one first")
        if self.per_address[address] >= s.max_connections_per_address:
            raise ChatError(ErrorCode.RATE_LIMITED, "too many connections from your address "
                            f"(at most {s.max_connections_per_address})")
        conn = self.by_sid[sid] = Connection(sid, identity, self.wire.transport(sid), address)
        self._arm_expiry(conn)
        self.per_name[identity.name] += 1
        self.per_address[address] += 1
        await self.wire.enter_room(sid, own_room(identity))
        log.info("connect sid=%s name=%r transport=%s addr=%s", sid, identity.name,
                 conn.transport, address)
        return conn

    def close(self, sid: Sid) -> Connection | None:
        """Forget connection ``sid``; the connection as it was, or None if unknown."""
        conn = self.by_sid.pop(sid, None)
        if conn is None:
            return None
        for counter, key in ((self.per_name, conn.name), (self.per_address, conn.address)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        if conn.expiry is not None:
            conn.expiry.cancel()
        return conn

    async def end_person(self, name: str) -> None:
        """End every connection of the person ``name``, on every node."""
        log.info("end name=%r", name)
        for room in (person_room(name), person_room(name, limited=True)):
            await self.wire.end_room(room)

    def is_current(self, conn: Connection) -> bool:
        """Whether ``conn`` is still connected (not closed meanwhile)."""
        return self.by_sid.get(conn.sid) is conn

    def _arm_expiry(self, conn: Connection) -> None:
        """End ``conn`` when its token expires (token mode), replacing any earlier timer."""
        if conn.expiry is not None:
            conn.expiry.cancel()
        if conn.identity.expires is not None:
            delay = max(0.0, conn.identity.expires - time.time())
            conn.expiry = asyncio.get_running_loop().call_later(delay, self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        if not self.is_current(conn):
            return
        conn.expired = True
        log.info("token expired sid=%s name=%r", conn.sid, conn.name)
        task = asyncio.create_task(self.wire.disconnect(conn.sid), name=f"expiry of {conn.sid}")
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)
        task.add_done_callback(log_failure)

    async def renew(self, conn: Connection, token: str) -> float | None:
        """Replace ``conn``'s token with a fresh one for the same person; its
        ``exp``. Refused if it does not admit a room the connection is in."""
        if not self.settings.jwt_secret:
            raise ChatError(ErrorCode.BAD_REQUEST, "this server takes names, not tokens")
        identity = verify_token(token, self.settings.jwt_secret)
        if identity.name != conn.name:
            raise ChatError(ErrorCode.UNAUTHORIZED, "the token is for another user")
        outside = sorted(room for room in conn.rooms if not identity.may_join(room))
        if outside:
            raise ChatError(ErrorCode.UNAUTHORIZED,
                            f"the token does not admit you to {outside[0]!r}; leave it first")
        # in force before any await: a join in flight checks it again before it
        # enters (Rooms), so none can enter a room the new token does not admit
        previous, conn.identity = conn.identity, identity
        self._arm_expiry(conn)
        if own_room(identity) != own_room(previous):
            await self.wire.leave_room(conn.sid, own_room(previous))
            await self.wire.enter_room(conn.sid, own_room(identity))
        log.info("renew sid=%s name=%r", conn.sid, conn.name)
        return identity.expires

    # -- spending -------------------------------------------------------------------

    def bucket(self, conn: Connection, kind: str) -> TokenBucket:
        buckets = conn.buckets
        if buckets is None:
            buckets = conn.buckets = {}
        bucket = buckets.get(kind)
        if bucket is None:
            bucket = buckets[kind] = self.rates[kind].bucket()
        return bucket

    def limit(self, conn: Connection, kind: str, what: str, cost: float = 1) -> None:
        """Spend ``cost`` from ``conn``'s ``kind`` bucket or refuse with rate_limited."""
        wait = self.bucket(conn, kind).take(cost)
        if wait:
            raise ChatError(ErrorCode.RATE_LIMITED, f"too many {what}; try again in {wait} ms",
                            retry_after=wait)

    def member(self, conn: Connection, room: RoomName) -> None:
        """Refuse (``not_member``) unless ``conn`` has joined ``room``."""
        if room not in conn.rooms:
            raise ChatError(ErrorCode.NOT_MEMBER, f"join {room!r} first")
