"""Presence: which names are in which rooms, and when a name arrives or leaves.

A name is present in a room while any of its connections has joined it.
``join`` and ``leave`` say whether the call changed that, so the caller
emits exactly one ``presence`` event per name. Implementations:

=============  ===========================  ===========================================
backend        module                       for
=============  ===========================  ===========================================
memory         :mod:`app.presence.memory`   one node (the default)
Redis          :mod:`app.presence.redis`    several nodes: presence is cluster-wide
=============  ===========================  ===========================================

Backend failures raise ``ChatError(UNAVAILABLE)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from ..core.models import RoomName, Sid

OnLeft = Callable[[RoomName, str], Awaitable[None]]
"""Called with (room, name) when housekeeping finds that a name has left."""
OnJoined = Callable[[RoomName, str], Awaitable[None]]
"""Called with (room, name) when housekeeping records a join Redis missed."""
LocalMembers = Callable[[], Collection[tuple[RoomName, Sid, str]]]
"""This node's truth: every (room, sid, name) its connections have joined."""


class Presence(Protocol):
    async def join(self, room: RoomName, name: str, sid: Sid) -> bool:
        """Record that connection ``sid`` of ``name`` is in ``room``;
        True if ``name`` was not present there before."""

    async def leave(self, room: RoomName, name: str, sid: Sid) -> bool:
        """Forget that connection; True if ``name`` is no longer present."""

    async def members(self, room: RoomName) -> list[str]:
        """The names present in ``room``, sorted (every one: for small rooms)."""

    async def count(self, room: RoomName) -> int:
        """How many names are present in ``room``."""

    async def page(self, room: RoomName, cursor: str | None,
                   limit: int) -> tuple[list[str], str | None]:
        """About ``limit`` names present in ``room``, from where ``cursor`` (an
        earlier page's; None: the start) left off, and the cursor of the rest
        (None: no more). Each costs about ``limit``, whatever the room's size.
        A name present all along is listed by some page; one that comes or
        goes meanwhile may or may not be, and a name may be listed twice."""

    async def rooms(self) -> list[tuple[RoomName, int]]:
        """Every room with anyone present, with its member count, by name."""

    async def maintain(self, local: LocalMembers, on_left: OnLeft,
                       on_joined: OnJoined) -> None:
        """Housekeeping for the life of the server (cancelled at shutdown):
        drop entries of dead nodes and repair this node's after an outage
        (announcing names it finds gone, and names whose join it restores)."""

    async def drain(self) -> list[tuple[RoomName, str]]:
        """This node is shutting down: forget all of its connections in one step;
        return the (room, name) pairs whose names are thereby gone everywhere."""

    async def hand_off(self, grace: float) -> None:
        """This node is shutting down, its connections dropping: keep its
        entries ``grace`` seconds more, then let them go as a dead node's (each
        name gone told once, by whichever node removes them), unless the node
        is back by then, whose housekeeping then removes what did not return."""

    async def ping(self) -> None:
        """Return if usable; raise ``ChatError(UNAVAILABLE)`` if not."""

    def status(self) -> str:
        """Housekeeping's health: "ok", or what failed in its last round."""

    async def close(self) -> None:
        """Release the backend."""


class PresenceFactory(Protocol):
    async def __call__(self, redis_url: str, *, prefix: str, node_id: str, ttl: float,
                       max_connections: int = 100, grace: float = 0.0) -> Presence: ...


async def open_presence(redis_url: str, *, prefix: str, node_id: str, ttl: float,
                        max_connections: int = 100, grace: float = 0.0) -> Presence:
    """Redis presence when ``redis_url`` is set, else in-process. ``grace``:
    ``--presence-grace`` (what a node restarted under the same id leaves of
    its previous life's entries for that long)."""
    if redis_url:
        from .redis import RedisPresence
        presence = RedisPresence(redis_url, prefix=prefix, node_id=node_id, ttl=ttl,
                                 max_connections=max_connections, grace=grace)
        await presence.start()
        return presence
    from .memory import MemoryPresence
    return MemoryPresence(interval=ttl / 3)
