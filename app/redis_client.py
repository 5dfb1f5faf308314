"""Redis clients with a bounded connection pool, for fan-out and presence, on
one Redis (``redis://``, ``rediss://``) or on a Redis Cluster
(``redis-cluster://host:port``, ``rediss-cluster://``: any one node; the
others are found from it).

redis-py's default pool refuses a request once ``max_connections`` are busy
("Too many connections"), and redis-py 8 set that bound to 100 by default: a
burst of concurrent joins on one node failed ``unavailable``. Every Roomcast
client instead holds an explicit number of connections
(``--redis-max-connections``): past the bound, a request waits for a free
connection (up to :data:`POOL_WAIT` seconds) rather than failing, and the
node never opens more than the bound, whatever the load. On one Redis that
is redis-py's ``BlockingConnectionPool``; redis-py's cluster client has no
blocking pool (past ``max_connections`` per node it raises), so
:class:`BoundedCluster` lets at most that many commands and pipelines be in
flight at once, each of which holds at most one connection per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

POOL_WAIT = 10.0  # seconds a request may wait for a free pooled connection
SOCKET_TIMEOUT = 5.0  # seconds to connect, and for a reply to a command
CLUSTER_SCHEMES = {"redis-cluster": "redis", "rediss-cluster": "rediss"}


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def node_url(url: str, host: str, port: int) -> str:
    """The URL of one node (``host:port``) of the cluster at ``url``, with its
    credentials and TLS."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    credentials = parts.netloc.rpartition("@")[0]
    return f"{scheme}://{credentials + '@' if credentials else ''}{host}:{port}"


class BoundedCluster(RedisCluster):
    """A cluster client with at most ``bound`` commands (or pipelines) in flight;
    callers past it wait their turn (for at most :data:`POOL_WAIT` s)."""

    def __init__(self, *args: Any, bound: int, **kwargs: Any) -> None:
        kwargs["max_connections"] = bound
        super().__init__(*args, **kwargs)
        self.bound = asyncio.Semaphore(bound)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _turn(self.bound):
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not for a cluster")
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]  # (as redis-py)


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        cluster: BoundedCluster = self.cluster_client  # type: ignore[assignment]
        async with _turn(cluster.bound):
            return await super().execute(*args, **kwargs)


@contextlib.asynccontextmanager
async def _turn(bound: asyncio.Semaphore) -> AsyncIterator[None]:
    async with asyncio.timeout(POOL_WAIT):
        await bound.acquire()
    try:
        yield
    finally:
        bound.release()


def connect(url: str, *, max_connections: int, name: str, decode_responses: bool = False,
            socket_timeout: float | None = SOCKET_TIMEOUT) -> Any:
    """A client of the Redis (or Redis Cluster) at ``url`` that holds at most
    ``max_connections`` connections (per node), each named ``name`` (``CLIENT
    LIST`` shows whose it is). Typed ``Any``: the two clients share their
    command methods but not redis-py's annotations of them."""
    options: dict[str, Any] = dict(
        decode_responses=decode_responses, socket_timeout=socket_timeout,
        socket_connect_timeout=SOCKET_TIMEOUT, health_check_interval=10, client_name=name)
    if is_cluster(url):
        parts = urlsplit(url)
        plain = parts._replace(scheme=CLUSTER_SCHEMES[parts.scheme]).geturl()
        return BoundedCluster.from_url(plain, bound=max_connections, **options)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT, **options)
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def knows_slots(cluster: Any) -> bool:
    """Whether the cluster client has learnt which master serves which slot."""
    return bool(cluster.nodes_manager.slots_cache)


def address_of(cluster: Any, key: str) -> str:
    """``host:port`` of the master serving ``key``'s slot, as ``cluster`` knows it."""
    node = cluster.get_node_from_key(key)
    return f"{node.host}:{node.port}"


def slot_tag(name: str) -> str:
    """``name`` as a Redis Cluster hash tag: every key and channel named with the
    same tag is in one hash slot, so one server-side call may touch them all.
    A name with a brace (which would end the tag early) is tagged by digest."""
    if "{" in name or "}" in name:
        return "{#" + hashlib.sha256(name.encode()).hexdigest()[:32] + "}"
    return "{" + name + "}"
