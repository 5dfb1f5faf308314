"""One subscription connection of the fan-out: :class:`SubscriptionLink`.

A link holds one connection to one Redis server, subscribed to the channels
its :class:`~app.fanout.subscriptions.Subscriptions` want, and hands what
arrives to its owner (:class:`~app.fanout.redis.RedisFanout`). On one Redis
the node has one link (``SUBSCRIBE``); on a Redis Cluster, one per master
whose slots hold channels the node wants (sharded pub/sub: ``SSUBSCRIBE``,
each channel on the master of its slot).

Each link has a *beat channel* on its own server: the owner's publisher
publishes a beat on it every second, and a link whose beats Redis accepted
but that hears none back for ``stale_after`` seconds (a partition that drops
packets, without an error) reconnects. On every (re)connection the link
sends all it wants with the beat channel last: its confirmation then means
every other channel is confirmed too (replies come in order), and the owner
catches those rooms up on what was published while the link was down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from redis.crc import key_slot
from redis.exceptions import RedisError

from .. import redis_client
from .subscriptions import Subscriptions

log = logging.getLogger(__name__)

BEAT = 1.0  # seconds between beats
MAX_RETRY = 2.0  # seconds between reconnection attempts, at most
SUBSCRIBE_CHUNK = 1_000  # channels per (S)SUBSCRIBE command, at most


class Owner(Protocol):
    stale_after: float

    async def receive(self, data: bytes) -> None:
        """A payload arrived on one of the link's channels."""

    def confirmed(self, link: SubscriptionLink, channel: str) -> None:
        """Redis confirmed ``channel`` (the beat channel: the link is subscribed)."""

    def dropped(self, link: SubscriptionLink, channel: str) -> None:
        """Redis unsubscribed ``channel`` unasked (its slot moved to another master)."""

    async def lost(self, link: SubscriptionLink) -> None:
        """The link's connection failed; it reconnects after this returns."""


class SubscriptionLink:
    def __init__(self, owner: Owner, *, key: str, url: str, name: str, beat_channel: str,
                 sharded: bool) -> None:
        self.owner = owner
        self.key = key  # "" on one Redis; the master's host:port on a cluster
        self.url = url
        self.name = name
        self.beat_channel = beat_channel
        self.sharded = sharded
        self.subscriptions = Subscriptions()
        self.subscriptions.want(beat_channel)
        self.subscribed = False  # the beat channel is confirmed on this connection
        self.beat_sent = 0.0  # clock of the last beat Redis accepted for this link
        self.beat_heard = 0.0  # clock of the last of those that came back
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.run(), name=f"fanout-subscriber{':' + self.key if self.key else ''}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.subscribed = False

    async def run(self) -> None:
        """Listen for the server's life, resubscribing after any failure."""
        delay = 0.1
        while True:
            client = redis_client.connect(self.url, max_connections=1, name=self.name,
                                          socket_timeout=None)
            pubsub = client.pubsub()
            try:
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:  # the link, not us
                log.debug("redis fan-out: subscription %s failed: %r", self.key or self.url, exc)
                if self.subscribed:
                    log.warning("redis fan-out: subscription %s lost (%s); resubscribing",
                                self.key or self.url, exc)
                    delay = 0.1
            except Exception:  # a bug of ours: loud, and the subscription starts again
                log.exception("redis fan-out: the listener failed; resubscribing")
                delay = 0.1
            finally:
                self.subscribed = False
                for closing in (pubsub, client):
                    try:
                        await closing.aclose()
                    except Exception:  # a broken connection; it is gone either way
                        pass
            await self.owner.lost(self)
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
        """Send what the subscriptions lack, the beat channel last the first time
        on a connection (see the module's doc). Unsubscribes go first: a later
        subscription's confirmation then says that Redis took them too."""
        add, remove = self.subscriptions.changes()
        if self.sharded:  # a command per slot: neighbours share one
            add.sort(key=lambda channel: key_slot(channel.encode()))
        if first and self.beat_channel in add:
            add.remove(self.beat_channel)
            add.append(self.beat_channel)
        subscribe, unsubscribe = ((pubsub.ssubscribe, pubsub.sunsubscribe) if self.sharded
                                  else (pubsub.subscribe, pubsub.unsubscribe))
        for command, channels in ((unsubscribe, remove), (subscribe, add)):
            for group in self._commands(channels):
                await command(*group)

    def _commands(self, channels: list[str]) -> list[list[str]]:
        """``channels`` in commands, in order: at most :data:`SUBSCRIBE_CHUNK`
        each and, sharded, of one hash slot each (Redis refuses a command that
        crosses slots)."""
        groups: list[list[str]] = []
        for channel in channels:
            last = groups[-1] if groups else None
            if (last is None or len(last) >= SUBSCRIBE_CHUNK
                    or (self.sharded and key_slot(last[0].encode()) != key_slot(channel.encode()))):
                groups.append([channel])
            else:
                last.append(channel)
        return groups

    async def _read(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            kind = message.get("type")
            if kind in ("message", "smessage"):
                await self.owner.receive(message["data"])
            elif kind in ("subscribe", "ssubscribe"):
                channel = _text(message["channel"])
                self.subscriptions.subscribed(channel)
                if channel == self.beat_channel:
                    self.subscribed = True
                    self.beat_heard = time.monotonic()
                self.owner.confirmed(self, channel)
            elif kind in ("unsubscribe", "sunsubscribe"):
                channel = _text(message["channel"])
                if not self.subscriptions.unsubscribed(channel):
                    self.owner.dropped(self, channel)
        raise ConnectionError("the subscription ended")

    async def _watch(self) -> None:
        """Return when the subscription has gone silent: beats Redis accepted
        ``stale_after`` seconds after the last one heard back."""
        while True:
            await asyncio.sleep(BEAT)
            stale_after = self.owner.stale_after
            if self.subscribed and self.beat_sent - self.beat_heard > stale_after:
                log.warning("redis fan-out: none of our beats came back on %s for %g s",
                            self.key or self.url, stale_after)
                return


def _text(channel: bytes | str) -> str:
    return channel.decode() if isinstance(channel, bytes) else channel
