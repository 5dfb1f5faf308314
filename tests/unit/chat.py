"""The chat's services with plain calls: no socket and no server.

:class:`Harness` is one node's :class:`~app.chat.services.Chat` on a store
(in memory unless given one) and memory presence, with a Wire that records
what would go out. :class:`LocalPeer` is a connection to it with the calls
of the wire tier's :class:`~tests.conftest.Peer`: its events go through
:func:`app.chat.events.handle`, as a socket's do, so it gets the very acks
a client gets, and everything it sends and receives passes through msgpack,
as on the wire. The chat's semantic tests (``test_chat.py``,
``test_reading.py``, ...) run on it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from app.chat.connections import Connection
from app.chat.events import handle
from app.chat.services import Chat
from app.core.models import Sid
from app.files.local import LocalFiles
from app.metrics import Metrics
from app.presence.memory import MemoryPresence
from app.settings import Settings
from app.store import MessageStore, open_store
from app.store.memory import MemoryStore

from ..conftest import UNLIMITED, PeerCalls
from ..tokens import token

Sent = tuple[str, Any]  # (event, data) as one connection receives it


def over_the_wire(value: Any) -> Any:
    """``value`` as the other side gets it (msgpack: tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(value), raw=False)


class RecordingWire:
    """The transport's rooms, and what each connection would have received."""

    def __init__(self) -> None:
        self.rooms: defaultdict[str, set[Sid]] = defaultdict(set)
        self.received: defaultdict[Sid, list[Sent]] = defaultdict(list)
        self.disconnected: list[Sid] = []
        self.peers: dict[Sid, LocalPeer] = {}
        # as fan-out's (app.fanout.CountingManager): awaited once an event is delivered
        self.observers: dict[str, Callable[[Any], Awaitable[None]]] = {}

    async def emit(self, event: str, data: Any = None, *, room: str | None = None,
                   skip_sid: Sid | Sequence[Sid] | None = None,
                   ignore_queue: bool = False) -> None:
        skipped = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        for sid in sorted(self.rooms.get(room or "", set()) - skipped):
            peer = self.peers.get(sid)
            if peer is None:
                self.received[sid].append((event, data))
            else:
                peer.events[event].put_nowait(over_the_wire(data))
        if event in self.observers:
            await self.observers[event](data)

    async def enter_room(self, sid: Sid, room: str) -> None:
        self.rooms[room].add(sid)

    async def leave_room(self, sid: Sid, room: str) -> None:
        self.rooms[room].discard(sid)

    async def disconnect(self, sid: Sid) -> None:
        self.disconnected.append(sid)
        peer = self.peers.get(sid)
        if peer is not None:
            asyncio.get_running_loop().create_task(peer.disconnect("server disconnect"))

    async def end_room(self, room: str) -> None:
        for sid in sorted(self.rooms.get(room, set())):
            await self.disconnect(sid)

    def transport(self, sid: Sid) -> str:
        return "websocket" if sid in self.peers or sid in self.received else "gone"

    def take(self, conn: Connection, event: str | None = None) -> list[Any]:
        """What ``conn`` received (of ``event``) since last asked."""
        got, self.received[conn.sid] = self.received[conn.sid], []
        return [data for name, data in got if event is None or name == event]


class Harness:
    """A node's chat services on a store (memory unless given) and memory presence."""

    def __init__(self, store: MessageStore | None = None, **settings: Any) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="roomcast-harness-"))  # files, uploads
        self.settings = Settings(**{**UNLIMITED, "upload_spool": str(self.folder / "uploads"),
                                    **settings})
        self.store = store if store is not None else MemoryStore()
        self.presence = MemoryPresence()
        self.files = LocalFiles(self.folder / "files")
        self.wire = RecordingWire()
        self.chat = Chat(self.settings, self.store, self.presence, self.files, Metrics(),
                         self.wire)
        self.wire.observers["change"] = self.chat.governance.observed
        self._sids = 0
        self.closed = False

    @classmethod
    async def open(cls, url: str, **settings: Any) -> Harness:
        """A harness on the store at ``url``; :meth:`close` it."""
        return cls(await open_store(url), **settings)

    async def close(self) -> None:
        """Disconnect every peer, stop the services and close the store (once)."""
        if self.closed:
            return
        self.closed = True
        for peer in list(self.wire.peers.values()):
            await peer.disconnect()
        await self.chat.stop()
        await self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _sid(self) -> Sid:
        self._sids += 1
        return Sid(f"sid{self._sids}")

    async def connect(self, name: str, **auth: Any) -> Connection:
        return await self.chat.connections.open(self._sid(), auth or {"name": name},
                                                "127.0.0.1")

    async def peer(self, name: str, *, auth: dict[str, Any] | None = None) -> LocalPeer:
        """A connected :class:`LocalPeer`; a refused one raises ChatError."""
        sid = self._sid()
        await self.chat.connections.open(sid, over_the_wire(auth or {"name": name}),
                                         "127.0.0.1")
        self.wire.peers[sid] = LocalPeer(self, name, sid)
        return self.wire.peers[sid]


class LocalPeer(PeerCalls):
    """A connection to a :class:`Harness`, with the calls of the wire tier's Peer."""

    def __init__(self, node: Harness, name: str, sid: Sid) -> None:
        self.node = node
        self.name = name
        self.sid = sid
        self.connected = True
        self.events = defaultdict(asyncio.Queue)

    async def call(self, event: str, *args: Any) -> Any:
        ack = await handle(self.node.chat, self.sid, event,
                           tuple(over_the_wire(arg) for arg in args))
        return over_the_wire(ack)

    async def disconnect(self, reason: str = "client disconnect") -> None:
        """Close the connection as the transport would: out of every room."""
        if not self.connected:
            return
        self.connected = False
        chat, wire = self.node.chat, self.node.wire
        conn = chat.connections.close(self.sid)
        if conn is not None:
            await chat.disconnected(conn, reason)
        for members in wire.rooms.values():
            members.discard(self.sid)
        del wire.peers[self.sid]


LocalPeerFactory = Callable[..., Awaitable[LocalPeer]]


async def token_peer(peer: LocalPeerFactory, served: Harness, name: str, **claims: Any
                     ) -> LocalPeer:
    """A connection to ``served`` (token mode) with a token for ``name``."""
    return await peer(name, server=served, auth={"token": token(name=name, **claims)})
