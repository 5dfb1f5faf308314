"""The relay: how the nodes of a cluster share what webhooks need.

Two things: notices (which rooms have new entries; that the webhooks were
changed), which every node hears, and leases (which node delivers a webhook),
which one node holds at a time. One small interface, two implementations,
chosen by the Redis URL like presence and fan-out:

==============  ==========================================================
``LocalRelay``  one process (no ``--redis``): notices are calls, every
                lease is this node's
``RedisRelay``  several nodes: notices on one pub/sub channel, leases as
                keys set with ``NX`` and an expiry, renewed by their holder
==============  ==========================================================

Notices may be lost (pub/sub has no memory; a node may die before it
publishes): a webhook's holder looks at every room now and then, and on
every (re)subscription, so a lost notice delays an event, never loses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from urllib.parse import urlsplit

from ..redis_client import connect, is_cluster, node_url

log = logging.getLogger(__name__)

OnNotice = Callable[[dict[str, Any]], None]
OnReset = Callable[[], None]
RESUBSCRIBE_WAIT = 1.0  # seconds between attempts to subscribe again after a failure

# renew a lease only if this node still holds it; release likewise
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
           "return redis.call('del', KEYS[1]) else return 0 end"


class Relay(Protocol):
    def listen(self, on_notice: OnNotice, on_reset: OnReset) -> None:
        """Call ``on_notice`` with every notice published by any node (this one
        too), and ``on_reset`` whenever notices may have been missed."""

    async def publish(self, notice: dict[str, Any]) -> None:
        """Tell every node (JSON-able)."""

    async def hold(self, name: str, ttl: float) -> bool:
        """Take the lease ``name`` for ``ttl`` seconds, or renew it if this node
        holds it; whether this node holds it now."""

    async def release(self, name: str) -> None:
        """Give a lease up (if held), so that another node takes it at once."""

    async def close(self) -> None: ...


class LocalRelay:
    def __init__(self) -> None:
        self.on_notice: OnNotice | None = None

    def listen(self, on_notice: OnNotice, on_reset: OnReset) -> None:
        self.on_notice = on_notice

    async def publish(self, notice: dict[str, Any]) -> None:
        if self.on_notice is not None:
            self.on_notice(notice)

    async def hold(self, name: str, ttl: float) -> bool:
        return True

    async def release(self, name: str) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisRelay:
    def __init__(self, url: str, *, prefix: str, node_id: str) -> None:
        name = f"roomcast-hooks-{node_id}"
        self.redis = connect(url, max_connections=4, name=name)
        # the subscription waits for ever (no read timeout), on a client of its
        # own; a cluster's classic pub/sub reaches every node's subscribers, so
        # it is on the node the URL names, with a plain client
        parts = urlsplit(url)
        plain = url if not is_cluster(url) else node_url(
            url, parts.hostname or "localhost", parts.port or 6379)
        self.subscriber = connect(plain, max_connections=1, name=name, socket_timeout=None)
        self.channel = f"{prefix}:hooks"
        self.prefix = prefix
        self.node_id = node_id
        self.listener: asyncio.Task[None] | None = None

    def listen(self, on_notice: OnNotice, on_reset: OnReset) -> None:
        self.listener = asyncio.create_task(self._listen(on_notice, on_reset),
                                            name="webhook notices")

    async def _listen(self, on_notice: OnNotice, on_reset: OnReset) -> None:
        while True:
            pubsub = self.subscriber.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                on_reset()  # what was published while not subscribed is unheard
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            on_notice(json.loads(message["data"]))
                        except ValueError:
                            log.warning("webhook notice not JSON: dropped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: subscribe again
                log.warning("webhook notices: %s; subscribing again", exc)
                await asyncio.sleep(RESUBSCRIBE_WAIT)
            finally:
                await asyncio.shield(pubsub.aclose())

    async def publish(self, notice: dict[str, Any]) -> None:
        await self.redis.publish(self.channel, json.dumps(notice))

    def _key(self, name: str) -> str:
        return f"{self.prefix}:lease:{name}"

    async def hold(self, name: str, ttl: float) -> bool:
        key, ms = self._key(name), max(1, int(ttl * 1000))
        if await self.redis.set(key, self.node_id, nx=True, px=ms):
            return True
        return bool(await self.redis.eval(_RENEW, 1, key, self.node_id, ms))

    async def release(self, name: str) -> None:
        await self.redis.eval(_RELEASE, 1, self._key(name), self.node_id)

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
        await self.redis.aclose()
        await self.subscriber.aclose()


def open_relay(redis_url: str, *, prefix: str, node_id: str) -> Relay:
    """The relay for ``--redis`` (empty: this process alone)."""
    if not redis_url:
        return LocalRelay()
    return RedisRelay(redis_url, prefix=prefix, node_id=node_id)
