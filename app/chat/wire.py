"""What the chat services need of whatever carries events to connections.

The services (:mod:`app.chat.services`) know connections by their ``Sid``
and rooms by name, never a socket: :class:`Wire` is all they ask of the
transport, and :class:`~app.chat.namespace.ChatNamespace` (python-socketio's
rooms and emits, with fan-out to the other nodes beneath) is the one that
provides it today. Tests of the services give them a recording Wire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..core.models import Sid


class Wire(Protocol):
    async def emit(self, event: str, data: Any = None, *, room: str | None = None,
                   skip_sid: Sid | Sequence[Sid] | None = None,
                   ignore_queue: bool = False) -> None:
        """Send ``event`` to every connection in ``room`` (on every node), less
        ``skip_sid``; ``ignore_queue``: to this node's connections only."""

    async def enter_room(self, sid: Sid, room: str) -> None:
        """From now on ``sid`` receives what is emitted to ``room``."""

    async def leave_room(self, sid: Sid, room: str) -> None:
        """From now on ``sid`` no longer receives what is emitted to ``room``."""

    async def disconnect(self, sid: Sid) -> None:
        """End the connection ``sid`` (its disconnect follows)."""

    async def end_room(self, room: str) -> None:
        """End every connection in ``room``, on every node (their disconnects follow)."""

    def transport(self, sid: Sid) -> str:
        """``websocket`` or ``polling`` (``gone`` once the connection is)."""
