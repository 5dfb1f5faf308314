"""Cluster-wide presence in Redis.

Keys (``P`` is the configured prefix):

* ``P:conns:ROOM``  hash  sid -> name: every connection in the room, any node
* ``P:names:ROOM``  hash  name -> number of its connections in the room
* ``P:rooms``       set   rooms with anyone present
* ``P:node:ID``     set   "ROOM\\nSID" of each connection node ID has recorded
* ``P:alive:ID``    key   exists while node ID is alive (expires after ``ttl`` s)
* ``P:nodes``       set   node ids that have recorded anything

Join and leave are Lua scripts, so a name's first join and last leave are
decided atomically across nodes: each fires exactly once in the cluster.

Housekeeping (:meth:`maintain`) runs every ``ttl / 3`` seconds on every
node: it renews the node's ``alive`` key; removes the entries of any node
whose key has expired (a node that died without cleaning up), announcing the
names that thereby left; and repairs this node's own entries against its
live connections (after a Redis outage, a disconnect may have failed to
record its leave). So a dead node's ghosts are gone within ``ttl * 4 / 3``
seconds (20 s with the default ``--presence-ttl 15``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .. import redis_client
from ..chat.errors import ChatError, ErrorCode
from ..chat.models import RoomName, Sid
from . import LocalMembers, OnLeft, Presence

log = logging.getLogger(__name__)


# KEYS: conns, names, rooms, node   ARGV: sid, name, room
_JOIN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3] .. '\\n' .. ARGV[1])
if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then return 1 end
return 0
"""
# KEYS: conns, names, rooms, node   ARGV: sid, room    -> the name if it left
_LEAVE = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[2] .. '\\n' .. ARGV[1])
if not name then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], name, -1) > 0 then return false end
redis.call('HDEL', KEYS[2], name)
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return name
"""


def _strs(values: Any) -> set[str]:
    """Redis replies as str (the client decodes responses)."""
    return {str(v) for v in values}


def _unavailable(exc: Exception) -> ChatError:
    log.warning("redis presence: %s", exc)
    return ChatError(ErrorCode.UNAVAILABLE, "presence is unavailable (Redis)")


class RedisPresence:
    def __init__(self, url: str, *, prefix: str, node_id: str, ttl: float = 15.0,
                 max_connections: int = 100) -> None:
        self.ttl = ttl
        self._redis: aioredis.Redis = redis_client.connect(
            url, max_connections=max_connections, name=f"{prefix}:{node_id}:presence",
            decode_responses=True)
        self._p = prefix
        self.node_id = node_id
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)

    def _keys(self, room: str, node: str) -> list[str]:
        return [f"{self._p}:conns:{room}", f"{self._p}:names:{room}", f"{self._p}:rooms",
                f"{self._p}:node:{node}"]

    async def start(self) -> None:
        await self._renew()
        log.info("redis presence ready (node %s)", self.node_id)

    async def _renew(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self._p}:alive:{self.node_id}", "1", px=int(self.ttl * 1000))
            pipe.sadd(f"{self._p}:nodes", self.node_id)
            await pipe.execute()

    async def join(self, room: RoomName, name: str, sid: Sid) -> bool:
        try:
            return bool(await self._join(keys=self._keys(room, self.node_id),
                                         args=[sid, name, room]))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def leave(self, room: RoomName, name: str, sid: Sid) -> bool:
        try:
            return await self._leave_on(self.node_id, room, sid) is not None
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def _leave_on(self, node: str, room: str, sid: str) -> str | None:
        left: Any = await self._leave(keys=self._keys(room, node), args=[sid, room])
        return str(left) if left else None

    async def members(self, room: RoomName) -> list[str]:
        try:
            return sorted(_strs(await self._redis.hkeys(f"{self._p}:names:{room}")))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def rooms(self) -> list[tuple[RoomName, int]]:
        try:
            names = sorted(_strs(await self._redis.smembers(f"{self._p}:rooms")))
            async with self._redis.pipeline(transaction=False) as pipe:
                for room in names:
                    pipe.hlen(f"{self._p}:names:{room}")
                counts = await pipe.execute()
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return [(RoomName(r), int(n)) for r, n in zip(names, counts) if n]

    async def maintain(self, local: LocalMembers, on_left: OnLeft) -> None:
        task = asyncio.current_task()
        while True:
            try:
                await self.housekeeping(local, on_left)
            except RedisError as exc:
                log.warning("redis presence housekeeping failed: %s", exc)
            if task is not None and task.cancelling():
                # Cancelled while waiting for a pooled connection: on Python 3.11
                # asyncio.Condition.wait can swallow the CancelledError, and
                # this loop would run on forever (shutdown hung on it).
                raise asyncio.CancelledError
            await asyncio.sleep(self.ttl / 3)

    async def housekeeping(self, local: LocalMembers, on_left: OnLeft) -> None:
        """One round: renew, reap dead nodes, repair our own entries."""
        await self._renew()
        for node in _strs(await self._redis.smembers(f"{self._p}:nodes")):
            if node != self.node_id and not await self._redis.exists(
                    f"{self._p}:alive:{node}"):
                log.warning("presence: node %s is gone; removing its connections", node)
                await self._drop(node, None, on_left)
        mine = _strs(await self._redis.smembers(f"{self._p}:node:{self.node_id}"))
        live = {f"{room}\n{sid}": (room, sid, name) for room, sid, name in local()}
        await self._drop(self.node_id, mine - live.keys(), on_left)
        for key in live.keys() - mine:  # joins whose record failed (a Redis outage)
            room, sid, name = live[key]
            await self._join(keys=self._keys(room, self.node_id), args=[sid, name, room])
            log.info("presence: restored %r in %s", name, room)

    async def _drop(self, node: str, entries: set[str] | None, on_left: OnLeft) -> None:
        """Leave ``entries`` of ``node`` (None: all of them), announcing names that left."""
        if entries is None:
            entries = _strs(await self._redis.smembers(f"{self._p}:node:{node}"))
        for entry in entries:
            room, _, sid = entry.partition("\n")
            name = await self._leave_on(node, room, sid)
            if name is not None:
                await on_left(RoomName(room), name)
        if node != self.node_id and not await self._redis.scard(f"{self._p}:node:{node}"):
            await self._redis.srem(f"{self._p}:nodes", node)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        try:
            await self._redis.delete(f"{self._p}:alive:{self.node_id}")
        except RedisError as exc:
            log.warning("redis presence: could not sign off: %s", exc)
        await self._redis.aclose()


_: type[Presence] = RedisPresence
