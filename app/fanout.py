"""Fan-out between nodes: ``client_manager(settings, metrics, node)`` picks
:class:`LocalFanout` (python-socketio's in-process ``AsyncManager``) or, with
``--redis URL``, :class:`RedisFanout`. Both count what they deliver on this
node (:class:`CountingManager`), including events that came from other nodes.

``RedisFanout`` is python-socketio's ``AsyncRedisManager`` (an emit is
delivered on this node first, then published; each node ignores its own
echo) with two changes, since a chat server must notice and survive a Redis
outage:

* it knows whether it can fan out (``healthy``): false from a failed publish
  or a broken subscription until the subscription is back, so ``/healthz``
  can report the node unhealthy meanwhile;
* it resubscribes after at most ``MAX_RETRY`` seconds (the library backs off
  up to 60 s, so a node could stay deaf to the others for a minute after
  Redis came back).

Messages published during an outage are lost to the other nodes, but they
are stored: clients see a gap in the room's seq numbers and fill it from
history (``docs/protocol.md``). This module overrides library internals
(``_publish``, ``_redis_listen_with_retries``); ``tests/test_cluster.py``
checks the behaviour end to end against a Redis that is restarted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from socketio import packet

from . import compat, redis_client
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY = 2.0  # seconds between resubscription attempts


class CountingManager(compat.Manager):  # type: ignore[misc]
    """Counts, per room event of /chat, the connections on this node it goes to,
    and knows which rooms each connection is in (see :meth:`basic_disconnect`)."""

    metrics: Metrics | None = None  # set by client_manager
    counted = "/"  # the namespace whose room events are counted (set by client_manager)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (namespace, sid) -> the rooms it entered besides its own and None
        self._entered: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is not None and room != sid:
            self._entered.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._entered.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._entered[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Leave the connection's own rooms. python-socketio looked through a copy
        of every room of the namespace, one per connection (its sid room): a
        disconnect cost O(connections), 10,000 leaving at once about a second of
        blocked event loop, and n leaving O(n^2)."""
        if namespace not in self.rooms:
            return
        for room in [*self._entered.get((namespace, sid), ()), sid, None]:
            self.basic_leave_room(sid, namespace, room)
        # and the rest of the library's clean-up, as it does it
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        target = to or room
        if (self.metrics is not None and namespace == self.counted and isinstance(target, str)
                and not kwargs.get("ignore_queue")):
            members = self.rooms.get(namespace, {}).get(target, {})
            skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
            if event == "typing":  # the first thing to go when a connection falls behind
                skipped = skipped + [sid for sid, eio_sid in members.items()
                                     if self.server.lagging(eio_sid)]
                skip_sid = skipped
            count = len(members) - sum(1 for sid in skipped if sid in members)
            self.metrics.fanout.labels(event).observe(count)
            if event == "message":
                self.metrics.messages_delivered.inc(count)
        if callback is not None:  # one packet per recipient: the library's way
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                               callback=callback, to=to, **kwargs)
            return
        await self._deliver(event, data, namespace, target, skip_sid)

    async def _deliver(self, event: str, data: Any, namespace: str, target: Any,
                       skip_sid: Any) -> None:
        """python-socketio's ``AsyncManager.emit`` without a task per recipient:
        the packet is encoded once and handed to the server's broadcast."""
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        recipients = [eio_sid for sid, eio_sid in self.get_participants(namespace, target)
                      if sid not in skip]
        for part in encoded if isinstance(encoded, list) else [encoded]:  # + attachments
            await self.server.broadcast(recipients, part)


class LocalFanout(CountingManager):
    """This process alone."""


class RedisFanout(compat.RedisManager, CountingManager):  # type: ignore[misc]
    name = "roomcast-redis"
    connected: bool
    redis: Any  # redis.asyncio.Redis, once connected
    pubsub: Any

    def __init__(self, url: str, channel: str, *, max_connections: int, name: str) -> None:
        super().__init__(url, channel=channel)
        self.max_connections = max_connections
        self.client_name = name
        self._listening = False
        self._publish_ok = True
        self._subscribed = asyncio.Event()

    @property
    def healthy(self) -> bool:
        """Subscribed, and the last publish went through."""
        return self._listening and self._publish_ok

    async def wait_subscribed(self, timeout: float) -> None:
        """Wait until subscribed, at most ``timeout`` s (then /healthz says so)."""
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("redis fan-out: not subscribed after %g s; still trying", timeout)

    def _redis_connect(self) -> None:
        """A new client on a bounded pool (:mod:`app.redis_client`: a burst of
        publishes waits for a connection rather than failing and losing the
        event for the other nodes), and the old one closed (the library
        dropped it without closing it)."""
        old = (self.pubsub, self.redis)
        # no socket timeout: the subscription waits for messages as long as need be
        self.redis = redis_client.connect(self.redis_url, max_connections=self.max_connections,
                                          name=self.client_name, socket_timeout=None)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True
        for client in old:
            if client is not None:
                asyncio.ensure_future(client.aclose())

    async def close(self) -> None:
        """Stop listening and close the Redis connections (the library has no close)."""
        listener = getattr(self, "thread", None)
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for client in (self.pubsub, self.redis):
            if client is not None:
                await client.aclose()
        self._listening = False

    async def _publish(self, data: Any) -> None:
        try:
            if not self.connected:
                self._redis_connect()
            await self.redis.publish(self.channel, self.json.dumps(data))
            self._publish_ok = True
        except Exception as exc:  # redis raises many kinds; all mean "not published"
            if self._publish_ok:
                log.warning("redis fan-out: publish failed (%s); other nodes will miss "
                            "this event until clients fill the gap from history", exc)
            self._publish_ok = False
            self.connected = False

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = 0.1
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                if not self._listening:
                    log.info("redis fan-out: subscribed to %s", self.channel)
                self._listening = True
                self._publish_ok = True
                self._subscribed.set()
                delay = 0.1
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._listening:
                    log.warning("redis fan-out: connection lost (%s); reconnecting", exc)
                self._listening = False
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)


def client_manager(settings: Settings, metrics: Metrics, node: str, *,
                   counted: str) -> CountingManager:
    """The fan-out the settings ask for, counting room events of namespace ``counted``."""
    manager: CountingManager = (
        RedisFanout(settings.redis, channel=f"{settings.redis_prefix}:socketio",
                    max_connections=settings.redis_max_connections,
                    name=f"{settings.redis_prefix}:{node}:fanout")
        if settings.redis else LocalFanout())
    manager.metrics = metrics
    manager.counted = counted
    return manager
