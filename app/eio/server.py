"""Roomcast's Engine.IO v4 server: the engine python-socketio runs on.

python-socketio builds its engine in one place (``_engineio_server_class``)
and uses a small surface of it: ``on`` for its connect, message and
disconnect handlers, ``send`` and ``send_packet``, ``transport``,
``handle_request``, ``attach``, ``disconnect``, ``shutdown``, sessions
(``get_session``, ``save_session``, ``session``), ``generate_id`` and a few
helpers. :class:`EngineServer` is that surface, over:

* :class:`~app.eio.session.Session` (pure state: queue, heartbeat, upgrade,
  close), made live here by :class:`LiveSession`: its WebSocket, its
  timers, the packets it has read and not yet handled;
* :mod:`app.eio.polling`, long-polling (its requests read by the front door or aiohttp);
* :mod:`app.ws`, our WebSocket connection.

What it keeps from the measured past (``bench/``): a WebSocket session's
packets are written straight to its transport, a broadcast builds one frame
for every member (:meth:`EngineServer.broadcast`), writes are coalesced per
turn of the loop (:class:`~app.eio.outbox.Outbox`), an idle connection has
no task (the heartbeat is one timer), and a client that falls behind its
backlog bound is cut (``slow_consumer``) so that nobody else waits.

Nothing here imports Socket.IO or the chat: what reaches us is opaque
strings and bytes, handed to the handlers python-socketio registers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
from sys import intern
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from ..ws.connection import OpenConnections, WebSocketConnection
from ..ws.frames import BINARY, GOING_AWAY, NORMAL, TEXT, frame
from ..ws.handshake import HandedOff, HandshakeError, take_over
from . import packets, polling
from .budget import BacklogBudget
from .outbox import Outbox
from .timers import TimerWheel
from .packets import Encoded, PacketError
from .session import (
    CLOSE_REQUESTED, DELIVER, HEARTBEAT, IGNORE, POLLING, PROBED, REPLY, UPGRADED, WEBSOCKET,
    Limits, Session, pong_reply,
)

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow_consumer"  # disconnect reason
PAUSE_BYTES = 1 << 16  # a session this far behind in handling stops reading its peer
DRAIN_TIMEOUT = 5.0  # seconds a closed polling session waits for its last poll
DRAIN_TICK = 0.05  # seconds between two slices of sessions closed by close_all(over)


class Reason:
    """Why a session ended (the values python-socketio and its clients know)."""

    SERVER_DISCONNECT = "server disconnect"
    CLIENT_DISCONNECT = "client disconnect"
    PING_TIMEOUT = "ping timeout"
    TRANSPORT_CLOSE = "transport close"
    TRANSPORT_ERROR = "transport error"


def ws_frame(packet: Encoded) -> bytes:
    """An encoded packet as one unmasked WebSocket frame."""
    if isinstance(packet, bytes):
        return frame(BINARY, packet)
    return frame(TEXT, packet.encode())


# What an environ does not keep. The dict lives as long as the session
# (python-socketio keeps it for the namespace handlers, which read REMOTE_ADDR
# and the forwarding headers, and the Admin UI shows the headers): not what
# only the handshake needed, nor credentials nothing after it reads (a socket
# authenticates in its CONNECT packet), which the Admin UI would show.
_NOT_KEPT = frozenset({
    "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION", "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    "HTTP_UPGRADE", "HTTP_CONNECTION", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE",
    "HTTP_COOKIE", "HTTP_AUTHORIZATION",
})


def environ_of(request: Any) -> dict[str, Any]:
    """A WSGI-style environ for python-socketio's handlers, from an aiohttp
    request or one the front door read (:mod:`app.eio.front`)."""
    # the values most sessions share (path, address, host, a WebSocket's query,
    # a browser's headers) are interned: held once, not once a session
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method, "QUERY_STRING": intern(request.query_string),
        "PATH_INFO": intern(request.path), "REMOTE_ADDR": intern(request.remote or ""),
        "wsgi.url_scheme": "http",  # what this server speaks (a proxy may say otherwise)
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in _NOT_KEPT:
            continue
        environ[intern(key)] = f"{environ[key]},{value}" if key in environ else intern(value)
    return environ


class LiveSession(Session):
    """A session with its I/O: the WebSocket (or the waiting poll), its timer,
    the packets read but not yet handled, the frames not yet written.

    On WebSocket, frames go to the transport at the end of each turn of the
    loop (:class:`~app.eio.outbox.Outbox`) while the kernel takes them; once
    it does not (the peer reads slower than we write) they wait in ``out``,
    where a ping can still go ahead of them and, for a client that catches
    up, the droppable ones can still be dropped, and go on as the peer
    reads (:meth:`ws_writable`). What the kernel holds is bounded by the
    socket's send buffer (``take_over``), so a ping is never far behind."""

    __slots__ = ("engine", "ws", "wire", "poll_waiter", "posting", "timer",
                 "inbox", "inbox_bytes", "pump", "out", "out_bytes", "out_droppable",
                 "blocked", "in_flight", "gone", "ended")

    def __init__(self, engine: EngineServer, sid: str, environ: dict[str, Any],
                 transport: str) -> None:
        super().__init__(sid, environ, transport, engine.limits)
        self.engine = engine
        self.ws: WebSocketConnection | None = None  # the WebSocket (or the one probing)
        self.wire: asyncio.Transport | None = None  # set while writes go direct
        self.poll_waiter: asyncio.Future[str | None] | None = None  # a GET waiting
        self.posting = False  # a POST is being read
        self.timer: int | None = None  # the slot of its next ping, or pong deadline (timers)
        self.inbox: list[Any] | None = None  # messages read, not yet handled
        self.inbox_bytes = 0
        self.pump: asyncio.Future[None] | None = None  # handles the inbox while it has any
        self.out: list[bytes] | None = None  # frames not yet handed to the transport
        self.out_bytes = 0
        self.out_droppable: list[bool] | None = None  # beside ``out``, if it catches up
        self.blocked = False  # the transport holds unsent data: ``out`` waits
        self.in_flight = 0  # frames of the last write the kernel has not taken all of
        self.gone = False  # the transport ended (the session closes once the inbox is done)
        self.ended = False  # the disconnect handler has been called

    # -- writing ------------------------------------------------------------------

    def backlog_bytes(self) -> int:
        """Bytes written but not yet taken by the peer (or queued, on polling)."""
        wire = self.wire
        if wire is not None:
            return int(wire.get_write_buffer_size()) + self.out_bytes
        return self.queued_bytes

    def write(self, data: bytes, droppable: bool = False, *, first: bool = False) -> bool:
        """Write one WebSocket frame, in order (a ping ``first``, ahead of what
        waits), at the end of this turn of the loop; False if the session cannot
        take it (its peer is too far behind: the caller cuts it off). A
        ``droppable`` frame is dropped instead while the session skips."""
        wire = self.wire
        if wire is None or self.closed or wire.is_closing():
            return True  # nothing to cut: it is going anyway
        if droppable and self.skipping:
            return True
        size = len(data)
        buffered = wire.get_write_buffer_size()  # what the kernel has not taken
        if buffered:  # behind: what it is given now counts against the node's budget
            self.engine.budget.note(self, size)
            if self.closed:  # the budget cut it
                return True
        limit = self.limits.max_backlog_bytes
        if self.out_bytes + buffered + size > limit:  # (the hot path only checks)
            answer = self.past_bound(droppable, lambda: self.out_bytes + buffered + size > limit)
            if answer is not None:
                return answer
        out = self.out
        if out is None:
            out = self.out = []
            if self.catches_up:
                self.out_droppable = []
            if not self.blocked:
                self.engine.outbox.add(self)
        if first:
            out.insert(0, data)
        else:
            out.append(data)
        self.out_bytes += size
        self.given += 1
        flags = self.out_droppable
        if flags is not None:
            if first:
                flags.insert(0, droppable)
            else:
                flags.append(droppable)
        return True

    def skip(self) -> None:
        """Over its bound, for a client that catches up: drop the droppable
        frames waiting, and take no more of them until it has drained."""
        super().skip()
        out, flags = self.out, self.out_droppable
        if out and flags is not None:
            kept = [data for data, droppable in zip(out, flags) if not droppable]
            self.written += len(out) - len(kept)
            self.out = kept or None
            self.out_droppable = [False] * len(kept) if kept else None
            self.out_bytes = sum(len(data) for data in kept)
        if not self.blocked and self.wire is not None:  # (else ws_writable will)
            self.engine.outbox.add(self)  # its flush sees when it has drained
        self.engine.skipped(self)

    def flush(self, *, force: bool = False) -> None:
        """Hand the frames waiting to the transport, in one write (one system
        call), unless the kernel still holds data from the last one (then
        :meth:`ws_writable` writes them when it has taken it); ``force``: now,
        whatever it holds (the session is closing)."""
        if self.blocked and not force:
            return
        out = self.out
        wire = self.wire
        self.out = self.out_droppable = None
        self.out_bytes = 0
        if out and wire is not None and not wire.is_closing():
            wire.write(out[0] if len(out) == 1 else b"".join(out))
            left = wire.get_write_buffer_size()
            if left:  # the kernel did not take it all
                self.in_flight += len(out)  # written once it has (ws_writable)
                self.engine.budget.note(self, left)
            else:
                self.written += len(out)
        if self.skipping and self.resume_due(self.backlog_bytes()):
            self.engine.caught_up(self)

    def ws_writable(self, writable: bool) -> None:
        """The transport holds unsent data (``writable`` False) or has handed
        it all to the kernel (True: write what waits)."""
        self.blocked = not writable
        if writable:
            self.written += self.in_flight
            self.in_flight = 0
        if writable and (self.out or self.skipping):
            self.flush()

    def send(self, packet: Encoded, droppable: bool = False) -> bool:
        """Send one packet now (WebSocket) or at the next poll; False if the
        client is too far behind to take it."""
        if self.closed:
            return True
        if self.wire is not None:
            return self.write(ws_frame(packet), droppable)
        if not self.push(packet, droppable):
            return False
        if self.queued:
            self.engine.budget.note(self, packets.size(packet))
            self.wake_poll()
        return True

    def wake_poll(self, answer: str | None = None) -> None:
        """End the waiting GET: with what is queued, or with ``answer``."""
        waiter = self.poll_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def abort(self) -> None:
        """Drop this session's unsent data, and its WebSocket at once. A
        long-polling session's connection is not its own (behind a proxy it is
        shared, kept alive, by other clients' requests): its waiting poll, if
        any, is answered when the session closes."""
        self.out = None
        if self.ws is not None:
            self.ws.abort()
        else:
            self.drop_queue()

    # -- the WebSocket's listener -----------------------------------------------

    def ws_message(self, data: str | bytes) -> None:
        """A whole message from the WebSocket, in order."""
        if self.upgrading is not None:
            self.engine.upgrade_step(self, data)
            return
        if self.closed:
            return
        try:
            packet = packets.decode(data)
        except PacketError as exc:
            log.warning("closing a WebSocket: invalid Engine.IO packet (%s)", exc)
            if self.ws is not None:
                self.ws.abort()  # no closing handshake with a peer that speaks garbage
            return
        self.engine.incoming(self, packet)

    def ws_closed(self) -> None:
        """The connection ended (the peer left, or its closing handshake is done)."""
        self.ws = None
        if self.upgrading is not None:  # a failed upgrade: the session stays on polling
            self.upgrading = None
            return
        self.wire = None
        self.out = None
        self.engine.transport_gone(self)


Handler = Callable[..., Awaitable[Any]]


class EngineServer:
    """The sessions of this node, and the requests that reach them."""

    reason = Reason
    async_mode = "aiohttp"
    upgrades = [WEBSOCKET]

    def __init__(self, *, ping_interval: float = 25.0, ping_timeout: float = 20.0,
                 max_http_buffer_size: int = 1_000_000, cors_allowed_origins: Any = None,
                 cors_credentials: bool = True, max_backlog_packets: int = 1000,
                 max_backlog_bytes: int = 1_000_000, max_poll_packets: int = 16,
                 host_check: Callable[[Any], bool] | None = None, **ignored: Any) -> None:
        # (python-socketio passes its engine options too: async_mode, logger,
        # json, async_handlers; ours need none of them)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_http_buffer_size = max_http_buffer_size
        self.cors_allowed_origins = cors_allowed_origins
        self.cors_credentials = cors_credentials
        self.host_check = host_check  # None: any Host is answered
        self.limits = Limits(
            ping_interval=ping_interval, ping_timeout=ping_timeout,
            max_payload=max_http_buffer_size, max_backlog_packets=max_backlog_packets,
            max_backlog_bytes=max_backlog_bytes, max_poll_packets=max_poll_packets)
        self.sockets: dict[str, LiveSession] = {}
        self._draining: dict[str, LiveSession] = {}  # closed, last packets not yet polled
        self.handlers: dict[str, Handler] = {}
        self.outbox = Outbox()
        self.timers = TimerWheel()  # every session's next ping, or its pong deadline
        self._on_ping_due, self._on_pong_due = self._ping_due, self._pong_due  # (made once)
        self.budget = BacklogBudget(0, self._cut_over_budget)
        self.connections = OpenConnections()  # WebSocket connections taken over
        self.going_away = False  # shutting down: sessions end so that clients reconnect
        self._entropy, self._entropy_at, self._sequence = b"", 0, 0  # see generate_id
        self.skips = 0  # sessions that fell behind their bound and skipped, rather than be cut
        self._tasks: set[asyncio.Future[Any]] = set()  # sessions' own: shutdown waits for them
        self._background: set[asyncio.Future[Any]] = set()  # start_background_task's

    def configure(self, **limits: Any) -> None:
        """Change bounds after construction (python-socketio builds us with its own
        keyword arguments only)."""
        self.limits = Limits(**{**{f: getattr(self.limits, f) for f in Limits.__slots__},
                                **limits})
        self.budget.budget = self.limits.max_node_backlog_bytes

    def _cut_over_budget(self, session: Any) -> None:
        self.cut_now(session)

    # -- python-socketio's surface ------------------------------------------------

    def on(self, event: str, handler: Handler | None = None) -> Any:
        def register(fn: Handler) -> Handler:
            self.handlers[event] = fn
            return fn
        return register(handler) if handler is not None else register

    def attach(self, app: web.Application, engineio_path: str = "engine.io") -> None:
        path = "/" + engineio_path.strip("/") + "/"
        app.router.add_route("*", path, self.handle_request)

    async def send(self, sid: str, data: str | bytes) -> None:
        session = self.sockets.get(sid)
        if session is not None and not session.send(packets.message(data)):
            await self.cut_slow_consumer(session)

    async def send_packet(self, sid: str, pkt: Any) -> None:
        """A packet python-socketio's manager built (an ``engineio.packet.Packet``:
        only its public type and data are read)."""
        if pkt.packet_type == packets.MESSAGE:
            await self.send(sid, pkt.data)
        else:
            log.debug("eio_sid=%s: not sending Engine.IO packet type %s", sid, pkt.packet_type)

    def transport(self, sid: str) -> str:
        return self.sockets[sid].transport

    async def get_session(self, sid: str) -> dict[str, Any]:
        return self.sockets[sid].data

    async def save_session(self, sid: str, data: dict[str, Any]) -> None:
        self.sockets[sid].data = data

    @contextlib.asynccontextmanager
    async def session(self, sid: str) -> AsyncIterator[dict[str, Any]]:
        data = await self.get_session(sid)
        yield data
        await self.save_session(sid, data)

    def start_background_task(self, target: Callable[..., Awaitable[Any]], *args: Any,
                              **kwargs: Any) -> asyncio.Future[Any]:
        """A task held until done, its failure logged (python-socketio's API; its
        owner stops it: the Admin UI's stats loop runs until the Admin UI shuts down)."""
        task = asyncio.ensure_future(target(*args, **kwargs))
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    async def sleep(self, seconds: float = 0) -> None:
        await asyncio.sleep(seconds)

    def create_event(self) -> asyncio.Event:
        return asyncio.Event()

    def generate_id(self) -> str:
        """A session id: 12 random bytes and a 3-byte counter, base64url. The
        random bytes come from a pool refilled from os.urandom, one system call
        per 256 ids, as Node's engine.io does (base64id)."""
        at = self._entropy_at
        if at + 12 > len(self._entropy):
            self._entropy, at = os.urandom(12 * 256), 0
        self._entropy_at = at + 12
        raw = self._entropy[at:at + 12] + self._sequence.to_bytes(3, "big")
        self._sequence = (self._sequence + 1) & 0xFFFFFF
        return base64.urlsafe_b64encode(raw).decode()

    async def disconnect(self, sid: str | None = None) -> None:
        """Close one session (or all) from the server side: its CLOSE packet, then
        the transport."""
        sessions = ([self.sockets[sid]] if sid in self.sockets else []) if sid is not None \
            else list(self.sockets.values())
        for session in sessions:
            self.close(session, Reason.SERVER_DISCONNECT)

    async def shutdown(self) -> None:
        self.budget.close()
        self.timers.close()
        for session in list(self.sockets.values()):
            self.close(session, Reason.SERVER_DISCONNECT, goodbye=False)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # what python-socketio's Admin UI reads of an engine (it also patches
    # python-engineio's AsyncSocket, which is not ours: its packet counters stay 0)
    def _get_socket(self, sid: str) -> LiveSession:
        return self.sockets[sid]

    def _ok(self, *args: Any, **kwargs: Any) -> None:
        """Never called: the Admin UI wraps it to count polling responses."""

    # -- requests --------------------------------------------------------------------

    def plain_poll(self, request: Any) -> tuple[LiveSession, dict[str, str]] | None:
        """The session and CORS headers of ``request`` if it is the commonest
        request of all, a well-formed GET of an open long-polling session, for
        :meth:`start_poll`; else None (:meth:`handle_request` answers it, and
        every refusal)."""
        if request.method != "GET" or (self.host_check is not None
                                       and not self.host_check(request)):
            return None
        query = parse_query(request.query_string)
        session = self.sockets.get(query.get("sid", ""))
        if (session is None or session.transport != POLLING or "j" in query
                or query.get("transport") != POLLING):
            return None
        cors = self._cors_headers(request)
        return None if cors is None else (session, cors)

    def start_poll(self, session: LiveSession, cors: dict[str, str],
                   reply: polling.Reply) -> asyncio.Future[str | None]:
        """Answer a :meth:`plain_poll` through ``reply``, with no task of its own
        (see :func:`polling.start_poll`)."""
        return polling.start_poll(self, session, cors, reply)

    async def handle_request(self, request: Any) -> web.StreamResponse:
        """Answer one request to the Engine.IO path: a handshake, a poll, a POST,
        an upgrade, a preflight. Every refusal is 400 with the reason as text,
        as the protocol asks."""
        if self.host_check is not None and not self.host_check(request):
            log.info("refused a request for host %r", request.headers.get("Host"))
            return web.Response(status=400, text="unknown host")
        cors = self._cors_headers(request)
        if cors is None:
            origin = request.headers.get("Origin")
            log.info("refused a request from origin %s", origin)
            return web.Response(status=400, text=f"{origin} is not an accepted origin.")
        method = request.method
        if method == "OPTIONS":
            return web.Response(status=200, headers=cors)
        query = parse_query(request.query_string)
        transport = query.get("transport")
        if method not in ("GET", "POST"):
            return _bad(f"method {method} is not part of Engine.IO", cors)
        if transport not in (POLLING, WEBSOCKET):
            return _bad("the transport parameter must be polling or websocket", cors)
        if "j" in query:
            return _bad("JSONP is not supported (Engine.IO v4 has no JSONP)", cors)
        sid = query.get("sid")
        is_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if sid is None:
            if self.going_away:  # (on a connection kept alive: the listener is closed)
                return web.Response(status=503, text="This server is shutting down; "
                                    "connect again (another node takes you).", headers=cors)
            if query.get("EIO") != "4":
                return _bad("this server speaks Engine.IO 4 (EIO=4) only", cors)
            if method != "GET":
                return _bad("a session starts with a GET", cors)
            if transport == WEBSOCKET:
                if not is_upgrade:
                    return _bad("transport=websocket without a WebSocket upgrade", cors)
                return await self._open_websocket(request)
            if is_upgrade:
                return _bad("a WebSocket upgrade with transport=polling", cors)
            return await polling.open_session(self, request, cors)
        session = self.sockets.get(sid)
        if session is None:
            draining = self._draining.get(sid)
            if draining is not None and transport == POLLING and method == "GET":
                return await polling.poll(self, draining, request, cors)
            return _bad(f"unknown session {sid}", cors)
        if transport == WEBSOCKET:
            if not is_upgrade:
                return _bad("transport=websocket without a WebSocket upgrade", cors)
            return await self._upgrade(session, request)
        if session.transport != POLLING:
            return _bad("the session is on WebSocket now", cors)
        if method == "GET":
            return await polling.poll(self, session, request, cors)
        return await polling.post(self, session, request, cors)

    def _cors_headers(self, request: Any) -> dict[str, str] | None:
        """The CORS headers of a response to ``request``; None if its Origin is
        not accepted (checked for WebSocket too, where browsers apply no CORS)."""
        headers: dict[str, str] = {}
        origin = request.headers.get("Origin")
        allowed = self.cors_allowed_origins
        if origin is not None and allowed != []:
            if callable(allowed):
                ok = allowed(origin, environ_of(request))
            elif allowed is None or allowed == "*":
                ok = True
            else:
                ok = origin in ([allowed] if isinstance(allowed, str) else allowed)
            if not ok:
                return None
            headers["Access-Control-Allow-Origin"] = origin
            if self.cors_credentials:
                headers["Access-Control-Allow-Credentials"] = "true"
        if request.method == "OPTIONS":
            headers["Access-Control-Allow-Methods"] = "OPTIONS, GET, POST"
            wanted = request.headers.get("Access-Control-Request-Headers")
            if wanted:
                headers["Access-Control-Allow-Headers"] = wanted
        return headers

    def new_session(self, request: Any, transport: str) -> LiveSession:
        session = LiveSession(self, self.generate_id(), environ_of(request), transport)
        self.sockets[session.sid] = session
        return session

    async def connected(self, session: LiveSession) -> bool:
        """Tell python-socketio of a new session; False if its handler refused it
        (the session is then gone, with no disconnect)."""
        handler = self.handlers.get("connect")
        ok = True
        if handler is not None:
            try:
                ok = await handler(session.sid, session.environ) is not False
            except Exception:
                log.exception("eio_sid=%s: the connect handler failed", session.sid)
                ok = False
        if not ok or session.closed:
            self.sockets.pop(session.sid, None)
            session.closed = session.ended = True
            self._stop_timer(session)
            return False
        self._arm_ping(session)
        return True

    async def _open_websocket(self, request: Any) -> web.StreamResponse:
        """A new session on WebSocket: OPEN goes out with the 101, in one write."""
        session = self.new_session(request, WEBSOCKET)
        if not await self.connected(session):
            return web.Response(status=401, text="refused")
        try:
            connection = take_over(request, self.connections, self.max_http_buffer_size,
                                   then=ws_frame(session.open_packet([])),
                                   send_buffer=self.limits.send_buffer)
        except (web.HTTPException, ConnectionResetError) as exc:
            log.info("eio_sid=%s: WebSocket handshake refused (%s)", session.sid, exc)
            self.close(session, Reason.TRANSPORT_ERROR, goodbye=False)
            if isinstance(exc, web.HTTPException):
                return web.Response(status=exc.status, text=exc.text, headers=exc.headers)
            return HandedOff()
        session.ws = connection
        session.wire = connection.transport
        connection.listen(session)
        return HandedOff()

    async def _upgrade(self, session: LiveSession, request: Any) -> web.StreamResponse:
        """A WebSocket for a long-polling session: the probe, then UPGRADE
        (:meth:`upgrade_step`). A second one is refused, as the protocol asks."""
        if not session.start_upgrade():
            log.info("eio_sid=%s: refused a second WebSocket", session.sid)
            return web.Response(status=400, text="the session has a WebSocket already")
        try:
            connection = take_over(request, self.connections, self.max_http_buffer_size,
                                   send_buffer=self.limits.send_buffer)
        except (HandshakeError, web.HTTPException, ConnectionResetError) as exc:
            session.upgrading = None
            log.info("eio_sid=%s: upgrade handshake refused (%s)", session.sid, exc)
            if isinstance(exc, web.HTTPException):
                return web.Response(status=exc.status, text=exc.text, headers=exc.headers)
            return HandedOff()
        session.ws = connection
        connection.listen(session)
        return HandedOff()

    def upgrade_step(self, session: LiveSession, data: str | bytes) -> None:
        connection = session.ws
        assert connection is not None
        step = session.upgrade_step(data)
        if step == PROBED:
            connection.write(ws_frame(packets.PONG_TEXT + packets.PROBE))
            session.wake_poll(packets.NOOP_TEXT)  # the paused poll ends (the protocol's NOOP)
        elif step == UPGRADED:
            session.wake_poll(packets.NOOP_TEXT)
            frames = b"".join(ws_frame(p) for p in session.take_all())
            if frames:
                connection.write(frames)
            session.wire = connection.transport
        else:
            log.info("eio_sid=%s: failed WebSocket upgrade (got %r)", session.sid, data[:20])
            session.ws = None
            connection.listener = None
            connection.close(NORMAL, wait=False)

    # -- what clients send -------------------------------------------------------------

    def incoming(self, session: LiveSession, packet: packets.Packet) -> bool:
        """Act on one packet from the client; False if it was not one a client
        may send (the session is then closed)."""
        try:
            action = session.receive(packet)
        except PacketError as exc:
            log.warning("closing eio_sid=%s: %s", session.sid, exc)
            session.abort()
            self.close(session, Reason.TRANSPORT_ERROR, goodbye=False)
            return False
        if action == DELIVER:
            self._enqueue(session, packet[1])
        elif action == HEARTBEAT:
            self._arm_ping(session)
        elif action == REPLY:
            if not session.send(pong_reply(packet)):
                self._spawn(self.cut_slow_consumer(session))
        elif action == CLOSE_REQUESTED:
            self._enqueue(session, None)  # closes once what came before is handled
        elif action != IGNORE:  # pragma: no cover
            raise AssertionError(action)
        return True

    def _enqueue(self, session: LiveSession, data: Any) -> None:
        """Messages are handled one after another by a task that lives while any
        are waiting (an idle session has none); a peer that sends faster than
        they are handled stops being read."""
        if session.inbox is None:
            session.inbox = [data]
        else:
            session.inbox.append(data)
        if data is not None:
            session.inbox_bytes += len(data)
        if session.pump is None:
            session.pump = self._spawn(self._handle_inbox(session))
        elif session.inbox_bytes > PAUSE_BYTES and session.ws is not None:
            session.ws.pause_reading()

    def behind(self, session: LiveSession) -> bool:
        """Too much read and not handled yet (a POST then waits: :mod:`polling`)."""
        return session.inbox_bytes > PAUSE_BYTES

    async def _handle_inbox(self, session: LiveSession) -> None:
        handler = self.handlers.get("message")
        try:
            while session.inbox and not session.closed:
                batch, session.inbox, session.inbox_bytes = session.inbox, None, 0
                if session.ws is not None:
                    session.ws.resume_reading()
                for data in batch:
                    if session.closed:
                        break
                    if data is None:  # the client's CLOSE
                        self.close(session, Reason.CLIENT_DISCONNECT, goodbye=False)
                        session.wake_poll(packets.NOOP_TEXT)
                        if session.ws is not None:
                            session.ws.close(NORMAL)
                        break
                    if handler is not None:
                        await handler(session.sid, data)
        except Exception:
            log.exception("closing eio_sid=%s: error handling a message", session.sid)
            session.abort()
            self.close(session, Reason.TRANSPORT_ERROR, goodbye=False)
        finally:
            session.pump = None
            session.inbox = None
            session.inbox_bytes = 0
            if session.gone and not session.closed:  # the peer left meanwhile
                self.close(session, Reason.TRANSPORT_CLOSE, goodbye=False)

    def transport_gone(self, session: LiveSession) -> None:
        """The session's connection ended: it closes once what it sent is handled."""
        session.gone = True
        if session.pump is None and not session.closed:
            self.close(session, Reason.TRANSPORT_CLOSE, goodbye=False)

    # -- the heartbeat -------------------------------------------------------------------

    def _arm_ping(self, session: LiveSession) -> None:
        self._stop_timer(session)
        if not session.closed:
            session.timer = self.timers.set(session, self.limits.ping_interval,
                                            self._on_ping_due)

    def _ping_due(self, session: LiveSession) -> None:
        session.timer = None
        if session.closed:
            return
        ping = session.ping()  # ahead of what waits: a slow reader still hears it
        if session.wire is not None:
            if not session.write(ws_frame(ping), first=True):
                self._spawn(self.cut_slow_consumer(session))
                return
        else:
            session.push_control(ping, first=True)
            session.wake_poll()
        session.timer = self.timers.set(session, self.limits.ping_timeout, self._on_pong_due)

    def _pong_due(self, session: LiveSession) -> None:
        session.timer = None
        if session.awaiting_pong and not session.closed:
            log.info("closing eio_sid=%s: no pong within %g s", session.sid,
                     self.limits.ping_timeout)
            session.abort()
            self.close(session, Reason.PING_TIMEOUT, goodbye=False)

    def _stop_timer(self, session: LiveSession) -> None:
        if session.timer is not None:
            self.timers.cancel(session, session.timer)
            session.timer = None

    # -- sending to many --------------------------------------------------------------

    async def broadcast(self, sids: Iterable[str], data: str | bytes,
                        droppable: bool = False) -> None:
        """Send one message to many sessions: on WebSocket the same frame bytes to
        each, written now; on long-polling to each queue. ``droppable``: a
        session that catches up may drop it (see :meth:`catch_up_when_behind`)."""
        packet = packets.message(data)
        wire_frame = b""
        sockets = self.sockets
        behind = []
        for sid in sids:
            session = sockets.get(sid)
            if session is None:
                continue
            if session.wire is not None:
                wire_frame = wire_frame or ws_frame(packet)
                if not session.write(wire_frame, droppable):
                    behind.append(session)
            elif not session.send(packet, droppable):
                behind.append(session)
        for session in behind:
            await self.cut_slow_consumer(session)

    # -- readers that fall behind -------------------------------------------------------

    def catch_up_when_behind(self, sid: str) -> None:
        """The client of session ``sid`` catches up by itself on what it was not
        sent (it fetches it again): past its backlog bound the session is not
        cut but *skips*: the droppable packets waiting for it are dropped and it
        is given no more of them until it has drained below an eighth of the
        bound; then the ``caught_up`` handler is called with its sid (to tell
        the client what to fetch), and it is live again. The rest (replies,
        pings) still counts against the bound: a peer that does not read at
        all is cut all the same."""
        session = self.sockets.get(sid)
        if session is None or session.catches_up:
            return
        session.catches_up = True
        if session.out is not None:
            session.out_droppable = [False] * len(session.out)

    def skipped(self, session: LiveSession) -> None:
        self.skips += 1
        log.info("eio_sid=%s: behind its bound; skipping what it can fetch again",
                 session.sid)

    def caught_up(self, session: LiveSession) -> None:
        """A session that skipped has drained: its client is told to catch up."""
        handler = self.handlers.get("caught_up")
        if handler is not None and not session.closed:
            self._spawn(handler(session.sid))

    def backlog(self, sid: str) -> int:
        """Packets queued for a long-polling session (0 on WebSocket or if gone)."""
        session = self.sockets.get(sid)
        return session.queued if session is not None else 0

    def lagging(self, sid: str) -> bool:
        """Past half its backlog bound: the first to lose typing signals."""
        session = self.sockets.get(sid)
        limits = self.limits
        return session is not None and (
            session.queued > limits.max_backlog_packets // 2
            or session.backlog_bytes() > limits.max_backlog_bytes // 2)

    async def cut_slow_consumer(self, session: LiveSession) -> None:
        """Disconnect a session whose peer has fallen too far behind (reason
        ``slow_consumer``): a blocked write ends now, and nobody waits for it."""
        self.cut_now(session)

    def cut_now(self, session: LiveSession) -> None:
        """:meth:`cut_slow_consumer`, from code that cannot wait."""
        if session.closed:
            return
        log.warning("disconnecting eio_sid=%s: slow consumer (%d packets, %d bytes waiting)",
                    session.sid, session.queued, session.backlog_bytes())
        session.abort()
        self.close(session, SLOW_CONSUMER, goodbye=False)

    # -- closing ------------------------------------------------------------------------

    def close(self, session: LiveSession, reason: str, *, goodbye: bool = True,
              ws_code: int = NORMAL) -> None:
        """End a session now: python-socketio hears of it (once) and it leaves the
        table. With ``goodbye`` the client is sent CLOSE (a long-polling one at
        its next poll); a WebSocket gets the closing handshake with ``ws_code``."""
        if not session.close():
            return
        self._stop_timer(session)
        self.sockets.pop(session.sid, None)
        connection, session.ws = session.ws, None
        if session.transport == POLLING:
            if connection is not None:  # a probing WebSocket
                connection.listener = None
                connection.close(ws_code, wait=False)
            if session.poll_waiter is not None:  # answered now: NOOP to the client's
                if reason == Reason.CLIENT_DISCONNECT:  # own CLOSE, else CLOSE
                    session.wake_poll(packets.NOOP_TEXT)
                else:
                    session.push_control(packets.CLOSE_TEXT)
                    session.wake_poll()
            elif goodbye:  # what was sent last waits for the next poll, for a while
                session.push_control(packets.CLOSE_TEXT)
                self._draining[session.sid] = session
                asyncio.get_running_loop().call_later(
                    DRAIN_TIMEOUT, self._draining.pop, session.sid, None)
        elif connection is not None:
            if goodbye:
                session.write(ws_frame(packets.CLOSE_TEXT))
            session.flush(force=True)  # what waits, then the closing handshake
            session.wire = None
            connection.listener = None
            connection.close(ws_code)
        self._spawn(self._ended(session, reason))

    def forget(self, session: LiveSession) -> None:
        """A closed session's last packets have been polled."""
        self._draining.pop(session.sid, None)

    async def _ended(self, session: LiveSession, reason: str) -> None:
        if session.ended:
            return
        session.ended = True
        handler = self.handlers.get("disconnect")
        if handler is not None:
            try:
                await handler(session.sid, reason)
            except Exception:
                log.exception("eio_sid=%s: the disconnect handler failed", session.sid)

    async def close_all(self, over: float = 0.0) -> int:
        """Close every session as a server going away does, so that clients
        reconnect by themselves; return how many. With ``over`` (seconds), the
        sessions close in random order spread evenly over that time, a slice
        every :data:`DRAIN_TICK`: their clients come back spread out, whatever
        their own back-off, not as one herd. No new session is taken meanwhile.

        No Engine.IO CLOSE is sent: python-socketio's clients take one as a
        deliberate goodbye and stay disconnected. A WebSocket gets the closing
        handshake with 1001 (going away, RFC 6455 section 7.4.1), as Node's
        engine.io closes it; a waiting long-poll GET is answered 503."""
        self.going_away = True
        sessions = list(self.sockets.values())
        random.shuffle(sessions)
        ticks = max(1, int(over / DRAIN_TICK))
        start = asyncio.get_running_loop().time()
        for tick in range(ticks):
            if tick:
                await asyncio.sleep(max(0.0, start + tick * DRAIN_TICK
                                        - asyncio.get_running_loop().time()))
            for session in sessions[len(sessions) * tick // ticks:
                                    len(sessions) * (tick + 1) // ticks]:
                if session.closed:  # (gone by itself meanwhile)
                    continue
                if session.queued > 2 or (session.wire is not None
                                          and session.backlog_bytes()):
                    session.abort()  # a peer that stopped reading would hold its connection
                self.close(session, Reason.SERVER_DISCONNECT, goodbye=False,
                           ws_code=GOING_AWAY)
        return len(sessions)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        _log_failure(task)

    def _background_done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        _log_failure(task)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a background task failed", exc_info=task.exception())


def parse_query(query_string: str) -> dict[str, str]:
    """A query string's parameters (the last of a repeated one), decoding only
    what is encoded: Engine.IO's EIO, transport, sid and t never are."""
    query = {}
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        query[name] = value
    return query


def _bad(why: str, headers: dict[str, str]) -> web.Response:
    log.info("refused an Engine.IO request: %s", why)
    return web.Response(status=400, text=why, headers=headers)
