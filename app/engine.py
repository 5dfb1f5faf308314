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
  task's next sweep, and cancel its ping task (which otherwise lives on for
  up to a ping interval after every disconnect: 2,000 tasks after a churn).
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
* **A silent peer is dropped when its ping timeout passes**: each ping
  schedules its own check (python-engineio's sweep visits each session once
  per ping timeout, so a silent polling peer could linger up to twice as long).
* **Shutdown with silent polling clients.** ``eio.disconnect()`` waits for
  each session's queue to drain, which never happens for a polling client
  that stopped polling, so shutdown hung. :meth:`close_all_sessions` closes
  every session without waiting; a waiting poll is answered with CLOSE.
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
  connections. :class:`RoomcastEngine` sends the exact value.
* **Bounded outgoing backlog.** python-engineio queues without limit for a
  client that stops reading. Each session's queue is metered
  (:class:`MeteredQueue`); a broadcast that finds it past
  ``max_backlog_packets`` or ``max_backlog_bytes`` cuts that client off
  (reason ``slow_consumer``, logged and counted) and drops the packet, so
  memory stays bounded and nobody else waits.
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

This module reaches below the public API (``_handle_event``,
``_send_packet``, ``_send_eio_packet``, ``_handle_eio_disconnect``, Engine.IO
sockets and their queues); nothing else in Roomcast does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import aiohttp.web
import engineio
import socketio
from engineio.async_drivers import aiohttp as aiohttp_driver
from engineio import packet as eio_packet
from engineio.payload import Payload
from socketio import packet

from .errors import ChatError, ErrorCode

log = logging.getLogger(__name__)

MAX_PACKETS_PER_PAYLOAD = 100_000
Payload.max_decode_packets = max(Payload.max_decode_packets, MAX_PACKETS_PER_PAYLOAD)

SLOW_CONSUMER = "slow_consumer"  # disconnect reason

RESERVED_EVENTS = frozenset({
    "connect", "connect_error", "disconnect", "disconnecting",
    "newListener", "removeListener",
})


class MeteredQueue(asyncio.Queue[Any]):
    """A session's outgoing queue that knows how many bytes it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def _put(self, item: Any) -> None:
        self.bytes += _size(item)
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        self.bytes -= _size(item)
        return item


def _size(pkt: Any) -> int:
    data = getattr(pkt, "data", None)
    return len(data) if isinstance(data, (bytes, str)) else 16


class RoomcastWebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """Remembers the upgrade request on its session (to cut a slow consumer),
    and logs why an incoming message was refused."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        session = getattr(self.handler, "__self__", None)
        if session is not None:
            session.transport_request = environ["aiohttp.request"]
        return await super().__call__(environ)

    async def wait(self) -> Any:
        msg = await self._sock.receive()
        if msg.type == aiohttp.WSMsgType.ERROR:
            log.warning("closing a WebSocket: %s", msg.data)  # e.g. message too big
        if not isinstance(msg.data, (bytes, str)):
            raise OSError()
        if isinstance(msg.data, str) and not (msg.data and msg.data[0] in "0123456"):
            # not an Engine.IO packet: python-engineio would raise out of its
            # handler (a traceback, and a session left open until the heartbeat)
            log.warning("closing a WebSocket: invalid Engine.IO packet %r", msg.data[:20])
            transport = self.environ["aiohttp.request"].transport
            if transport is not None:
                transport.abort()  # no closing handshake with a peer that speaks garbage
            raise OSError()
        return msg.data


class _ExactBody:
    """``wsgi.input`` whose ``read(n)`` returns all ``n`` bytes. python-engineio
    reads a POST with one ``read(content_length)``, and aiohttp's stream returns
    only what has arrived so far: a body over ~64 KB was cut short."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await (self._stream.readexactly(n) if n >= 0 else self._stream.read())
        return data


def _strict_post(sid: str, handle_post_request: Any) -> Any:
    """Read the whole POST body; and a body that is not Engine.IO framing closes
    the session (python-engineio logged a traceback and kept it): raising
    EngineIOError makes it answer 400 and disconnect."""
    async def checked(environ: dict[str, Any]) -> Any:
        environ["wsgi.input"] = _ExactBody(environ["wsgi.input"])
        try:
            return await handle_post_request(environ)
        except engineio.exceptions.EngineIOError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
            log.warning("closing eio_sid=%s: invalid Engine.IO payload (%s)", sid, exc)
            raise engineio.exceptions.EngineIOError(str(exc)) from exc
    return checked


class RoomcastEngine(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with metered queues, our WebSocket driver and the
    exact ping interval in the handshake."""

    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async, websocket=RoomcastWebSocket)  # not the module's
        self._polling: set[str] = set()  # sessions with a long-poll GET waiting

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__name__", "") == "_send_ping":
            session = target.__self__
            task = super().start_background_task(self._ping_and_watch, session, target)
            session.ping_task = task  # cancelled when the session ends
            return task
        return super().start_background_task(target, *args, **kwargs)

    async def _ping_and_watch(self, session: Any, send_ping: Any) -> None:
        """Send the ping; then, if no pong has come when the ping timeout is up,
        close the session then (python-engineio's sweep could take up to
        another ping timeout to notice a silent polling peer)."""
        await send_ping()
        sent = session.last_ping
        if not sent:
            return
        await asyncio.sleep(self.ping_timeout + 0.05)
        if session.last_ping == sent and not (session.closing or session.closed):
            await session.check_ping_timeout()  # closes it, with reason "ping timeout"

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
            return await super().handle_request(*args, **kwargs)
        finally:
            self._polling.discard(sid)

    def _upgrades(self, sid: str, transport: str) -> Any:
        # Called while the OPEN packet is being built, with the new session in
        # self.sockets and nothing queued yet: meter its queue, and correct
        # that packet as it is queued.
        socket = self.sockets[sid]
        socket.queue = MeteredQueue()
        socket.handle_post_request = _strict_post(sid, socket.handle_post_request)
        send = socket.send

        async def send_open(pkt: eio_packet.Packet) -> None:
            if pkt.packet_type == eio_packet.OPEN and isinstance(pkt.data, dict):
                pkt.data["pingInterval"] = round(self.ping_interval * 1000)
            del socket.send  # back to the class's method
            await send(pkt)

        socket.send = send_open
        return super()._upgrades(sid, transport)


class RoomcastServer(socketio.AsyncServer):  # type: ignore[misc]
    manager_initialized: bool

    def __init__(self, *args: Any, connect_timeout: float = 45.0,
                 max_backlog_packets: int = 1000, max_backlog_bytes: int = 4_000_000,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.max_backlog_packets = max_backlog_packets
        self.max_backlog_bytes = max_backlog_bytes
        self._connect_deadlines: dict[str, asyncio.TimerHandle] = {}

    def _engineio_server_class(self) -> type:
        return RoomcastEngine

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        self._connect_deadlines[eio_sid] = asyncio.get_running_loop().call_later(
            self.connect_timeout, self._connect_deadline, eio_sid)

    def _connect_deadline(self, eio_sid: str) -> None:
        self._connect_deadlines.pop(eio_sid, None)
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
        """Close every Engine.IO session (clients will reconnect); return how many."""
        sockets = list(self.eio.sockets.items())
        for eio_sid, socket in sockets:
            if socket.queue.qsize() > 2:  # a writer stuck on a client that stopped reading
                self._abort_transport(eio_sid, socket)
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
        return len(sockets)

    def _abort_transport(self, eio_sid: str, socket: Any) -> None:
        request = getattr(socket, "transport_request", None) or \
            self.environ.get(eio_sid, {}).get("aiohttp.request")
        transport = getattr(request, "transport", None)
        if transport is not None:
            transport.abort()

    def backlog(self, eio_sid: str) -> int:
        """Packets waiting to be written to a session (0 if it is gone)."""
        socket = self.eio.sockets.get(eio_sid)
        return socket.queue.qsize() if socket is not None else 0

    async def _send_eio_packet(self, eio_sid: str, pkt: eio_packet.Packet) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None:
            return
        queue = socket.queue
        if (queue.qsize() >= self.max_backlog_packets
                or getattr(queue, "bytes", 0) >= self.max_backlog_bytes):
            await self._cut_slow_consumer(eio_sid, socket)
            return
        if pkt.binary and not socket.upgraded:  # polling encodes it as base64: a copy
            pkt = eio_packet.Packet(pkt.packet_type, pkt.data)
        await super()._send_eio_packet(eio_sid, pkt)

    async def _cut_slow_consumer(self, eio_sid: str, socket: Any) -> None:
        if socket.closing or socket.closed:
            return
        log.warning("disconnecting eio_sid=%s: slow consumer (%d packets, %d bytes waiting)",
                    eio_sid, socket.queue.qsize(), getattr(socket.queue, "bytes", 0))
        self._abort_transport(eio_sid, socket)  # a blocked write ends now
        await socket.close(wait=False, reason=SLOW_CONSUMER)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        deadline = self._connect_deadlines.pop(eio_sid, None)
        if deadline is not None:
            deadline.cancel()
        await super()._handle_eio_disconnect(eio_sid, reason)
        # Forget the session now rather than at the service task's next sweep,
        # and end a waiting poll (or WebSocket writer) at once.
        socket = self.eio.sockets.pop(eio_sid, None)
        if socket is not None:
            socket.queue.put_nowait(None)
            ping = getattr(socket, "ping_task", None)
            if ping is not None:
                ping.cancel()  # else it sleeps out the ping interval (25 s) per session

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
