"""Cluster-wide presence in Redis.

Keys (``P`` is the configured prefix; ``{ROOM}`` the room as a hash tag, so
that on Redis Cluster a room's two keys share one slot, with its fan-out
channel):

* ``P:conns:{ROOM}``  hash  sid -> name: every connection in the room, any node
* ``P:names:{ROOM}``  hash  name -> number of its connections in the room
* ``P:rooms``         set   rooms with anyone present
* ``P:node:ID``       set   "ROOM\\nSID" of each connection node ID has recorded
* ``P:alive:ID``      key   exists while node ID is alive (expires after ``ttl`` s)
* ``P:nodes``         set   node ids that have recorded anything

Join and leave are Lua scripts over the room's two keys only, so a name's
first join and last leave are decided atomically across nodes (each fires
exactly once in the cluster), and on Redis Cluster each runs on the shard of
its room. The other keys are written around them, each alone: a join is
recorded in its node's set before the room, a leave after, so a node that
dies midway leaves nothing its cleanup cannot find; ``P:rooms`` follows the
scripts' word that a room was emptied or filled, checked again after each
removal (a join that raced it puts it back), and housekeeping re-adds each
node's own rooms and drops empty ones every round.

* ``P:cleaner``     key   the node that removes dead nodes' entries (expires)

Housekeeping (:meth:`maintain`) is two loops on every node, each every
``ttl / 3`` seconds, each surviving any error (logged, and reported by
:meth:`status` in ``/healthz``):

* the node's ``alive`` key is renewed on a timer of its own, so that however
  long a cleanup round takes, the cleaner is never itself taken for dead;
* one node at a time (whichever holds ``P:cleaner``) removes the entries of
  every node whose ``alive`` key has expired (a node that died without
  cleaning up), each dead node in one server-side call (:data:`_DROP_NODE`),
  and announces the names that thereby left, once for the cluster; and every
  node repairs its own entries against its live connections (after a Redis
  outage, a disconnect may have failed to record its leave).

So a dead node's ghosts are gone within about ``ttl * 4 / 3`` seconds (20 s
with the default ``--presence-ttl 15``).

While Redis is down the node keeps serving its own clients: every join and
leave is also kept in a view of this node's own members
(:class:`~app.presence.memory.MemoryPresence`), and what Redis cannot answer
is answered from it (joins, leaves, members and rooms as this node sees
them). When Redis is back, housekeeping's repair writes the node's live
members into it and drops what left meanwhile, announcing (to the whole
cluster) each name whose join or leave the other nodes thereby learn of.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .. import redis_client
from ..core.errors import ChatError, ErrorCode
from ..core.models import RoomName, Sid
from . import LocalMembers, OnJoined, OnLeft, Presence
from .memory import MemoryPresence

log = logging.getLogger(__name__)


# KEYS: conns, names   ARGV: sid, name
# -> {1 if the name was not present, 1 if the room was empty} (both 0: recorded already)
_JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return {0, 0} end
local filled = redis.call('HLEN', KEYS[2]) == 0 and 1 or 0
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return {1, filled} end
return {0, filled}
"""
# KEYS: conns, names   ARGV: sid   -> {the name if it left, or false; 1 if the room is empty}
_LEAVE = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return {false, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], name, -1) > 0 then return {false, 0} end
redis.call('HDEL', KEYS[2], name)
return {name, redis.call('HLEN', KEYS[2]) == 0 and 1 or 0}
"""
DROP_CHUNK = 100  # a dead node's entries removed concurrently, at most
# KEYS: cleaner   ARGV: node id, ms   -> 1 if this node is the cleaner (for ms more)
_CLEANER = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or
   redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


def _strs(values: Any) -> set[str]:
    """Redis replies as str (the client decodes responses)."""
    return {str(v) for v in values}


def _unavailable(exc: Exception) -> ChatError:
    log.warning("redis presence: %s", exc)
    return ChatError(ErrorCode.UNAVAILABLE, "presence is unavailable (Redis)")


class _Entries:
    """One lock per connection's entry in a room (``"ROOM\\nSID"``) on this node:
    a join or leave of the connection and housekeeping's repair of that entry
    never interleave. While a repair round runs, :attr:`changed` collects the
    entries that joins and leaves changed since the round read its snapshot,
    which the round then leaves alone (their own calls decide them)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # entry -> lock, users
        self.changed: set[str] | None = None  # None between rounds: nothing kept

    @contextlib.asynccontextmanager
    async def hold(self, entry: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(entry, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[entry]

    @contextlib.asynccontextmanager
    async def change(self, entry: str) -> AsyncIterator[None]:
        """Held by the connection's own join or leave."""
        if self.changed is not None:
            self.changed.add(entry)
        async with self.hold(entry):
            yield

    def __len__(self) -> int:
        """Entries locked or waited for now (for leak checks)."""
        return len(self._locks)


def _entry(room: str, sid: str) -> str:
    return f"{room}\n{sid}"


class RedisPresence:
    def __init__(self, url: str, *, prefix: str, node_id: str, ttl: float = 15.0,
                 max_connections: int = 100, grace: float = 0.0) -> None:
        self.ttl = ttl
        self.grace = grace
        # a previous life's entries (this node id, restarted) are kept until then
        self._keep_until = time.monotonic() + grace
        self._handed_off = False
        self._redis: aioredis.Redis = redis_client.connect(
            url, max_connections=max_connections, name=f"{prefix}:{node_id}:presence",
            decode_responses=True)
        self._p = prefix
        self.node_id = node_id
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        self._cleaner = self._redis.register_script(_CLEANER)
        self._failing: dict[str, str] = {}  # housekeeping loop -> its last error
        self._here = MemoryPresence()  # this node's own members, for when Redis is down
        self._degraded = False  # answering from _here
        self._entries = _Entries()
        # entries in this node's set whose room record may have failed (the set is
        # written first): housekeeping records them again (a no-op if they are)
        self._unsure: set[str] = set()
        self.rounds = 0  # cleanup rounds completed (that waiting on a repair can count)

    def _keys(self, room: str) -> list[str]:
        """The room's two keys, in one hash slot."""
        tag = redis_client.slot_tag(room)
        return [f"{self._p}:conns:{tag}", f"{self._p}:names:{tag}"]

    async def start(self) -> None:
        await self._renew()
        log.info("redis presence ready (node %s)", self.node_id)

    async def _renew(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self._p}:alive:{self.node_id}", "1", px=int(self.ttl * 1000))
            pipe.sadd(f"{self._p}:nodes", self.node_id)
            await pipe.execute()

    def _degrade(self, exc: Exception) -> None:
        if not self._degraded:
            log.warning("redis presence: %s; answering from this node's own members "
                        "until Redis is back", exc)
        self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("redis presence: Redis answers again")
        self._degraded = False

    async def join(self, room: RoomName, name: str, sid: Sid) -> bool:
        async with self._entries.change(_entry(room, sid)):
            first_here = await self._here.join(room, name, sid)
            try:
                first = await self._record(room, sid, name)
            except RedisError as exc:
                self._unsure.add(_entry(room, sid))
                self._degrade(exc)  # housekeeping records it once Redis is back
                return first_here
        self._recovered()
        return first

    async def _record(self, room: str, sid: str, name: str) -> bool:
        """Record the entry in this node's set (and the node in the node list: a
        node taken for dead and cleaned up, but alive, is found again), then in
        the room; True if the name was not present."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self._p}:node:{self.node_id}", _entry(room, sid))
            pipe.sadd(f"{self._p}:nodes", self.node_id)
            await pipe.execute()
        first, filled = await self._join(keys=self._keys(room), args=[sid, name])
        if filled:
            await self._redis.sadd(f"{self._p}:rooms", room)
        return bool(first)

    async def leave(self, room: RoomName, name: str, sid: Sid) -> bool:
        async with self._entries.change(_entry(room, sid)):
            last_here = await self._here.leave(room, name, sid)
            try:
                last = await self._leave_on(self.node_id, room, sid) is not None
                self._unsure.discard(_entry(room, sid))
            except RedisError as exc:
                self._degrade(exc)  # housekeeping drops it once Redis is back
                return last_here
        self._recovered()
        return last

    async def _leave_on(self, node: str, room: str, sid: str) -> str | None:
        """Remove the entry from the room, then from ``node``'s set; the name if it
        left the room."""
        left, emptied = await self._leave(keys=self._keys(room), args=[sid])
        if emptied:
            await self._unlist([room])
        await self._redis.srem(f"{self._p}:node:{node}", _entry(room, sid))
        return str(left) if left else None

    async def _unlist(self, rooms: list[str]) -> None:
        """Take emptied ``rooms`` out of ``P:rooms``; any that a join filled
        meanwhile (it saw the room empty and listed it, maybe before us) go back."""
        listing = f"{self._p}:rooms"
        await self._redis.srem(listing, *rooms)
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hlen(self._keys(room)[1])
            counts = await pipe.execute()
        refilled = [room for room, count in zip(rooms, counts) if count]
        if refilled:
            await self._redis.sadd(listing, *refilled)

    async def members(self, room: RoomName) -> list[str]:
        try:
            return sorted(_strs(await self._redis.hkeys(self._keys(room)[1])))
        except RedisError as exc:
            self._degrade(exc)
            return await self._here.members(room)

    async def count(self, room: RoomName) -> int:
        try:
            return int(await self._redis.hlen(self._keys(room)[1]))
        except RedisError as exc:
            self._degrade(exc)
            return await self._here.count(room)

    async def page(self, room: RoomName, cursor: str | None,
                   limit: int) -> tuple[list[str], str | None]:
        """HSCAN of the room's names (the cursor is Redis's: about ``limit`` a
        page, a name present throughout listed at least once)."""
        try:
            position, names = await self._redis.hscan(
                self._keys(room)[1], cursor=int(cursor) if cursor and cursor.isdigit() else 0,
                count=limit)
        except RedisError as exc:
            self._degrade(exc)
            return await self._here.page(room, cursor, limit)
        return sorted(_strs(names)), (str(position) if int(position) else None)

    async def rooms(self) -> list[tuple[RoomName, int]]:
        try:
            names = sorted(_strs(await self._redis.smembers(f"{self._p}:rooms")))
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in names:
                    pipe.hlen(self._keys(room)[1])
                counts = await pipe.execute()
        except RedisError as exc:
            self._degrade(exc)
            return await self._here.rooms()
        return [(RoomName(r), int(n)) for r, n in zip(names, counts) if n]

    async def maintain(self, local: LocalMembers, on_left: OnLeft,
                       on_joined: OnJoined) -> None:
        # a task group, not gather: cancelled, it waits for both loops to end
        # (gather ended as soon as one was cancelled, and the other ran on, a
        # round of restores past the drain that was meant to follow it)
        async with asyncio.TaskGroup() as loops:
            loops.create_task(self._every_round("liveness", self._renew))
            loops.create_task(self._every_round(
                "cleanup", lambda: self.housekeeping(local, on_left, on_joined)))

    async def _every_round(self, what: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` every ttl / 3 seconds for the server's life, whatever it raises."""
        task = asyncio.current_task()
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                self._failing[what] = f"Redis: {exc}"
                log.warning("redis presence %s failed: %s", what, exc)
            except Exception as exc:
                self._failing[what] = f"{type(exc).__name__}: {exc}"
                log.exception("redis presence %s failed", what)
            else:
                self._failing.pop(what, None)
            if task is not None and task.cancelling():
                # Cancelled while waiting for a pooled connection: on Python 3.11
                # asyncio.Condition.wait can swallow the CancelledError, and
                # this loop would run on forever (shutdown hung on it).
                raise asyncio.CancelledError
            await asyncio.sleep(self.ttl / 3)

    def status(self) -> str:
        """Housekeeping's state for ``/healthz``: "ok", or what failed last."""
        return "; ".join(f"{what}: {error}" for what, error in sorted(self._failing.items())) \
            or "ok"

    async def housekeeping(self, local: LocalMembers, on_left: OnLeft,
                           on_joined: OnJoined) -> None:
        """One round: reap dead nodes (if this node is the cleaner), repair our own
        entries. (Liveness is renewed apart, see :meth:`maintain`.)"""
        if await self._cleaner(keys=[f"{self._p}:cleaner"],
                               args=[self.node_id, int(self.ttl * 1000)]):
            for node in sorted(_strs(await self._redis.smembers(f"{self._p}:nodes"))):
                if node != self.node_id and not await self._redis.exists(
                        f"{self._p}:alive:{node}"):
                    await self._drop_dead(node, on_left)
            await self._prune_listing()
        await self._repair(local, on_left, on_joined)
        rooms = sorted({room for room, _, _ in local()})
        if rooms:  # ours are listed, whatever raced their listing
            await self._redis.sadd(f"{self._p}:rooms", *rooms)
        self.rounds += 1

    async def _prune_listing(self) -> None:
        """Drop rooms listed in ``P:rooms`` with nobody in them (a removal raced)."""
        listed = sorted(_strs(await self._redis.smembers(f"{self._p}:rooms")))
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in listed:
                pipe.hlen(self._keys(room)[1])
            counts = await pipe.execute()
        empty = [room for room, count in zip(listed, counts) if not count]
        if empty:
            await self._unlist(empty)

    async def _repair(self, local: LocalMembers, on_left: OnLeft, on_joined: OnJoined) -> None:
        """Make this node's entries in Redis what its live connections say.

        The snapshot (Redis, then the connections) can be overtaken by joins
        and leaves still under way: each entry is repaired under its lock, and
        only if no join or leave changed it since the snapshot (a join whose
        script ran but whose coroutine has not resumed is live already, as
        the namespace counts a member before recording it; a leave-and-rejoin
        during the round is the rejoin's to decide)."""
        self._entries.changed = set()
        try:
            mine = _strs(await self._redis.smembers(f"{self._p}:node:{self.node_id}"))
            live = {_entry(room, sid): (room, sid, name) for room, sid, name in local()}
            stale = mine - live.keys() if time.monotonic() >= self._keep_until else set()
            for entry in sorted(stale):  # leaves whose record failed (or a past life's)
                room, _, sid = entry.partition("\n")
                async with self._entries.hold(entry):
                    if entry in self._entries.changed:
                        continue
                    name = await self._leave_on(self.node_id, room, sid)
                if name is not None:
                    await on_left(RoomName(room), name)
            self._unsure.intersection_update(live.keys())
            for entry in sorted(live.keys() - (mine - self._unsure)):  # failed records
                room, sid, name = live[entry]
                async with self._entries.hold(entry):
                    if entry in self._entries.changed:
                        continue
                    first = await self._record(room, sid, name)
                    self._unsure.discard(entry)
                log.info("presence: restored %r in %s", name, room)
                if first:  # the other nodes never heard of this join
                    await on_joined(RoomName(room), name)
        finally:
            self._entries.changed = None

    async def _drop_dead(self, node: str, on_left: OnLeft) -> None:
        """Remove every entry of a dead ``node`` in one call; announce who left."""
        pairs = await self._drop_all(node)
        log.warning("presence: node %s is gone; removed its connections (%d names left)",
                    node, len(pairs))
        for room, name in pairs:
            await on_left(room, name)

    async def _drop_all(self, node: str) -> list[tuple[RoomName, str]]:
        """Remove every entry of ``node`` (each room's in its own call, so that on
        Redis Cluster each runs on its room's shard), then the node; the (room,
        name) pairs that thereby left."""
        entries = sorted(_strs(await self._redis.smembers(f"{self._p}:node:{node}")))
        left: list[tuple[RoomName, str]] = []
        emptied: list[str] = []

        async def drop(entry: str) -> None:
            room, _, sid = entry.partition("\n")
            name, empty = await self._leave(keys=self._keys(room), args=[sid])
            if name:
                left.append((RoomName(room), str(name)))
            if empty:
                emptied.append(room)
        for i in range(0, len(entries), DROP_CHUNK):
            await asyncio.gather(*(drop(entry) for entry in entries[i:i + DROP_CHUNK]))
        if emptied:
            await self._unlist(sorted(set(emptied)))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.delete(f"{self._p}:node:{node}")
            pipe.srem(f"{self._p}:nodes", node)
            await pipe.execute()
        return sorted(left)

    async def hand_off(self, grace: float) -> None:
        """This node's entries stay while its ``alive`` key does: ``grace``
        seconds from now, no longer renewed (housekeeping has stopped); then
        the cleaner takes it for dead (:meth:`_drop_dead`)."""
        await self._here.drain()
        self._handed_off = True
        try:
            await self._redis.set(f"{self._p}:alive:{self.node_id}", "1",
                                  px=max(1, int(grace * 1000)))
        except RedisError as exc:  # (then its alive key expires within --presence-ttl)
            log.warning("redis presence: could not hand this node's entries off: %s", exc)

    async def drain(self) -> list[tuple[RoomName, str]]:
        await self._here.drain()
        try:
            return await self._drop_all(self.node_id)
        except RedisError as exc:  # the others' housekeeping removes them later
            log.warning("redis presence: could not remove this node's entries: %s", exc)
            return []

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        if not self._handed_off:  # (handed off: it lasts the grace)
            try:
                await self._redis.delete(f"{self._p}:alive:{self.node_id}")
            except RedisError as exc:
                log.warning("redis presence: could not sign off: %s", exc)
        await self._redis.aclose()


_: type[Presence] = RedisPresence
