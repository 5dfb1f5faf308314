"""The front door: what reaches ``/socket.io/`` is answered before aiohttp sees it.

Every new connection starts here. Its Engine.IO requests (the WebSocket
handshake, and long-polling's GETs and POSTs) are read here and handed
straight to the Engine.IO server (:mod:`app.eio`), one after another on a
kept-alive connection; a WebSocket then takes the connection over
(:mod:`app.ws`). aiohttp's request machinery (a request handler and its task,
the parsed message and request objects, routing, response preparation) cost
about a quarter of the server's time per new WebSocket, and a third of it
under long-polling load (a GET per batch). Any other request (pages, health
checks, metrics, a CORS preflight, anything unusual: a header that is not
plain ASCII, chunked encoding, HTTP/1.0) hands the connection to aiohttp with
the bytes read so far, as if aiohttp had accepted it; the door stays in front
of aiohttp's request handler to time the heads of its later requests too
(aiohttp has no head deadline: its keep-alive timer stops at a request's
first byte), with :func:`head_deadlines` telling it when each request starts.

:class:`RoomcastRunner` is aiohttp's ``AppRunner`` whose server makes a
:class:`FrontDoor` for each connection; ``app/__main__.py`` and the tests'
servers run on it. ``tests/wire/test_front.py`` covers both ways through.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from multidict import CIMultiDict

from .. import compat
from ..ws.handshake import HandedOff
from .timers import TimerWheel

log = logging.getLogger(__name__)

SOCKETIO_PATH = "/socket.io/"
# the Engine.IO server that answers what reaches /socket.io/ (set by app.server)
ENGINE_KEY = web.AppKey("engine", object)
# (header timeout, keep-alive timeout) in seconds, for every connection (set by app.server)
TIMEOUTS_KEY = web.AppKey("front_timeouts", tuple)
_PREFIXES = tuple(method + b" " + SOCKETIO_PATH.encode() + b"?" for method in (b"GET", b"POST"))
MAX_HEAD = 8190  # bytes of request line and headers (aiohttp's own limit per line)
# nginx's defaults: client_header_timeout 60 s, keepalive_timeout 75 s
HEADER_TIMEOUT = 60.0  # seconds from a request's first byte until its head is all in
KEEPALIVE_TIMEOUT = 75.0  # seconds a connection may wait, idle, for its next request
# how late those may close a connection: one or the other is set twice a
# request, on a wheel (a loop timer of its own cost 2.4 us to set and cancel
# on uvloop, a wheel's slot 0.5 us)
DEADLINE_RESOLUTION = 1.0  # seconds
# RFC 9110 section 5.1: a field name is a token; section 5.5: a value holds no
# control character but horizontal tab (no NUL, no bare CR or LF)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _Body:
    """A POST body as ``request.content``, fed by the front door as it arrives
    (the Engine.IO server reads it while it comes, and so knows a POST is in
    progress: a second one at the same time is refused)."""

    __slots__ = ("_data", "_left", "_waiter")

    def __init__(self, length: int) -> None:
        self._data = bytearray()
        self._left = length  # bytes still to come
        self._waiter: asyncio.Future[None] | None = None

    @property
    def complete(self) -> bool:
        return self._left == 0

    def feed(self, data: bytes) -> bytes:
        """Take what belongs to the body; return the rest (the next request)."""
        if not self._left:
            return data
        take = data[:self._left]
        self._data += take
        self._left -= len(take)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return data[len(take):]

    async def read(self, n: int = -1) -> bytes:
        while not self._data and self._left:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        size = len(self._data) if n < 0 else min(n, len(self._data))
        data = bytes(self._data[:size])
        del self._data[:size]
        return data


class FrontRequest:
    """An Engine.IO request read by the front door: what the Engine.IO server
    and :func:`app.ws.handshake.take_over` need of a request, and no more."""

    version = (1, 1)
    protocol = None

    def __init__(self, method: str, transport: asyncio.Transport, target: str,
                 headers: CIMultiDict[str], content_length: int | None) -> None:
        self.method = method
        self.transport = transport
        self.path, _, self.query_string = target.partition("?")
        self.target = target
        self.headers = headers
        self.content_length = content_length
        self.content = _Body(content_length or 0)
        self.tail = b""  # for a WebSocket: what followed the headers (its first frames)
        self.upgrade = "Upgrade" in headers
        self.keep_alive = "close" not in headers.get("Connection", "").lower()
        self.body_refused = False  # too large: answered unread, nothing more is read
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""

    def detach(self) -> bytes:
        """For take_over: the bytes read after the headers (nothing to undo)."""
        tail, self.tail = self.tail, b""
        return tail


def parse_request(head: bytes, transport: asyncio.Transport) -> FrontRequest | None:
    """The request in ``head`` if it is a plain Engine.IO request (a GET or a POST
    with a Content-Length, to the Socket.IO path, in HTTP/1.1, with plain ASCII
    headers), else None: aiohttp then reads it, and answers whatever is wrong
    with it."""
    if not head.isascii():
        return None
    request_line, *lines = head.decode("ascii").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in ("GET", "POST"):
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            return None  # aiohttp refuses it, with 400
        headers.add(name, value)
    method = parts[0]
    lengths = headers.getall("Content-Length", [])
    if "Transfer-Encoding" in headers or len(lengths) > 1:
        return None
    if method == "GET":
        if lengths or ("Upgrade" in headers
                       and headers["Upgrade"].strip().lower() != "websocket"):
            return None
        length = None
    else:
        if not lengths or not lengths[0].isdigit() or "Upgrade" in headers:
            return None
        length = int(lengths[0])
    request = FrontRequest(method, transport, parts[1], headers, length)
    if request.path != SOCKETIO_PATH:
        return None
    return request


class FrontDoor(asyncio.Protocol):
    """One connection: its Engine.IO requests answered here, one after another
    (HTTP/1.1 keep-alive), until a WebSocket takes it over or a request of
    another kind hands it to aiohttp."""

    __slots__ = ("transport", "_server", "_buffer", "_timer", "_request", "_task",
                 "_handler", "_in_request", "_ahead")

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: int | None = None  # the slot of its deadline on the server's wheel
        self._request: FrontRequest | None = None  # the request being answered
        self._task: asyncio.Future[Any] | None = None  # answering it
        self._handler: Any = None  # aiohttp's request handler, once it has the connection
        self._in_request = False  # (with aiohttp) a request's handler is running
        self._ahead = False  # (with aiohttp) bytes came in while it ran

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._wait()

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._to_handler(data)
            return
        request = self._request
        if request is not None:  # sent while a request is answered: read after it
            if request.upgrade:  # the first frames of a WebSocket
                request.tail += data
                return
            if request.body_refused:
                return  # answered unread: nothing more is read
            data = request.content.feed(data)
            self._buffer += data
            if len(self._buffer) > MAX_HEAD + self._server.engine.max_http_buffer_size:
                self._abort("too much sent ahead of the answer")
            return
        if not self._buffer:  # a request begins: its head must be in within the header timeout
            self._arm(self._server.header_timeout)
        self._buffer = self._buffer + data if self._buffer else data
        self._next()

    def _next(self) -> None:
        """Read the next request from the buffer, if it is all there."""
        buf = self._buffer
        if not buf:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:  # (aiohttp gets a connection only with a whole head: no slowloris there)
            if len(buf) > MAX_HEAD:
                self._to_aiohttp(buf)  # which refuses it
            return
        if not any(buf.startswith(prefix) for prefix in _PREFIXES):
            self._to_aiohttp(buf)
            return
        assert self.transport is not None
        request = parse_request(buf[:end], self.transport)
        if request is None:
            self._to_aiohttp(buf)
            return
        rest = buf[end + 4:]
        if (request.content_length or 0) > self._server.engine.max_http_buffer_size:
            request.body_refused = True  # answered unread: the connection ends after it
            request.keep_alive = False
            rest = b""
        else:
            rest = request.content.feed(rest)  # the body, or as much of it as is here
        if request.upgrade:
            request.tail, rest = rest, b""
        self._buffer = rest
        self._busy()
        self._request = request
        engine = self._server.engine
        plain = engine.plain_poll(request)
        if plain is not None:  # a long-poll, most requests of all: no task for it
            self._task = engine.start_poll(*plain, lambda answer: self._answered(request, answer))
        else:
            self._task = asyncio.ensure_future(self._answer(request))

    async def _answer(self, request: FrontRequest) -> None:
        engine = self._server.engine
        try:
            response = await engine.handle_request(request)
        except asyncio.CancelledError:
            raise  # the connection is gone
        except Exception:
            log.exception("error answering %s %s from %s", request.method, request.path,
                          request.remote)
            response = web.Response(status=500, text="internal error")
        if isinstance(response, HandedOff):
            return  # the connection is the WebSocket's now
        assert isinstance(response, web.Response)  # (every other answer of the engine)
        self._answered(request, response)

    def _answered(self, request: FrontRequest, response: web.Response) -> bool:
        """Write the answer to ``request``, then read the next request; False if
        the connection is gone."""
        engine = self._server.engine
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        # (a body not all received by now would be read as the next request: close)
        keep = (request.keep_alive and not request.upgrade and not engine.going_away
                and request.content.complete)
        transport.write(serialize(response, keep))
        self._request = self._task = None
        if not keep:
            transport.close()
            return True
        self._wait()
        self._next()
        return True

    def eof_received(self) -> bool:
        if self._handler is not None:
            return bool(self._handler.eof_received())
        return False

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.connection_lost(exc)
        self._busy()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()  # a long-poll whose client left: its session closes
        self.transport = self._request = None
        self._buffer = b""

    def _wait(self) -> None:
        """Idle between requests: at the door, closed after the keep-alive timeout
        (and at shutdown)."""
        self._server.doors.add(self)
        self._arm(self._server.keepalive_timeout)

    def _arm(self, seconds: float) -> None:
        """Close the connection in ``seconds`` (at most a slot later) unless a
        request's head is in by then."""
        wheel = self._server.deadlines
        if self._timer is not None:
            wheel.cancel(self, self._timer)
        assert self.transport is not None
        self._timer = wheel.set(self, seconds, FrontDoor._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._server.deadlines.cancel(self, self._timer)
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is not None and transport.get_protocol() is self:  # (not a WebSocket's)
            transport.close()

    def _busy(self) -> None:
        """A request is being answered (or the connection is leaving us)."""
        self._disarm()
        self._server.doors.discard(self)

    def _abort(self, why: str) -> None:
        log.warning("dropping a connection: %s", why)
        if self.transport is not None:
            self.transport.abort()

    def _to_aiohttp(self, data: bytes) -> None:
        """Give the connection to aiohttp, as if it had accepted it itself (the
        door stays in between, to time request heads)."""
        transport = self.transport
        self._busy()
        self._buffer = b""
        if transport is None or transport.is_closing():
            return
        self._handler = compat.LowLevelServer.__call__(self._server)
        self._handler.__class__ = RefusingHandler  # (the server builds it itself)
        self._handler.connection_made(transport)
        self._to_handler(data)

    def _to_handler(self, data: bytes) -> None:
        """Bytes for aiohttp: those that start a request's head start its deadline."""
        if self._in_request:
            self._ahead = True
        elif self._timer is None:
            self._arm(self._server.header_timeout)
        self._handler.data_received(data)

    def request_started(self) -> None:
        """aiohttp has a whole head, and runs its handler."""
        self._in_request = True
        self._disarm()

    def request_finished(self) -> None:
        """The handler returned: what came meanwhile begins the next head (or
        the body just read: a deadline sooner than the keep-alive one is harmless)."""
        self._in_request = False
        if self._ahead and self.transport is not None:
            self._ahead = False
            self._arm(self._server.header_timeout)


@web.middleware
async def head_deadlines(request: web.Request, handler: Any) -> web.StreamResponse:
    """Tell a connection's front door when aiohttp starts and ends a request."""
    transport = request.transport
    door = transport.get_protocol() if transport is not None else None
    if not isinstance(door, FrontDoor):
        return cast(web.StreamResponse, await handler(request))
    door.request_started()
    try:
        return cast(web.StreamResponse, await handler(request))
    finally:
        door.request_finished()


class FrontServer(compat.LowLevelServer):
    """aiohttp's low-level server, with a front door on each new connection."""

    engine: Any  # the Engine.IO server (set by RoomcastRunner)
    doors: set[FrontDoor]
    deadlines: TimerWheel  # every connection's head or keep-alive deadline
    header_timeout = HEADER_TIMEOUT
    keepalive_timeout = KEEPALIVE_TIMEOUT

    def __call__(self) -> Any:
        return FrontDoor(self)

    def pre_shutdown(self) -> None:
        for door in list(self.doors):  # connections waiting for their next request
            if door.transport is not None:
                door.transport.close()
        super().pre_shutdown()


class RefusingHandler(web.RequestHandler):
    """aiohttp's request handler, whose own refusals (a request it cannot
    parse, a line longer than it reads, a handler that raised) are answered
    like every refusal of ours: ``{"ok": false, "error": {"code", "message"}}``
    as JSON, never aiohttp's plain text echoing what was sent."""

    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:  # a fault of ours: aiohttp logs its traceback
            status = super().handle_error(request, status, exc, message).status
            code, why = "internal", "the server failed to answer this request"
        else:  # the peer's: a line, not a traceback per malformed request
            log.info("refused a malformed request from %s: %s", request.remote,
                     type(exc).__name__)
            if request.writer.output_size > 0:
                raise ConnectionError("an answer had begun: the connection ends")
            code, why = ("too_large", f"a request line or header is longer than {MAX_HEAD} bytes") \
                if isinstance(exc, LineTooLong) else ("bad_request", "a malformed HTTP request")
        response = web.json_response({"ok": False, "error": {"code": code, "message": why}},
                                     status=status)
        response.force_close()
        return response


def serialize(response: web.Response, keep_alive: bool) -> bytes:
    """An answer as HTTP/1.1 bytes (saying ``Connection: close`` unless kept alive)."""
    body = response.body if isinstance(response.body, bytes) else b""
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()
              if name.lower() not in ("content-length", "connection", "transfer-encoding")]
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    lines += ["", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class RoomcastRunner(compat.AppRunner):
    """aiohttp's AppRunner on a :class:`FrontServer`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # a long-poll GET whose client leaves is cancelled, so its session closes
        # at once (the Engine.IO protocol); aiohttp's default lets it wait
        kwargs.setdefault("handler_cancellation", True)
        self._timeouts = app.get(TIMEOUTS_KEY, (HEADER_TIMEOUT, KEEPALIVE_TIMEOUT))
        # aiohttp's own keep-alive timeout (an hour by default) for what it serves
        kwargs.setdefault("keepalive_timeout", self._timeouts[1])
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = FrontServer  # (AppRunner builds the server itself)
        assert isinstance(server, FrontServer)
        server.engine = self.app[ENGINE_KEY]
        server.doors = set()
        # (a slot at most a quarter of the shorter timeout: tests' are short)
        server.deadlines = TimerWheel(min(DEADLINE_RESOLUTION, min(self._timeouts) / 4))
        server.header_timeout, server.keepalive_timeout = self._timeouts
        return server
