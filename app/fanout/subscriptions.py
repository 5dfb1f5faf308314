"""The channels one subscription link should hold, and those Redis has confirmed.

I/O-free bookkeeping for :class:`~app.fanout.redis.RedisFanout`'s subscriber:
the fan-out says which channels it wants (a room's channel while the node
has members in the room), the link takes what to send (:meth:`changes`) and
reports Redis's replies (:meth:`subscribed`, :meth:`unsubscribed`), and a
join waits (:meth:`wait`) until its room's channel is confirmed, so that
nothing published after the join reads the room's history can pass it by.

Replies come in the order the commands were sent, so a channel is *ready*
when Redis confirmed it and no (un)subscribe of it is still unanswered: a
member leaving and another joining at once sends UNSUBSCRIBE then SUBSCRIBE,
and only the second reply makes the channel ready again. An unsubscribe
reply nobody asked for (Redis Cluster moving the channel's slot elsewhere)
makes a wanted channel wanted again, to be subscribed anew.
"""

from __future__ import annotations

import asyncio
from collections import Counter


class Subscriptions:
    def __init__(self) -> None:
        self.wanted: set[str] = set()
        self._sent: set[str] = set()  # subscribed, as far as what was sent says
        self._asked: Counter[str] = Counter()  # (un)subscribes sent, not yet answered
        self._unasked: Counter[str] = Counter()  # of those, unsubscribes
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.changed = asyncio.Event()  # there is something to send

    def __len__(self) -> int:
        return len(self.wanted)

    def want(self, channel: str) -> None:
        if channel not in self.wanted:
            self.wanted.add(channel)
            self.changed.set()

    def drop(self, channel: str) -> None:
        if channel in self.wanted:
            self.wanted.discard(channel)
            self.changed.set()

    def changes(self) -> tuple[list[str], list[str]]:
        """What to subscribe and unsubscribe now (sorted), counted as sent."""
        self.changed.clear()
        add, remove = sorted(self.wanted - self._sent), sorted(self._sent - self.wanted)
        for channel in add:
            self._asked[channel] += 1
        for channel in remove:
            self._asked[channel] += 1
            self._unasked[channel] += 1
        self._sent.update(add)
        self._sent.difference_update(remove)
        return add, remove

    def subscribed(self, channel: str) -> None:
        """Redis confirmed a subscription of ``channel``."""
        self._answered(channel)
        self._confirmed.add(channel)
        if self.ready(channel):
            for waiter in self._waiters.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def unsubscribed(self, channel: str) -> bool:
        """Redis says ``channel`` is not subscribed; whether that was asked for."""
        asked = self._unasked[channel] > 0
        if asked:
            self._unasked[channel] -= 1
            if not self._unasked[channel]:
                del self._unasked[channel]
            self._answered(channel)
        self._confirmed.discard(channel)
        if not asked and channel in self._sent:  # Redis dropped it: subscribe again
            self._sent.discard(channel)
            if channel in self.wanted:
                self.changed.set()
        return asked

    def _answered(self, channel: str) -> None:
        if self._asked[channel] > 0:
            self._asked[channel] -= 1
        if not self._asked[channel]:
            del self._asked[channel]

    def ready(self, channel: str) -> bool:
        return channel in self._confirmed and channel not in self._asked

    async def wait(self, channel: str, timeout: float) -> bool:
        """Wait until ``channel`` is ready, at most ``timeout`` s; whether it is."""
        if self.ready(channel):
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except asyncio.TimeoutError:
            return self.ready(channel)
        finally:
            waiting = self._waiters.get(channel)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[channel]

    def reset(self) -> None:
        """The link is gone: nothing is subscribed any more; everything wanted is
        to be sent again (waiters keep waiting for the new link)."""
        self._sent.clear()
        self._asked.clear()
        self._unasked.clear()
        self._confirmed.clear()
        self.changed.set()
