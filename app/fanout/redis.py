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
* the **subscribers** (:mod:`app.fanout.link`) listen on the channel of
  each room where this node has members (``P:fanout:{ROOM}``, subscribed with
  the room's first member here and unsubscribed with its last) and on the
  cluster's channel (``P:fanout``: catch-up notices), and deliver the other
  nodes' events to this node's members: a node receives the traffic of its
  own rooms, not the cluster's. A join waits until its room's channel is
  confirmed before it reads the room's history. On one Redis there is one
  subscription connection; on a Redis Cluster (``redis-cluster://``) the
  channels are sharded (``SPUBLISH``/``SSUBSCRIBE``, a room's channel in its
  room's hash slot, with its presence keys) and there is one subscription
  connection per master; after a failover the channels of the master that
  went are placed again on whichever master serves their slots now. After
  every (re)subscription, and on a catch-up notice from another node, the
  chat is asked (``on_catch_up``) to tell its members of the rooms concerned
  to catch up from the store, so a message published while a link was down
  reaches everyone without waiting for the next one. A subscription that
  goes silent without an error is found by its own heartbeat (beats on each
  link's own channel, see :mod:`app.fanout.link`).

On the channel each payload is one kind byte, this process's 16-byte id,
and a msgpack body: ``e`` an event ``{ns, r, e, a}`` (namespace, room,
event, arguments; and ``t``, the W3C traceparent, when it is traced:
:mod:`app.tracing`), ``c`` a catch-up notice ``{r}`` (the rooms, or nil for
every room), ``b`` a beat (``{t, l}``, the publisher's clock and the link,
read only by its own node), ``d`` an end ``{ns, r}`` (end every connection
in the room: a person's connections ended through the HTTP API). A node
skips its own events by the id, without decoding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgpack

from .. import redis_client, tracing
from . import CatchUp, CountingManager, Fanout, Gauge
from .link import BEAT, SubscriptionLink
from .queue import PublishQueue

log = logging.getLogger(__name__)

"""Told the rooms (None: all) whose events this node may have missed."""

STALE_AFTER = 10.0  # seconds of our own accepted beats unheard: the subscription is dead
MAX_RETRY = 2.0  # seconds between reconnection attempts, at most
BATCH_EVENTS = 512  # events per publish pipeline, at most
BATCH_BYTES = 1 << 20  # bytes per publish pipeline (past its first event), at most
CLOSE_FLUSH = 2.0  # seconds close() gives the queue to drain
JOIN_WAIT = 2.0  # seconds a join waits for its room's subscription (then: a catch-up)
MAX_TRACED = 10_000  # traced events waiting to be published; past it, not traced

EVENT, CATCH_UP, BEAT_KIND, END = b"e", b"c", b"b", b"d"


class RedisFanout(CountingManager):
    name = "roomcast-redis"

    def __init__(self, url: str, channel: str, *, name: str, max_queue_bytes: int) -> None:
        super().__init__()
        self.url = url
        self.channel = channel
        self.client_name = name
        self.sharded = redis_client.is_cluster(url)
        self.queue = PublishQueue(max_queue_bytes)
        self.on_catch_up: CatchUp | None = None  # set by the chat
        self.stale_after = STALE_AFTER
        self._id = uuid.uuid4().bytes  # this process on the channel
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_client: Any = None
        self._publish_ok = True
        self._ever_subscribed = asyncio.Event()
        self.catch_ups = 0  # catch-ups asked of the chat (that tests can count)
        self.received = 0  # events received from the other nodes
        self._warned: set[str] = set()
        self._traced: dict[int, tracing.Producer] = {}  # id(payload) -> its publish span
        self._room_refs: dict[str, int] = {}  # room -> namespaces here with members in it
        self._rooms_of: dict[str, str] = {}  # channel -> its room, for rooms with members here
        self._late: dict[str, str] = {}  # channel -> room joined before it was confirmed
        # the subscription links, by master ("" on one Redis), and where each wanted
        # channel is placed; on a cluster, channels wanted before the slots are
        # known wait in _unplaced
        self.links: dict[str, SubscriptionLink] = {}
        self._placed: dict[str, str] = {}
        self._unplaced: set[str] = set()
        self._slots: Any = None  # on a cluster: a client that knows which master has a slot
        self._placing: asyncio.Task[None] | None = None
        self._started = False
        self._want(channel)

    @property
    def channels(self) -> int:
        """Channels this node subscribes to (or wants to)."""
        return len(self._placed) + len(self._unplaced)

    @property
    def subscribed(self) -> bool:
        return (not self._unplaced and bool(self.links)
                and all(link.subscribed for link in self.links.values()))

    @property
    def healthy(self) -> bool:
        """Subscribed, and the last publish went through."""
        return self.subscribed and self._publish_ok

    def status(self) -> str:
        """For ``/healthz``: "ok", or what is wrong."""
        if not self.subscribed:
            return "not subscribed to Redis"
        return "ok" if self._publish_ok else "cannot publish to Redis"

    def gauges(self) -> dict[str, Gauge]:
        return {
            "roomcast_fanout_up": ("1 while subscribed to Redis fan-out and publishing",
                                   lambda: 1.0 if self.healthy else 0.0),
            "roomcast_fanout_queue_bytes": ("Bytes of events waiting to be published to the "
                                            "other nodes", lambda: self.queue.size),
            "roomcast_fanout_lost": ("Events not published to the other nodes (queue full, "
                                     "or Redis unreachable; they caught up instead), since "
                                     "start", lambda: self.queue.lost_events),
            "roomcast_fanout_catch_ups": ("Catch-ups this node asked of its clients, since "
                                          "start", lambda: self.catch_ups),
            "roomcast_fanout_received": ("Events received from the other nodes (those of "
                                         "rooms with members here only), since start",
                                         lambda: self.received),
            "roomcast_fanout_channels": ("Redis channels this node subscribes to (one per "
                                         "room with members here, and the cluster's)",
                                         lambda: self.channels),
        }

    def initialize(self) -> None:
        super().initialize()
        loop = asyncio.get_running_loop()
        self._started = True
        self._tasks = [loop.create_task(self._publisher(), name="fanout-publisher")]
        if self.sharded:
            self._replace()
        for link in self.links.values():
            link.start()

    async def wait_subscribed(self, timeout: float) -> None:
        """Wait until subscribed, at most ``timeout`` s (then /healthz says so)."""
        try:
            await asyncio.wait_for(self._ever_subscribed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("redis fan-out: not subscribed after %g s; still trying", timeout)

    async def close(self) -> None:
        """Publish what is queued (for at most :data:`CLOSE_FLUSH` s), then stop
        every task and close their connections."""
        self.queue.close()
        if self._tasks:
            await asyncio.wait(self._tasks[:1], timeout=CLOSE_FLUSH)
        if self._placing is not None:
            self._tasks.append(self._placing)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._end_traced(None, "not published")
        for link in self.links.values():
            await link.stop()
        await self._drop_publisher_client()
        if self._slots is not None:
            await self._slots.aclose()

    # -- which rooms this node subscribes to, and where --------------------------

    def room_channel(self, room: object) -> str:
        """The channel of ``room``'s events (the cluster's channel for events not
        addressed to one room); its hash tag is the room's, as presence's keys."""
        if isinstance(room, str):
            return f"{self.channel}:{redis_client.slot_tag(room)}"
        return self.channel

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        new = isinstance(room, str) and room != sid and room not in self.rooms.get(namespace, ())
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if new:
            refs = self._room_refs[room] = self._room_refs.get(room, 0) + 1
            if refs == 1:
                channel = self.room_channel(room)
                self._rooms_of[channel] = room
                self._want(channel)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        was = isinstance(room, str) and room != sid and room in self.rooms.get(namespace, ())
        super().basic_leave_room(sid, namespace, room)
        if was and room not in self.rooms.get(namespace, ()):
            refs = self._room_refs[room] = self._room_refs[room] - 1
            if not refs:
                del self._room_refs[room]
                channel = self.room_channel(room)
                del self._rooms_of[channel]
                self._late.pop(channel, None)
                self._drop(channel)

    async def enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        """Enter, and wait (at most :data:`JOIN_WAIT` s) until this node receives
        the room's events from the others: what the caller reads of the room
        next (its history) and what is broadcast after meet, with no gap. If
        Redis is down, or slow to confirm, the room is caught up once it is."""
        self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if not isinstance(room, str) or room == sid:
            return
        channel = self.room_channel(room)
        link = self.links.get(self._placed.get(channel, ""))
        if link is not None and channel in self._placed and link.subscriptions.ready(channel):
            return
        if (link is None or not link.subscribed
                or not await link.subscriptions.wait(channel, JOIN_WAIT)):
            if room in self._room_refs:
                self._late[channel] = room

    def _want(self, channel: str) -> None:
        key = self._address(channel)
        if key is None:
            self._unplaced.add(channel)
            return
        self._placed[channel] = key
        self._link(key).subscriptions.want(channel)

    def _drop(self, channel: str) -> None:
        self._unplaced.discard(channel)
        key = self._placed.pop(channel, None)
        link = self.links.get(key) if key is not None else None
        if link is not None:
            link.subscriptions.drop(channel)

    def _address(self, channel: str) -> str | None:
        """The link for ``channel``: "" on one Redis, its master on a cluster
        (None until the slots are known)."""
        if not self.sharded:
            return ""
        if self._slots is None or not redis_client.knows_slots(self._slots):
            return None
        return redis_client.address_of(self._slots, channel)

    def _link(self, key: str) -> SubscriptionLink:
        link = self.links.get(key)
        if link is None:
            if self.sharded:
                host, _, port = key.rpartition(":")
                url = redis_client.node_url(self.url, host, int(port))
                beat = next(c for c in (f"{self.channel}:beat:{{{n}}}" for n in range(1 << 20))
                            if self._address(c) == key)
            else:
                url, beat = self.url, self.channel
            link = self.links[key] = SubscriptionLink(
                self, key=key, url=url, name=self.client_name + ":sub", beat_channel=beat,
                sharded=self.sharded)
            if self._started:
                link.start()
        return link

    def _replace(self) -> None:
        """(Cluster) learn the slots again, then put every wanted channel on the
        link of the master serving its slot now; start one placing at a time."""
        if self._placing is None or self._placing.done():
            self._placing = asyncio.get_running_loop().create_task(
                self._place(), name="fanout-placing")

    async def _learn_slots(self) -> None:
        """A new client that has asked the cluster which master serves which
        slot, in place of the old one (retried until a node answers)."""
        delay = 0.1
        while True:
            slots = redis_client.connect(self.url, max_connections=1,
                                         name=self.client_name + ":slots")
            try:
                await slots.initialize()  # CLUSTER SLOTS, of any node that answers
            except asyncio.CancelledError:
                await slots.aclose()
                raise
            except Exception as exc:  # no node answers yet: try again
                await slots.aclose()
                log.warning("redis fan-out: cannot learn the cluster's slots (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
                continue
            old, self._slots = self._slots, slots
            if old is not None:
                await old.aclose()
            return

    async def _place(self) -> None:
        await self._learn_slots()
        moved = 0
        for channel in sorted([*self._placed, *self._unplaced]):
            key = self._address(channel)
            if key is None or self._placed.get(channel) == key:
                continue
            old = self.links.get(self._placed.get(channel, ""))
            if old is not None and channel != old.beat_channel:
                old.subscriptions.drop(channel)
            self._unplaced.discard(channel)
            self._placed[channel] = key
            self._link(key).subscriptions.want(channel)
            if channel in self._rooms_of:  # what it missed in between is caught up
                self._late[channel] = self._rooms_of[channel]
            moved += 1
        for key, link in list(self.links.items()):
            if key not in self._placed.values():  # no longer a master of ours
                del self.links[key]
                await link.stop()
        if moved:
            log.info("redis fan-out: %d channels placed on %d masters", moved, len(self.links))

    # -- what the links report (SubscriptionLink's owner) ------------------------

    async def receive(self, data: bytes) -> None:
        await self._receive(data)

    def confirmed(self, link: SubscriptionLink, channel: str) -> None:
        if channel != link.beat_channel:
            room = self._late.pop(channel, None)
            if room is not None:  # joined before this: what did it miss?
                self._catch_up([room])
            return
        # every channel of the link is confirmed with its beat channel: the
        # rooms are caught up on what was published while it was not listening
        if self.sharded:
            rooms = sorted(self._rooms_of[c] for c in link.subscriptions.wanted
                           if c in self._rooms_of)
            for channel in link.subscriptions.wanted:
                self._late.pop(channel, None)
            if rooms:
                self._catch_up(rooms)
        else:
            self._late.clear()
            self._catch_up(None)
        if self.subscribed and not self._ever_subscribed.is_set():
            log.info("redis fan-out: subscribed to %d channels on %d %s", self.channels,
                     len(self.links), "masters" if self.sharded else "Redis")
            self._ever_subscribed.set()

    def dropped(self, link: SubscriptionLink, channel: str) -> None:
        if self.sharded:  # the slot moved: to which master?
            self._replace()

    async def lost(self, link: SubscriptionLink) -> None:
        if self.sharded:  # a failover, maybe: the slots may have moved
            self._replace()

    # -- emitting ---------------------------------------------------------------

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None,
                   skip_sid: Any = None, callback: Any = None, to: Any = None,
                   hop: str = "local", **kwargs: Any) -> None:
        """Queue the event for the other nodes (before any await: the queue's
        order is the emit order), then deliver it here. ``ignore_queue`` and
        events with a callback stay on this node."""
        if not kwargs.get("ignore_queue") and callback is None:
            self._queue(event, data, namespace, to or room)
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                           callback=callback, to=to, **kwargs)

    async def end_room(self, namespace: str, room: str) -> None:
        """End the room's connections here, and on the other nodes (in order
        with the room's events: those emitted before reach them first)."""
        self.queue.put(room, END + self._id + msgpack.packb({"ns": namespace, "r": room}))
        await super().end_room(namespace, room)

    def _queue(self, event: str, data: Any, namespace: str, room: Any) -> None:
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        fields = {"ns": namespace, "r": room, "e": event, "a": args}
        span = tracing.producer("fanout.publish") if len(self._traced) < MAX_TRACED else None
        if span is not None and span.traceparent:
            fields["t"] = span.traceparent
        try:
            body = msgpack.packb(fields, use_bin_type=True)
        except (TypeError, ValueError) as exc:
            if event not in self._warned:
                self._warned.add(event)
                log.warning("redis fan-out: %r events cannot be encoded (%s); they stay "
                            "on this node", event, exc)
            if span is not None:
                span.end("not encodable")
            return
        payload = EVENT + self._id + body
        queued = self.queue.put(room, payload)
        if span is not None:
            if queued:  # ended once published (_publisher), or lost
                self._traced[id(payload)] = span
            else:
                span.end("lost")

    # -- publishing -------------------------------------------------------------

    async def _publisher(self) -> None:
        """Publish the queue in order, batch by batch, for the server's life."""
        while True:
            batch = await self.queue.batch(BATCH_EVENTS, BATCH_BYTES, timeout=BEAT)
            if not batch and self.queue.closed:
                return
            payloads = [(self.room_channel(room), payload) for room, payload in batch]
            now = time.monotonic()
            beating = [link for link in self.links.values() if now - link.beat_sent >= BEAT]
            for link in beating:
                payloads.append((link.beat_channel, BEAT_KIND + self._id + msgpack.packb(
                    {"t": now, "l": link.key})))
            lost = self.queue.take_lost()
            if lost:
                payloads.append((self.channel,
                                 CATCH_UP + self._id + msgpack.packb({"r": lost.names()})))
            try:
                await self._publish(payloads)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis raises many kinds; all mean "not published"
                self._end_traced(None, "lost")  # the batch and all queued behind it
                self.queue.lose(room for room, _ in batch)
                self.queue.merge(lost)
                self.queue.suspend()
                try:
                    await self._publish_failed(exc)
                finally:
                    self.queue.resume()
                continue
            if self._traced:
                self._end_traced(batch)
            for link in beating:
                link.beat_sent = now
            if lost:
                log.info("redis fan-out: told the other nodes to catch up on %s",
                         "every room" if lost.everything else f"{len(lost.rooms)} rooms")

    def _end_traced(self, batch: list[tuple[object, bytes]] | None,
                    error: str | None = None) -> None:
        """End the publish spans of ``batch``'s events (None: of all)."""
        if batch is None:
            spans = list(self._traced.values())
            self._traced.clear()
        else:
            spans = [span for _, payload in batch
                     if (span := self._traced.pop(id(payload), None)) is not None]
        for span in spans:
            span.end(error)

    async def _publish(self, payloads: list[tuple[str, bytes]]) -> None:
        client = self._publisher_client
        if client is None:
            client = self._publisher_client = redis_client.connect(
                self.url, max_connections=1, name=self.client_name + ":pub")
        command = "spublish" if self.sharded else "publish"
        if len(payloads) == 1:
            await getattr(client, command)(*payloads[0])
        else:
            async with client.pipeline(transaction=False) as pipe:
                for channel, payload in payloads:
                    getattr(pipe, command)(channel, payload)
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

    # -- receiving --------------------------------------------------------------

    async def _receive(self, data: bytes) -> None:
        kind, sender, body = data[:1], data[1:17], data[17:]
        if sender == self._id:
            if kind == BEAT_KIND:
                beat = msgpack.unpackb(body)
                link = self.links.get(str(beat.get("l", "")))
                if link is not None:
                    link.beat_heard = max(link.beat_heard, float(beat["t"]))
            return
        try:
            fields = msgpack.unpackb(body)
            if kind == EVENT:
                self.received += 1
                args = fields["a"]
                traced = None
                if self.tracer is not None and isinstance(fields.get("t"), str):
                    traced = self.tracer.received(fields["t"], str(fields["e"]))
                try:
                    await CountingManager.emit(
                        self, fields["e"], tuple(args) if len(args) != 1 else args[0],
                        namespace=fields["ns"], room=fields["r"], hop="redis")
                finally:
                    if traced is not None:
                        tracing.Tracing.done(traced)
            elif kind == END:
                await CountingManager.end_room(self, fields["ns"], fields["r"])
            elif kind == CATCH_UP:
                rooms = fields["r"]
                self._catch_up(None if rooms is None else [str(room) for room in rooms])
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            log.warning("redis fan-out: ignored a malformed payload (%s)", exc)

    def _catch_up(self, rooms: list[str] | None) -> None:
        if self.on_catch_up is not None:
            self.catch_ups += 1
            self.on_catch_up(rooms)


_conforms: type[Fanout] = RedisFanout
