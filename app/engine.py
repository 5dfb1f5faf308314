"""Where python-socketio falls short of our protocol, fixed in one place.

:class:`RoomcastServer` is python-socketio's ``AsyncServer`` with these
changes, each covered by ``tests/test_engine.py`` so that a library upgrade
that changes the behaviour underneath fails loudly:

* **Reserved event names.** The stock server routes a client's EVENT packet
  named ``connect`` or ``disconnect`` to the namespace's ``on_connect`` /
  ``on_disconnect``, so any client could fake its own disconnect (dropping
  its presence while still connected) or re-run the connect handler. Socket.IO
  reserves these names; we refuse them with a ``bad_request`` ack.
* **Bursts over long-polling.** python-engineio refuses a polling payload of
  more than 16 packets ("Too many packets in payload") and drops the
  connection, so a polling client that fires a burst of sends loses them
  all. The body is already bounded in bytes by ``max_http_buffer_size``, so
  we lift the count bound to :data:`MAX_PACKETS_PER_PAYLOAD`. (It is a class
  attribute of ``engineio.payload.Payload``: the setting is process-wide.)
* **A client's close releases its pending poll.** When a long-polling
  client sends CLOSE, python-engineio marks the session closed but leaves the
  client's outstanding GET waiting for its queue until ping interval + ping
  timeout pass (45 s by default), holding the request, and the client that
  waits for it, that long. We wake it as soon as the session is gone, and
  drop the session from the server's table then rather than at the service
  task's next sweep, and stop its heartbeat timers.
* **Binary broadcasts to mixed transports.** A room broadcast encodes one
  Engine.IO packet and queues that same object for every member. A packet
  caches its first encoding: raw bytes when a WebSocket member sends it
  first, base64 text when a polling member does. With msgpack the next member
  on the other transport then got the wrong form: the polling response
  failed with a TypeError (and the member was disconnected), or a WebSocket
  member was sent base64 as a text frame. Binary packets for members not
  (yet) upgraded to WebSocket now get their own copy.
* **The client manager starts at boot** (:meth:`start_manager`), not at
  the first connection, so a node subscribes to Redis before it says healthy.
* **A second concurrent poll** on one session is refused with 400 and the
  session closed, as the Engine.IO spec requires (python-engineio served both
  and split the packets between them).
* **Shutdown with silent polling clients.** ``eio.disconnect()`` waits for
  each session's queue to drain, which never happens for a polling client
  that stopped polling, so shutdown hung. :meth:`close_all_sessions` closes
  every session without waiting, and without the Engine.IO CLOSE that tells
  python-socketio's clients not to reconnect: a WebSocket is closed with 1001
  (going away), a waiting poll is answered 503.
* **Sessions that never join a namespace** are closed after
  ``connect_timeout`` seconds (Socket.IO's default is 45 s; python-socketio
  has no such timeout), so idle half-open sessions cannot pile up.
* **Invalid Socket.IO framing closes the connection** (the Socket.IO spec's
  rule). python-socketio logged the decoding error with a traceback and kept
  the connection. A well-formed event with a bad payload still gets an error
  ack from the namespace.
* **The true ping interval in the handshake.** python-engineio advertises
  ``int(ping_interval) * 1000`` ms, so 2.5 s is announced as 2000 ms and the
  JavaScript client, expecting pings sooner than they come, drops healthy
  connections. Our sessions send the exact value.
* **Bounded outgoing backlog.** python-engineio queues without limit for a
  client that stops reading. A long-polling session past
  ``max_backlog_packets`` or ``max_backlog_bytes`` queued, or a WebSocket
  one past ``max_backlog_bytes`` unsent, is cut off (reason
  ``slow_consumer``, logged and counted) and the packet dropped, so memory
  stays bounded and nobody else waits.
* **Broadcasts encode once and spawn nothing** (:meth:`broadcast`):
  python-socketio started a task per recipient; we write one pre-built frame
  to every WebSocket member (:mod:`app.transport`).
* **Oversized WebSocket messages are logged** with the reason before the
  connection closes (python-engineio closed it silently), and **a frame that
  is not an Engine.IO packet closes the connection cleanly** (python-engineio
  raised out of its handler, leaving the session open until the heartbeat);
  over long-polling, a POST body that is not Engine.IO framing gets 400 and
  closes the session (python-engineio logged a traceback and kept it).
* **Long-polling POST bodies are read whole.** python-engineio read them with
  one ``read(content_length)``, which on aiohttp returns only what has arrived:
  a POST over about 64 KB (a burst of sends, a long text) was cut short and
  its packets lost.

* **Malformed EVENT packets.** An EVENT whose data is empty or whose first
  element is not a string raised inside the library (logged as an error with
  a traceback, no ack). We answer ``bad_request`` when an ack was asked for
  and drop it otherwise.
* **The peer's address.** The aiohttp driver put ``REMOTE_ADDR = 127.0.0.1``
  in every session's environ; ours is the connection's peer.

Session-level changes (direct WebSocket writes, no reader task, heartbeat
timers, the metered queue, POST bodies) live in :mod:`app.transport`; the
WebSocket connection itself, taken over after the handshake, in
:mod:`app.websocket`; the handshake's way past aiohttp in :mod:`app.front`.

This module and :mod:`app.transport` reach below the libraries' public API
(``_handle_event``, ``_send_packet``, ``_send_eio_packet``,
``_handle_eio_disconnect``, ``_upgrades``, Engine.IO sockets and their
queues), :mod:`app.fanout` below python-socketio's manager (``basic_*``), and
:mod:`app.websocket` and :mod:`app.front` below aiohttp's: each name through
:mod:`app.compat`, which checks it at import.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any


import aiohttp.web
from engineio import packet as eio_packet
from socketio import packet

from . import compat
from .errors import ChatError, ErrorCode
from .front import FrontRequest
from .transport import SLOW_CONSUMER, HeldPackets, Outbox, RoomcastSocket, ws_frame
from .websocket import GOING_AWAY, OpenConnections

log = logging.getLogger(__name__)

MAX_PACKETS_PER_PAYLOAD = 100_000
compat.lift_polling_packet_limit(MAX_PACKETS_PER_PAYLOAD)

RESERVED_EVENTS = frozenset({
    "connect", "connect_error", "disconnect", "disconnecting",
    "newListener", "removeListener",
})


class RoomcastEngine(compat.EngineServer):  # type: ignore[misc]
    """python-engineio's server with our sessions (:mod:`app.transport`)."""

    _async: dict[str, Any]
    sequence_number: int
    max_backlog_bytes = 4_000_000  # set by RoomcastServer
    max_poll_packets = 16  # set by RoomcastServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        compat.set_translate_request(self, translate_request)
        self._polling: set[str] = set()  # sessions with a long-poll GET waiting
        self.outbox = Outbox()
        self.going_away = False  # shutting down: sessions end so that clients reconnect
        self.connections = OpenConnections()  # WebSocket connections taken over
        self._entropy, self._entropy_at = b"", 0  # see generate_id

    async def cut_slow_consumer(self, socket: RoomcastSocket) -> None:
        """Disconnect a session whose peer has fallen too far behind (reason
        ``slow_consumer``): a blocked write ends now, and nobody waits for it."""
        if socket.closing or socket.closed:
            return
        log.warning("disconnecting eio_sid=%s: slow consumer (%d packets, %d bytes waiting)",
                    socket.sid, socket.queue.qsize(), socket.backlog_bytes())
        socket.abort()
        await socket.close(wait=False, reason=SLOW_CONSUMER)

    async def disconnect(self, sid: str | None = None) -> None:
        """Close a session without waiting for its queue to drain: python-engineio
        waited, forever for a polling client that stopped polling (it hung the
        request that rejected an oversized POST)."""
        sockets = [self.sockets[sid]] if sid in self.sockets else [] if sid is not None \
            else list(self.sockets.values())
        for socket in sockets:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)

    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        """Refuse a second long-poll GET on a session that already has one waiting
        (the Engine.IO spec: the server closes the session)."""
        request = args[0]
        sid = request.query.get("sid")
        if request.method == "POST" and (request.content_length or 0) > self.max_http_buffer_size:
            log.warning("closing eio_sid=%s: a POST of %d bytes, over the %d-byte limit", sid,
                        request.content_length, self.max_http_buffer_size)
        if (request.method != "GET" or request.query.get("transport") != "polling"
                or not sid or "upgrade" in request.headers.get("Connection", "").lower()):
            return await super().handle_request(*args, **kwargs)
        if sid in self._polling:
            log.warning("closing eio_sid=%s: a second concurrent poll", sid)
            socket = self.sockets.get(sid)
            if socket is not None:
                await socket.close(wait=False, reason=self.reason.TRANSPORT_ERROR)
            return aiohttp.web.Response(status=400, text="concurrent poll")
        self._polling.add(sid)
        try:
            response = await super().handle_request(*args, **kwargs)
        finally:
            self._polling.discard(sid)
        if self.going_away and sid not in self.sockets:
            return aiohttp.web.Response(status=503, text="server going away; reconnect")
        return response

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        """A new session's queue (see HeldPackets; RoomcastSocket.adopt replaces
        it for long-polling)."""
        return HeldPackets()

    def generate_id(self) -> str:
        """python-engineio's session id (12 random bytes and a 3-byte counter,
        base64url), with the random bytes drawn from a pool refilled from
        os.urandom: one system call per 256 ids rather than one per id (two ids
        per connection), as Node's engine.io does (base64id)."""
        at = self._entropy_at
        if at + 12 > len(self._entropy):
            self._entropy, at = os.urandom(12 * 256), 0
        self._entropy_at = at + 12
        raw = self._entropy[at:at + 12] + self.sequence_number.to_bytes(3, "big")
        self.sequence_number = (self.sequence_number + 1) & 0xFFFFFF
        return base64.urlsafe_b64encode(raw).decode()

    def _upgrades(self, sid: str, transport: str) -> Any:
        # Called while the OPEN packet is being built, with the new session in
        # self.sockets and nothing queued yet: make it one of ours.
        RoomcastSocket.adopt(self.sockets[sid], self.max_backlog_bytes, transport)
        return super()._upgrades(sid, transport)


def translate_request(request: aiohttp.web.Request | FrontRequest) -> dict[str, Any]:
    """The aiohttp driver's environ, with the peer's true address (the driver
    says 127.0.0.1 for every client); a handshake read by the front door
    (:mod:`app.front`) builds its own."""
    if isinstance(request, FrontRequest):
        return request.environ()
    environ = compat.aiohttp_environ(request)
    environ["REMOTE_ADDR"] = request.remote or ""
    return environ


class RoomcastServer(compat.SocketIOServer):  # type: ignore[misc]
    manager_initialized: bool

    def __init__(self, *args: Any, connect_timeout: float = 45.0,
                 max_backlog_packets: int = 1000, max_backlog_bytes: int = 4_000_000,
                 max_poll_packets: int = 16, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.max_backlog_packets = max_backlog_packets
        self.max_backlog_bytes = max_backlog_bytes
        self.eio.max_backlog_bytes = max_backlog_bytes
        self.eio.max_poll_packets = max_poll_packets
        # sessions not yet in a namespace -> when they must be; in connect order,
        # so also in deadline order: one timer serves them all (see _deadlines_due)
        self._unjoined: OrderedDict[str, float] = OrderedDict()
        self._deadline_timer: asyncio.TimerHandle | None = None

    def _engineio_server_class(self) -> type:
        return RoomcastEngine

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and socket.request is None:
            socket.request = environ.get("aiohttp.request")  # to cut it off if need be
        await super()._handle_eio_connect(eio_sid, environ)
        loop = asyncio.get_running_loop()
        self._unjoined[eio_sid] = deadline = loop.time() + self.connect_timeout
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._deadlines_due)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        if self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is not None:
            self._unjoined.pop(eio_sid, None)  # joined: no deadline now

    def _deadlines_due(self) -> None:
        """Close the sessions whose connect deadline has passed, then wait for the
        next one (a timer per session cost a timer set and cancelled per connection)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._deadline_timer = None
        while self._unjoined:
            eio_sid, deadline = next(iter(self._unjoined.items()))
            if deadline > now:
                self._deadline_timer = loop.call_at(deadline, self._deadlines_due)
                return
            del self._unjoined[eio_sid]
            self._connect_deadline(eio_sid)

    def _connect_deadline(self, eio_sid: str) -> None:
        joined = any(self.manager.sid_from_eio_sid(eio_sid, ns) is not None
                     for ns in list(self.manager.get_namespaces()))
        if not joined and eio_sid in self.eio.sockets:
            log.info("closing eio_sid=%s: no namespace joined within %g s",
                     eio_sid, self.connect_timeout)
            asyncio.ensure_future(self._close_session(eio_sid, self.reason.SERVER_DISCONNECT))

    async def _close_session(self, eio_sid: str, reason: str) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            await socket.close(wait=False, reason=reason)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except Exception as exc:  # undecodable or out-of-protocol packet
            log.warning("closing eio_sid=%s: invalid Socket.IO packet (%s: %s)",
                        eio_sid, type(exc).__name__, exc)
            await self._close_session(eio_sid, self.reason.TRANSPORT_ERROR)

    def start_manager(self) -> None:
        """Start the client manager now rather than at the first connection, so
        that a Redis fan-out node subscribes (and can report health) at boot."""
        if not self.manager_initialized:
            self.manager_initialized = True
            self.manager.initialize()

    async def close_all_sessions(self) -> int:
        """Close every Engine.IO session as a server going away does, so that
        clients reconnect by themselves; return how many.

        No Engine.IO CLOSE packet is sent: python-socketio's clients (AsyncClient,
        Client, SimpleClient) take one as a deliberate goodbye and stay
        disconnected. A WebSocket gets the closing handshake with 1001 (going
        away, RFC 6455 section 7.4.1), as Node's engine.io closes it; a waiting
        long-poll GET is answered 503, which every client takes as a transport
        error."""
        self.eio.going_away = True
        sockets = list(self.eio.sockets.values())
        for socket in sockets:
            # a peer that stopped reading would hold its connection open: drop it
            if socket.queue.qsize() > 2 or (socket.direct and socket.backlog_bytes()):
                socket.abort()
            await socket.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT,
                               ws_code=GOING_AWAY)
        return len(sockets)

    def backlog(self, eio_sid: str) -> int:
        """Packets queued for a long-polling session (0 on WebSocket or if gone)."""
        socket = self.eio.sockets.get(eio_sid)
        return socket.queue.qsize() if socket is not None else 0

    def lagging(self, eio_sid: str) -> bool:
        """Past half its backlog bound: the first to lose typing signals."""
        socket = self.eio.sockets.get(eio_sid)
        return socket is not None and (
            socket.queue.qsize() > self.max_backlog_packets // 2
            or socket.backlog_bytes() > self.max_backlog_bytes // 2)

    async def broadcast(self, eio_sids: Iterable[str], payload: str | bytes) -> None:
        """Send one encoded Socket.IO packet to many sessions: on WebSocket the
        same frame bytes to each, written now; on long-polling through the queue."""
        pkt = eio_packet.Packet(eio_packet.MESSAGE, payload)
        frame = b""
        sockets = self.eio.sockets
        behind = []
        for eio_sid in eio_sids:
            socket = sockets.get(eio_sid)
            if socket is None:
                continue
            if socket.transport is not None:  # socket.direct, without the call
                frame = frame or ws_frame(pkt)
                if not socket.write(frame):
                    behind.append(socket)
            else:
                await self._send_eio_packet(eio_sid, pkt)
        for socket in behind:
            await self.eio.cut_slow_consumer(socket)

    async def _send_eio_packet(self, eio_sid: str, pkt: eio_packet.Packet) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None:
            return
        queue = socket.queue
        if (queue.qsize() >= self.max_backlog_packets
                or getattr(queue, "bytes", 0) >= self.max_backlog_bytes):
            await self.eio.cut_slow_consumer(socket)
            return
        if pkt.binary and not socket.upgraded:  # polling encodes it as base64: a copy
            pkt = eio_packet.Packet(pkt.packet_type, pkt.data)
        await super()._send_eio_packet(eio_sid, pkt)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        self._unjoined.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)
        # Forget the session now rather than at the service task's next sweep,
        # and end a waiting poll at once.
        socket = self.eio.sockets.pop(eio_sid, None)
        if socket is not None:
            socket.queue.put_nowait(None)
            socket.stop_timers()

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None,
                            data: Any) -> None:
        event = data[0] if isinstance(data, list) and data else None
        if isinstance(event, str) and event not in RESERVED_EVENTS:
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        log.debug("refused event %r from sid=%s", event, sid)
        if id is None or not self.manager.is_connected(sid, namespace):
            return
        reason = (f"{event!r} is a reserved event name" if isinstance(event, str)
                  else "an event needs a name")
        error = ChatError(ErrorCode.BAD_REQUEST, reason)
        await self._send_packet(eio_sid, self.packet_class(
            packet.ACK, namespace=namespace, id=id,
            data=[{"ok": False, "error": error.as_dict()}]))
