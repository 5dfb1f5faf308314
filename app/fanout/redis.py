"""Fan-out between nodes over Redis pub/sub: :class:`RedisFanout`.

Every room event emitted on a node is delivered to that node's members at
once, then put on the node's :class:`~app.fanout.queue.PublishQueue`; the
emit returns without waiting for Redis (a sender's ack follows local
delivery). Two tasks, each on a connection of its own, do the rest:

* the **publisher** takes the queue's events in batches and publishes each
  batch in order in one pipeline on its one connection, so the other nodes
  receive this node's events for a room in the order they were emitted here
  (concurrent publishes on a pool of connections could overtake each other).
  A failed publish replaces only the publisher's connection (the
  subscription stays up). The events the other nodes thereby miss (the
  failed batch, those queued behind it, those emitted until Redis answers
  again; and any that do not fit in ``--max-fanout-queue-bytes``) are not
  published late: their rooms are remembered, and once the publisher can
  publish again it tells the other nodes to catch those rooms up (a
  *catch-up* notice, below).
* the **subscriber** listens on the channel of each room where this node has
  members (``P:fanout:{ROOM}``, subscribed with the room's first member here
  and unsubscribed with its last, :mod:`app.fanout.subscriptions`) and on the
  cluster's channel (``P:fanout``: beats and catch-up notices), and delivers
  the other nodes' events to this node's members: a node receives the traffic
  of its own rooms, not the cluster's. A join waits until its room's channel
  is confirmed before it reads the room's history. After every
  (re)subscription, and on
  a catch-up notice from another node, it asks the chat (``on_catch_up``) to
  tell its members of the rooms concerned to catch up from the store, so a
  message published while the link was down reaches everyone without
  waiting for the next one. A subscription that goes silent without an error
  (a partition that drops packets) is found by its own heartbeat: the
  publisher publishes a *beat* every :data:`BEAT` seconds, and when beats
  that Redis accepted have not come back for ``stale_after`` seconds the
  subscriber reconnects.

On the channel each payload is one kind byte, this process's 16-byte id,
and a msgpack body: ``e`` an event ``{ns, r, e, a}`` (namespace, room,
event, arguments), ``c`` a catch-up notice ``{r}`` (the rooms, or nil for
every room), ``b`` a beat (``{t}``, the publisher's clock, read only by its
own node). A node skips its own events by the id, without decoding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .. import redis_client
from . import CountingManager
from .queue import PublishQueue
from .subscriptions import Subscriptions

log = logging.getLogger(__name__)

CatchUp = Callable[[list[str] | None], None]
"""Told the rooms (None: all) whose events this node may have missed."""

BEAT = 1.0  # seconds between beats
STALE_AFTER = 10.0  # seconds of our own accepted beats unheard: the subscription is dead
MAX_RETRY = 2.0  # seconds between reconnection attempts, at most
BATCH_EVENTS = 512  # events per publish pipeline, at most
BATCH_BYTES = 1 << 20  # bytes per publish pipeline (past its first event), at most
CLOSE_FLUSH = 2.0  # seconds close() gives the queue to drain
JOIN_WAIT = 2.0  # seconds a join waits for its room's subscription (then: a catch-up)
SUBSCRIBE_CHUNK = 1_000  # channels per SUBSCRIBE command, at most

EVENT, CATCH_UP, BEAT_KIND = b"e", b"c", b"b"


class RedisFanout(CountingManager):
    name = "roomcast-redis"

    def __init__(self, url: str, channel: str, *, name: str, max_queue_bytes: int) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self.client_name = name
        self.queue = PublishQueue(max_queue_bytes)
        self.on_catch_up: CatchUp | None = None  # set by the chat
        self.stale_after = STALE_AFTER
        self._id = uuid.uuid4().bytes  # this process on the channel
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_client: aioredis.Redis | None = None
        self._publish_ok = True
        self._subscribed = False  # Redis confirmed the subscription
        self._ever_subscribed = asyncio.Event()
        self._beat_sent = 0.0  # clock of the last beat Redis accepted
        self._beat_heard = 0.0  # clock of the last of our beats that came back
        self.catch_ups = 0  # catch-ups asked of the chat (that tests can count)
        self.received = 0  # events received from the other nodes
        self._warned: set[str] = set()
        self.subscriptions = Subscriptions()
        self.subscriptions.want(channel)  # beats, catch-up notices
        self._room_refs: dict[str, int] = {}  # room -> namespaces here with members in it
        self._late: dict[str, str] = {}  # channel -> room joined before it was confirmed

    @property
    def healthy(self) -> bool:
        """Subscribed, and the last publish went through."""
        return self._subscribed and self._publish_ok

    def status(self) -> str:
        """For ``/healthz``: "ok", or what is wrong."""
        if not self._subscribed:
            return "not subscribed to Redis"
        return "ok" if self._publish_ok else "cannot publish to Redis"

    def initialize(self) -> None:
        super().initialize()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publisher(), name="fanout-publisher"),
                       loop.create_task(self._subscriber(), name="fanout-subscriber")]

    async def wait_subscribed(self, timeout: float) -> None:
        """Wait until subscribed, at most ``timeout`` s (then /healthz says so)."""
        try:
            await asyncio.wait_for(self._ever_subscribed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("redis fan-out: not subscribed after %g s; still trying", timeout)

    async def close(self) -> None:
        """Publish what is queued (for at most :data:`CLOSE_FLUSH` s), then stop
        both tasks and close their connections."""
        self.queue.close()
        if self._tasks:
            publisher, subscriber = self._tasks
            await asyncio.wait([publisher], timeout=CLOSE_FLUSH)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._drop_publisher_client()
        self._subscribed = False

    # -- which rooms this node subscribes to --------------------------------------

    def room_channel(self, room: object) -> str:
        """The channel of ``room``'s events (the cluster's channel for events not
        addressed to one room); its hash tag is the room's, as presence's keys."""
        if isinstance(room, str):
            return f"{self.channel}:{redis_client.slot_tag(room)}"
        return self.channel

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        new = room is not None and room != sid and room not in self.rooms.get(namespace, ())
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if new:
            refs = self._room_refs[room] = self._room_refs.get(room, 0) + 1
            if refs == 1:
                self.subscriptions.want(self.room_channel(room))

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        was = room is not None and room != sid and room in self.rooms.get(namespace, ())
        super().basic_leave_room(sid, namespace, room)
        if was and room not in self.rooms.get(namespace, ()):
            refs = self._room_refs[room] = self._room_refs[room] - 1
            if not refs:
                del self._room_refs[room]
                channel = self.room_channel(room)
                self.subscriptions.drop(channel)
                self._late.pop(channel, None)

    async def enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        """Enter, and wait (at most :data:`JOIN_WAIT` s) until this node receives
        the room's events from the others: what the caller reads of the room
        next (its history) and what is broadcast after meet, with no gap. If
        Redis is down, or slow to confirm, the room is caught up once it is."""
        self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is None or room == sid:
            return
        channel = self.room_channel(room)
        if self.subscriptions.ready(channel):
            return
        if not self._subscribed or not await self.subscriptions.wait(channel, JOIN_WAIT):
            if room in self._room_refs:
                self._late[channel] = room

    # -- emitting ---------------------------------------------------------------

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   **kwargs: Any) -> None:
        """Queue the event for the other nodes (before any await: the queue's
        order is the emit order), then deliver it here. ``ignore_queue`` and
        events with a callback stay on this node."""
        if not kwargs.get("ignore_queue") and callback is None:
            self._queue(event, data, namespace, to or room)
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                           callback=callback, to=to, **kwargs)

    def _queue(self, event: str, data: Any, namespace: str, room: Any) -> None:
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        try:
            body = msgpack.packb({"ns": namespace, "r": room, "e": event, "a": args},
                                 use_bin_type=True)
        except (TypeError, ValueError) as exc:
            if event not in self._warned:
                self._warned.add(event)
                log.warning("redis fan-out: %r events cannot be encoded (%s); they stay "
                            "on this node", event, exc)
            return
        self.queue.put(room, EVENT + self._id + body)

    # -- publishing -------------------------------------------------------------

    async def _publisher(self) -> None:
        """Publish the queue in order, batch by batch, for the server's life."""
        while True:
            batch = await self.queue.batch(BATCH_EVENTS, BATCH_BYTES, timeout=BEAT)
            if not batch and self.queue.closed:
                return
            payloads = [(self.room_channel(room), payload) for room, payload in batch]
            now = time.monotonic()
            beat = now - self._beat_sent >= BEAT
            if beat:
                payloads.append((self.channel, BEAT_KIND + self._id + msgpack.packb({"t": now})))
            lost = self.queue.take_lost()
            if lost:
                payloads.append((self.channel,
                                 CATCH_UP + self._id + msgpack.packb({"r": lost.names()})))
            try:
                await self._publish(payloads)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis raises many kinds; all mean "not published"
                self.queue.lose(room for room, _ in batch)
                self.queue.merge(lost)
                self.queue.suspend()
                try:
                    await self._publish_failed(exc)
                finally:
                    self.queue.resume()
                continue
            if beat:
                self._beat_sent = now
            if lost:
                log.info("redis fan-out: told the other nodes to catch up on %s",
                         "every room" if lost.everything else f"{len(lost.rooms)} rooms")

    async def _publish(self, payloads: list[tuple[str, bytes]]) -> None:
        client = self._publisher_client
        if client is None:
            client = self._publisher_client = redis_client.connect(
                self.url, max_connections=1, name=self.client_name + ":pub")
        if len(payloads) == 1:
            await client.publish(*payloads[0])
        else:
            async with client.pipeline(transaction=False) as pipe:
                for channel, payload in payloads:
                    pipe.publish(channel, payload)
                await pipe.execute()
        if not self._publish_ok:
            log.info("redis fan-out: publishing again")
        self._publish_ok = True

    async def _publish_failed(self, exc: Exception) -> None:
        """Replace the publisher's connection once Redis answers it again."""
        if self._publish_ok:
            log.warning("redis fan-out: publish failed (%s); the other nodes will catch "
                        "up once it works again", exc)
        self._publish_ok = False
        delay = 0.1
        while True:
            await self._drop_publisher_client()
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY)
            client = self._publisher_client = redis_client.connect(
                self.url, max_connections=1, name=self.client_name + ":pub")
            try:
                await client.ping()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                continue

    async def _drop_publisher_client(self) -> None:
        client, self._publisher_client = self._publisher_client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # closing a broken connection may fail; it is gone either way
                pass

    # -- subscribing ------------------------------------------------------------

    async def _subscriber(self) -> None:
        """Listen for the server's life, resubscribing after any failure."""
        delay = 0.1
        while True:
            client = redis_client.connect(self.url, max_connections=1,
                                          name=self.client_name + ":sub", socket_timeout=None)
            pubsub = client.pubsub()
            try:
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:  # the link, not us
                if self._subscribed:
                    log.warning("redis fan-out: subscription lost (%s); resubscribing", exc)
                    delay = 0.1
            except Exception:  # a bug of ours: loud, and the subscription starts again
                log.exception("redis fan-out: the listener failed; resubscribing")
                delay = 0.1
            finally:
                self._subscribed = False
                for closing in (pubsub, client):
                    try:
                        await closing.aclose()
                    except Exception:  # a broken connection; it is gone either way
                        pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY)

    async def _listen(self, pubsub: Any) -> None:
        self.subscriptions.reset()
        await asyncio.wait_for(self._sync(pubsub, first=True), redis_client.SOCKET_TIMEOUT)
        tasks = [asyncio.ensure_future(self._read(pubsub)),
                 asyncio.ensure_future(self._watch()),
                 asyncio.ensure_future(self._keep_synced(pubsub))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # what ended it

    async def _keep_synced(self, pubsub: Any) -> None:
        """Subscribe and unsubscribe rooms' channels as members come and go."""
        while True:
            await self.subscriptions.changed.wait()
            await self._sync(pubsub)

    async def _sync(self, pubsub: Any, *, first: bool = False) -> None:
        """Send what the subscriptions lack. The first time on a connection the
        cluster's channel goes last: its confirmation then means every room's
        channel is confirmed too (replies come in order), and the rooms are
        caught up on what was published while this node was not listening.
        Unsubscribes go first: a later subscription's confirmation then says
        that Redis took them too."""
        add, remove = self.subscriptions.changes()
        if first and self.channel in add:
            add.remove(self.channel)
            add.append(self.channel)
        for i in range(0, len(remove), SUBSCRIBE_CHUNK):
            await pubsub.unsubscribe(*remove[i:i + SUBSCRIBE_CHUNK])
        for i in range(0, len(add), SUBSCRIBE_CHUNK):
            await pubsub.subscribe(*add[i:i + SUBSCRIBE_CHUNK])

    async def _read(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            kind = message.get("type")
            if kind == "message":
                await self._receive(message["data"])
            elif kind == "subscribe":
                self._confirmed(_text(message["channel"]))
            elif kind == "unsubscribe":
                self.subscriptions.unsubscribed(_text(message["channel"]))
        raise ConnectionError("the subscription ended")

    def _confirmed(self, channel: str) -> None:
        self.subscriptions.subscribed(channel)
        if channel != self.channel:
            room = self._late.pop(channel, None)
            if room is not None:  # joined before this: what did it miss?
                self._catch_up([room])
            return
        self._subscribed = True
        self._beat_heard = time.monotonic()
        if not self._ever_subscribed.is_set():
            log.info("redis fan-out: subscribed to %s and %d rooms' channels", self.channel,
                     len(self.subscriptions) - 1)
        self._ever_subscribed.set()
        self._late.clear()
        self._catch_up(None)  # whatever was published while we were not listening

    async def _watch(self) -> None:
        """Return when the subscription has gone silent: beats Redis accepted
        ``stale_after`` seconds after the last one we heard back."""
        while True:
            await asyncio.sleep(BEAT)
            if self._subscribed and self._beat_sent - self._beat_heard > self.stale_after:
                log.warning("redis fan-out: none of our beats came back for %g s",
                            self.stale_after)
                return

    async def _receive(self, data: bytes) -> None:
        kind, sender, body = data[:1], data[1:17], data[17:]
        if sender == self._id:
            if kind == BEAT_KIND:
                self._beat_heard = max(self._beat_heard, float(msgpack.unpackb(body)["t"]))
            return
        try:
            fields = msgpack.unpackb(body)
            if kind == EVENT:
                self.received += 1
                args = fields["a"]
                await CountingManager.emit(
                    self, fields["e"], tuple(args) if len(args) != 1 else args[0],
                    namespace=fields["ns"], room=fields["r"])
            elif kind == CATCH_UP:
                rooms = fields["r"]
                self._catch_up(None if rooms is None else [str(room) for room in rooms])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            log.warning("redis fan-out: ignored a malformed payload (%s)", exc)

    def _catch_up(self, rooms: list[str] | None) -> None:
        if self.on_catch_up is not None:
            self.catch_ups += 1
            self.on_catch_up(rooms)


def _text(channel: bytes | str) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel
