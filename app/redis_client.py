"""Redis clients with a bounded connection pool, for fan-out and presence.

redis-py's default pool refuses a request once ``max_connections`` are busy
("Too many connections"), and redis-py 8 set that bound to 100 by default: a
burst of concurrent joins on one node failed ``unavailable``. Every Roomcast
client instead takes its connections from a ``BlockingConnectionPool`` of an
explicit size (``--redis-max-connections``): past the bound, a request waits
for a free connection (up to :data:`POOL_WAIT` seconds) rather than failing,
and the node never opens more than the bound, whatever the load.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

POOL_WAIT = 10.0  # seconds a request may wait for a free pooled connection
SOCKET_TIMEOUT = 5.0  # seconds to connect, and for a reply to a command


def connect(url: str, *, max_connections: int, name: str, decode_responses: bool = False,
            socket_timeout: float | None = SOCKET_TIMEOUT) -> aioredis.Redis:
    """A client of the Redis at ``url`` that holds at most ``max_connections``
    connections, each named ``name`` (``CLIENT LIST`` shows whose it is)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT,
        decode_responses=decode_responses, socket_timeout=socket_timeout,
        socket_connect_timeout=SOCKET_TIMEOUT, health_check_interval=10, client_name=name)
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def slot_tag(name: str) -> str:
    """``name`` as a Redis Cluster hash tag: every key and channel named with the
    same tag is in one hash slot, so one server-side call may touch them all.
    A name with a brace (which would end the tag early) is tagged by digest."""
    if "{" in name or "}" in name:
        return "{#" + hashlib.sha256(name.encode()).hexdigest()[:32] + "}"
    return "{" + name + "}"
