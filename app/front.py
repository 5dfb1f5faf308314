"""The front door: each new connection's first request, before aiohttp sees it.

A Socket.IO WebSocket handshake (``GET /socket.io/?...transport=websocket``
with ``Upgrade: websocket``) is read here and handed straight to the Engine.IO
server, which answers it and takes the connection (:mod:`app.ws`).
aiohttp's request machinery (a request handler and its task, the parsed
message and request objects, routing, a second task for the handler) cost
about a quarter of the server's time per new connection, for a request whose
connection aiohttp gives up a moment later anyway. Every other connection
(pages, long-polling, health checks, metrics, anything unusual in the
handshake: a header that is not plain ASCII, a body, HTTP/1.0) is given to
aiohttp with the bytes read so far, as if aiohttp had accepted it.

:class:`RoomcastRunner` is aiohttp's ``AppRunner`` whose server makes a
:class:`FrontDoor` for each connection; ``app/__main__.py`` and the tests'
servers run on it. ``tests/test_front.py`` covers both ways through.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from . import compat
from .ws.handshake import HandedOff

log = logging.getLogger(__name__)

SOCKETIO_PATH = "/socket.io/"
# the Engine.IO server that answers WebSocket handshakes (set by app.server)
ENGINE_KEY = web.AppKey("engine", object)
_PREFIX = b"GET " + SOCKETIO_PATH.encode() + b"?"
MAX_HEAD = 8190  # bytes of request line and headers (aiohttp's own limit per line)
FIRST_REQUEST_TIMEOUT = 75.0  # seconds a new connection may take to send its request
# RFC 9110 section 5.1: a field name is a token; section 5.5: a value holds no
# control character but horizontal tab (no NUL, no bare CR or LF)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class FrontRequest:
    """A WebSocket handshake read by the front door: what the Engine.IO server
    and :func:`app.ws.handshake.take_over` need of a request, and no more."""

    method = "GET"
    version = (1, 1)
    content_length = None
    protocol = None

    def __init__(self, transport: asyncio.Transport, target: str,
                 headers: CIMultiDict[str], tail: bytes) -> None:
        self.transport = transport
        self.path, _, self.query_string = target.partition("?")
        self.target = target
        self.headers = headers
        self.query = dict(parse_qsl(self.query_string))
        self.tail = tail  # what followed the headers: the first frames, if any
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else ""

    def detach(self) -> bytes:
        """For take_over: the bytes read after the headers (nothing to undo)."""
        tail, self.tail = self.tail, b""
        return tail


def parse_handshake(head: bytes, transport: asyncio.Transport,
                    tail: bytes) -> FrontRequest | None:
    """The request in ``head`` if it is a plain Socket.IO WebSocket handshake,
    else None (aiohttp then reads it, and answers whatever is wrong with it)."""
    if not head.isascii():
        return None
    request_line, *lines = head.decode("ascii").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            return None  # aiohttp refuses it, with 400
        headers.add(name, value)
    if ("Content-Length" in headers or "Transfer-Encoding" in headers
            or headers.get("Upgrade", "").strip().lower() != "websocket"):
        return None
    request = FrontRequest(transport, parts[1], headers, tail)
    if request.path != SOCKETIO_PATH or request.query.get("transport") != "websocket":
        return None
    return request


class FrontDoor(asyncio.Protocol):
    """One new connection until its first request is known."""

    __slots__ = ("transport", "_server", "_buffer", "_timer", "_request")

    def __init__(self, server: FrontServer) -> None:
        self._server = server
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._request: FrontRequest | None = None  # a handshake being answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.doors.add(self)
        self._timer = asyncio.get_running_loop().call_later(
            FIRST_REQUEST_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._request is not None:  # frames sent before the handshake is answered
            self._request.tail += data
            return
        buf = self._buffer + data if self._buffer else data
        if not buf.startswith(_PREFIX[:len(buf)]):
            self._to_aiohttp(buf)
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._to_aiohttp(buf)
            else:
                self._buffer = buf
            return
        assert self.transport is not None
        request = parse_handshake(buf[:end], self.transport, buf[end + 4:])
        if request is None:
            self._to_aiohttp(buf)
            return
        self._leave()
        self._request = request
        asyncio.ensure_future(self._server.handshake(request))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        self.transport = self._request = None

    def _leave(self) -> None:
        """This connection is no longer waiting at the door."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server.doors.discard(self)
        self._buffer = b""

    def _to_aiohttp(self, data: bytes) -> None:
        """Give the connection to aiohttp, as if it had accepted it itself."""
        transport = self.transport
        self._leave()
        if transport is None or transport.is_closing():
            return
        handler = compat.LowLevelServer.__call__(self._server)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)


class FrontServer(compat.LowLevelServer):
    """aiohttp's low-level server, with a front door on each new connection."""

    engine: Any  # the Engine.IO server (set by RoomcastRunner)
    doors: set[FrontDoor]

    def __call__(self) -> Any:
        return FrontDoor(self)

    async def handshake(self, request: FrontRequest) -> None:
        """Have the Engine.IO server answer a WebSocket handshake; if it refuses,
        write its response and close the connection."""
        try:
            response = await self.engine.handle_request(request)
        except Exception:
            log.exception("error answering a WebSocket handshake from %s", request.remote)
            response = web.Response(status=500, text="internal error")
        if isinstance(response, HandedOff):
            return  # the connection is the WebSocket's now
        transport = request.transport
        if not transport.is_closing():
            transport.write(serialize(response))
            transport.close()

    def pre_shutdown(self) -> None:
        for door in list(self.doors):  # connections that never sent a request
            if door.transport is not None:
                door.transport.close()
        super().pre_shutdown()


def serialize(response: web.Response) -> bytes:
    """A refusal as HTTP/1.1 bytes, closing the connection."""
    body = response.body if isinstance(response.body, bytes) else b""
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()
              if name.lower() not in ("content-length", "connection", "transfer-encoding")]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class RoomcastRunner(compat.AppRunner):
    """aiohttp's AppRunner on a :class:`FrontServer`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # a long-poll GET whose client leaves is cancelled, so its session closes
        # at once (the Engine.IO protocol); aiohttp's default lets it wait
        kwargs.setdefault("handler_cancellation", True)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = FrontServer  # (AppRunner builds the server itself)
        assert isinstance(server, FrontServer)
        server.engine = self.app[ENGINE_KEY]
        server.doors = set()
        return server
