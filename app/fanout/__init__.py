"""Fan-out: delivering a room's events to its members on this node and on the others.

``client_manager(settings, metrics, node)`` picks the implementation by the
settings, side by side behind python-socketio's client-manager interface:

==================  ==========================  =====================================
implementation      module                      for
==================  ==========================  =====================================
:class:`LocalFanout` :mod:`app.fanout`          one node (the default)
``RedisFanout``     :mod:`app.fanout.redis`     several nodes (``--redis URL``):
                                                an ordered, bounded publish queue
                                                (:mod:`app.fanout.queue`) and a
                                                subscription, each on its own
                                                connection
==================  ==========================  =====================================

Both count what they deliver on this node (:class:`CountingManager`),
including events that came from other nodes, and deliver an event to this
node's members before anything else (a sender's ack never waits for Redis).
Beside python-socketio's manager role, each is a :class:`Fanout`: what the
server asks of fan-out (tell the chat when events may have been lost, wait
for the link at start, report its health and gauges, flush and close),
with no need to know which one it has.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from socketio import packet

from .. import compat, tracing
from ..metrics import Metrics
from ..settings import Settings

if TYPE_CHECKING:
    from .redis import RedisFanout


CatchUp = Callable[[Collection[str] | None], None]
"""Called with the rooms (None: every room) whose events this node may have missed."""
Observer = Callable[[Any], Awaitable[None]]
"""Called with an event's data once it is delivered to this node's members."""
Gauge = tuple[str, Callable[[], float]]  # its help text, and how to read it


class Fanout(Protocol):
    on_catch_up: CatchUp | None  # set by the chat
    observers: dict[str, Observer]  # set by the chat: see CountingManager

    async def wait_subscribed(self, timeout: float) -> None:
        """At start: wait, at most ``timeout`` s, for the link to the other nodes."""

    def status(self) -> str:
        """For ``/healthz``: "ok", or what is wrong."""

    def gauges(self) -> dict[str, Gauge]:
        """Prometheus gauges of this fan-out, by name, read at scrape time."""

    async def close(self) -> None:
        """Deliver what is queued (within a bound), then stop."""

    async def end_room(self, namespace: str, room: str) -> None:
        """End every connection in ``room`` of ``namespace``, on every node."""


class CountingManager(compat.Manager):  # type: ignore[misc]
    """Counts, per room event of /chat, the connections on this node it goes to,
    and knows which rooms each connection is in (see :meth:`basic_disconnect`)."""

    metrics: Metrics | None = None  # set by client_manager
    tracer: tracing.Tracing | None = None  # set by the app when tracing is on
    counted = "/"  # the namespace whose room events are counted (set by client_manager)
    # events of the counted namespace that a connection catching up fetches
    # again (set by the chat): the server may drop them for one that is behind
    droppable: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # events of the counted namespace that the chat acts on at every node
        # (a ban takes the person's connections here out of the room): each
        # observer is awaited after the event is delivered here, whichever
        # node emitted it, before the room's next event (it must not suspend)
        self.observers: dict[str, Observer] = {}
        # (namespace, sid) -> the rooms it entered besides its own and None
        # (most connections are in one such room, their person's: it is held as
        # itself, a set only from the second on: 0.2 KB less an idle connection)
        self._entered: dict[tuple[str, str], Any] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        if room == sid:
            # its own room: the connection's entry in room None addresses it (see
            # _members); python-socketio kept a bidict for each, 0.6 KB a connection
            if self.eio_sid_from_sid(sid, namespace) is None:
                raise ValueError("sid is not connected to requested namespace")
            return
        if room is None:  # connecting: a bidict, for the library's eio_sid -> sid
            super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
            return
        # a named room: a plain dict (sid -> eio_sid), checked as the library
        # does; its bidict held each entry twice and took 1.7 us to add one (0.3)
        if eio_sid is None and namespace not in self.rooms:
            raise ValueError("sid is not connected to requested namespace")
        rooms = self.rooms.setdefault(namespace, {})
        connected = rooms.get(None, {})
        if room in connected:
            raise ValueError("cannot enter a sid room")
        members = rooms.get(room)
        if members is None:
            members = rooms[room] = {}
        members[sid] = connected[sid] if eio_sid is None else eio_sid
        key = (namespace, sid)
        held = self._entered.get(key)
        if held is None:
            self._entered[key] = room
        elif isinstance(held, set):
            held.add(room)
        elif held != room:
            self._entered[key] = {held, room}

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        if room == sid:  # never entered: see basic_enter_room
            return
        super().basic_leave_room(sid, namespace, room)
        key = (namespace, sid)
        held = self._entered.get(key)
        if isinstance(held, set):
            held.discard(room)
            if len(held) == 1:
                self._entered[key] = next(iter(held))
        elif held is not None and held == room:
            del self._entered[key]

    def _rooms_entered(self, namespace: str, sid: str) -> list[Any]:
        held = self._entered.get((namespace, sid))
        return [] if held is None else list(held) if isinstance(held, set) else [held]

    def _members(self, namespace: str, room: Any) -> Mapping[str, str]:
        """sid -> eio_sid of this node's connections in ``room`` (a room, a
        connection's sid, or None for all of the namespace)."""
        rooms = self.rooms.get(namespace)
        if rooms is None:
            return {}
        members = rooms.get(room)
        if members is not None:
            return members  # type: ignore[no-any-return]
        eio_sid = rooms.get(None, {}).get(room)
        return {} if eio_sid is None else {room: eio_sid}

    def get_participants(self, namespace: str, room: Any) -> Iterator[tuple[str, str]]:
        """The library's, with the sid rooms it no longer keeps; a snapshot, so
        the caller may enter and leave rooms as it goes."""
        if isinstance(room, str) or room is None:
            yield from list(self._members(namespace, room).items())
            return
        participants: dict[str, str] = {}
        for each in room:
            participants.update(self._members(namespace, each))
        yield from participants.items()

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        """The rooms ``sid`` is in, its own first (the library looked through all)."""
        if sid not in self.rooms.get(namespace, {}).get(None, {}):
            return []
        return [sid, *self._rooms_entered(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Leave the connection's own rooms. python-socketio looked through a copy
        of every room of the namespace, one per connection (its sid room): a
        disconnect cost O(connections), 10,000 leaving at once about a second of
        blocked event loop, and n leaving O(n^2)."""
        if namespace not in self.rooms:
            return
        for room in [*self._rooms_entered(namespace, sid), None]:
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
                   hop: str = "local", **kwargs: Any) -> None:
        """Deliver to this node's connections in the room (``hop``: "redis" for
        an event another node stored, for the delivery-lag metric)."""
        target = to or room
        if (self.metrics is not None and namespace == self.counted and isinstance(target, str)
                and not kwargs.get("ignore_queue")):
            members = self._members(namespace, target)
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
        with tracing.child("deliver"):
            await self._deliver(event, data, namespace, target, skip_sid)
        if event == "message" and self.metrics is not None and namespace == self.counted \
                and isinstance(data, dict) and isinstance(data.get("ts"), int):
            lag = time.time() - data["ts"] / 1000  # (another node's clock, for hop="redis")
            self.metrics.delivery_lag.labels(hop).observe(max(0.0, lag))
        if event in self.observers and namespace == self.counted:
            await self.observers[event](data)

    async def end_room(self, namespace: str, room: str) -> None:
        """End every connection of this node in ``room`` (RedisFanout tells the
        other nodes too)."""
        for sid, _ in list(self.get_participants(namespace, room)):
            await self.server.disconnect(sid, namespace=namespace)

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
        droppable = event in self.droppable and namespace == self.counted
        if isinstance(encoded, list):  # with binary attachments: never dropped in part
            for part in encoded:
                await self.server.broadcast(recipients, part)
        else:
            await self.server.broadcast(recipients, encoded, droppable)


class LocalFanout(CountingManager):
    """This process alone: nothing to wait for, lose, report or flush."""

    on_catch_up: CatchUp | None = None

    async def wait_subscribed(self, timeout: float) -> None:
        return None

    def status(self) -> str:
        return "ok"

    def gauges(self) -> dict[str, Gauge]:
        return {}

    async def close(self) -> None:
        return None


def client_manager(settings: Settings, metrics: Metrics, node: str, *,
                   counted: str) -> LocalFanout | RedisFanout:
    """The fan-out the settings ask for, counting room events of namespace ``counted``."""
    manager: LocalFanout | RedisFanout
    if settings.redis:
        from .redis import RedisFanout  # (its driver only when it is used)
        manager = RedisFanout(settings.redis, channel=f"{settings.redis_prefix}:fanout",
                              name=f"{settings.redis_prefix}:{node}:fanout",
                              max_queue_bytes=settings.max_fanout_queue_bytes)
    else:
        manager = LocalFanout()
    manager.metrics = metrics
    manager.counted = counted
    return manager


_conforms: tuple[type[Fanout], ...] = (LocalFanout,)  # RedisFanout: checked in its module
