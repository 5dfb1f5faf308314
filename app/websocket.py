"""A WebSocket connection of our own, taken over after the handshake.

For as long as a WebSocket served through aiohttp lasts, aiohttp keeps its
request handler (with an HTTP parser and a message queue), the parsed request
and its headers, a ``WebSocketResponse`` with its reader and writer, and two
tasks: about 9 KB of the 19 KB an idle Roomcast connection cost (``bench/``,
S2), none of which Engine.IO needs once the connection is up.
:func:`take_over` answers the handshake itself (RFC 6455 section 4.2.2: no
extension, no subprotocol) and hands the connection's transport to a
:class:`WebSocketConnection`: from the front door (:mod:`app.front`), which
read the handshake without aiohttp, or from aiohttp, whose request then ends as
if its peer had gone. From then on a connection costs its transport and one
small object.

:class:`WebSocketConnection` reads frames (masked, possibly fragmented),
answers pings and the closing handshake, hands each whole message to its
listener (the Engine.IO session, :mod:`app.transport`) and fails the
connection on anything RFC 6455 forbids, logging why ("closing a WebSocket:
..."). It writes what it is given; framing outgoing packets is the session's.

This module reaches below aiohttp's public API in one place, through
:func:`app.compat.release_aiohttp_connection` (the request handler's buffered
tail, and ending its request while the transport lives on).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from aiohttp import web

from . import compat

log = logging.getLogger(__name__)

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80

# close codes (RFC 6455 section 7.4.1)
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009

CLOSE_TIMEOUT = 5.0  # seconds to wait for the peer's answer to our Close
PAUSE_BYTES = 1 << 16  # a listener this far behind stops reading from its peer


class Listener(Protocol):
    """Who gets a connection's messages (an Engine.IO session)."""

    def ws_message(self, data: str | bytes) -> None: ...

    def ws_closed(self) -> None: ...


class OpenConnections:
    """The connections taken over and not yet closed, so that shutdown can close
    them all and wait until they are gone."""

    def __init__(self) -> None:
        self._open: set[WebSocketConnection] = set()
        self._empty: asyncio.Event | None = None

    def add(self, connection: WebSocketConnection) -> None:
        self._open.add(connection)

    def discard(self, connection: WebSocketConnection) -> None:
        self._open.discard(connection)
        if not self._open and self._empty is not None:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[WebSocketConnection]:
        return iter(list(self._open))

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every connection to end; abort the rest."""
        if self._open:
            self._empty = asyncio.Event()
            try:
                await asyncio.wait_for(self._empty.wait(), timeout)
            except asyncio.TimeoutError:
                for connection in self:
                    connection.abort()
            finally:
                self._empty = None


class HandshakeError(web.HTTPBadRequest):
    """A request that cannot be upgraded to a WebSocket (answered 400)."""


def accept(request: web.BaseRequest) -> bytes:
    """The 101 response to a valid WebSocket handshake; HandshakeError otherwise."""
    headers = request.headers
    if request.version < (1, 1):
        raise HandshakeError(text="WebSocket needs HTTP/1.1")
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError(text="not a WebSocket upgrade")
    connection = {token.strip() for token in headers.get("Connection", "").lower().split(",")}
    if "upgrade" not in connection:
        raise HandshakeError(text="no Connection: upgrade")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise web.HTTPUpgradeRequired(headers={"Sec-WebSocket-Version": "13"},
                                      text="WebSocket version 13 only")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (binascii.Error, ValueError):
        raise HandshakeError(text="invalid Sec-WebSocket-Key") from None
    digest = base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + digest + b"\r\n\r\n")


class HandedOff(web.StreamResponse):
    """What the aiohttp handler returns for a connection taken over: its 101 is
    written and the connection is no longer aiohttp's, so nothing more is."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: Any, registry: OpenConnections, max_size: int,
              then: bytes = b"") -> WebSocketConnection:
    """Answer the WebSocket handshake of ``request`` (with the frames ``then``, in
    the same write) and take its connection, from aiohttp or from the front door
    (:mod:`app.front`); the handler then returns :class:`HandedOff`. Raises
    HandshakeError (or HTTPUpgradeRequired) for a bad handshake,
    ConnectionResetError if the peer is already gone. Nothing is read until
    :meth:`WebSocketConnection.listen`."""
    response = accept(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the peer left during the handshake")
    connection = WebSocketConnection(transport, registry, max_size)
    detach = getattr(request, "detach", None)  # a request the front door read
    tail = detach() if detach is not None else compat.release_aiohttp_connection(request)
    if tail:
        connection._buffer = bytearray(tail)
    transport.set_protocol(connection)
    transport.write(response + then)
    try:
        transport.resume_reading()  # aiohttp may have paused it while it buffered
    except (AttributeError, NotImplementedError, RuntimeError):
        pass
    return connection


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (at C speed, as big integers)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (a server's frames are never masked)."""
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 65536:
        header = bytes((_FIN | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((_FIN | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def close_payload_problem(payload: bytes) -> tuple[int, str] | None:
    """Why a Close frame's payload is invalid (the code to fail with and a
    reason), or None. RFC 6455 section 5.5.1: empty, or a 2-byte code and UTF-8
    text; section 7.4: 1005, 1006, 1015 and codes outside 1000-4999 are never
    sent, 1004 and 1016-2999 are reserved."""
    if not payload:
        return None
    if len(payload) == 1:
        return PROTOCOL_ERROR, "a one-byte Close"
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return PROTOCOL_ERROR, f"a Close with code {code}, which RFC 6455 forbids"
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return INVALID_DATA, "a Close reason that is not UTF-8"
    return None


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket connection after its handshake, fed by the event loop."""

    __slots__ = ("transport", "listener", "_registry", "max_size", "_buffer", "_message",
                 "_message_opcode", "_closing", "_paused", "_write_blocked")

    def __init__(self, transport: asyncio.Transport, registry: OpenConnections,
                 max_size: int) -> None:
        self.transport: asyncio.Transport | None = transport
        self.listener: Listener | None = None
        self._registry = registry
        self.max_size = max_size
        self._buffer: bytearray | None = None  # a frame not yet whole
        self._message: bytearray | None = None  # fragments of a message not yet whole
        self._message_opcode = TEXT
        self._closing: asyncio.TimerHandle | bool = False  # our Close is sent
        self._paused = False  # by the listener: its inbox is full
        self._write_blocked = False  # by the transport: the peer is not reading
        registry.add(self)

    # -- the listener's side ---------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Deliver messages to ``listener`` from now on, starting with any that
        arrived with the handshake."""
        self.listener = listener
        if self._buffer:
            self.data_received(b"")

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def close(self, code: int = NORMAL, wait: bool = True) -> None:
        """Start the closing handshake: our Close, then the peer's answer (for up to
        CLOSE_TIMEOUT if ``wait``, else the connection ends once written)."""
        transport = self.transport
        if transport is None or self._closing:
            return
        transport.write(frame(CLOSE, code.to_bytes(2, "big")))
        if wait:
            self._closing = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.abort)
            self.resume_reading()  # no more messages for the listener: read the peer's Close
        else:
            self._closing = True
            transport.close()

    def abort(self) -> None:
        """End the connection now, unsent data and all."""
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self._reading_changed()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._reading_changed()

    def _reading_changed(self) -> None:
        """Read from the peer only while neither the listener's inbox nor our
        write buffer is full."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._paused or self._write_blocked:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # -- asyncio.Protocol --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.listener is None and self._closing is False:  # not listening yet: keep it
            if self._buffer is None:
                self._buffer = bytearray()
            self._buffer += data
            return
        buf: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buf = self._buffer
        else:
            buf = data
        pos, end = 0, len(buf)
        while end - pos >= 2 and self._closing is not True:
            first, second = buf[pos], buf[pos + 1]
            length, head = second & 0x7F, pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length, head = int.from_bytes(buf[head:head + 2], "big"), head + 2
            elif length == 127:
                if end - head < 8:
                    break
                length, head = int.from_bytes(buf[head:head + 8], "big"), head + 8
            opcode = first & 0x0F
            if not second & 0x80:
                self._fail(PROTOCOL_ERROR, "an unmasked frame")
                return
            if first & 0x70:
                self._fail(PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
                return
            if opcode >= CLOSE and (length > 125 or not first & _FIN):
                self._fail(PROTOCOL_ERROR, "a fragmented or long control frame")
                return
            if length + len(self._message or b"") > self.max_size:
                self._fail(TOO_BIG, f"a message over {self.max_size} bytes")
                return
            if end - head < 4 + length:
                break
            payload = unmask(bytes(buf[head:head + 4]), bytes(buf[head + 4:head + 4 + length]))
            pos = head + 4 + length
            self._frame(bool(first & _FIN), opcode, payload)
        if pos == end or self._closing is True:
            self._buffer = None
        elif buf is self._buffer:  # keep the bytearray: appending to it stays cheap
            if pos:
                del buf[:pos]
        else:
            self._buffer = bytearray(buf[pos:])

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._buffer = self._message = None
        if isinstance(self._closing, asyncio.TimerHandle):
            self._closing.cancel()
        self._closing = True
        self._registry.discard(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.ws_closed()

    def pause_writing(self) -> None:
        """The peer is not reading what we write: stop reading what it sends, so
        that what it makes us write (pongs, close answers) stays bounded by the
        transport's high-water mark, with no Socket.IO session needed. (The
        session also cuts a slow consumer by its backlog, ``app.transport``.)"""
        self._write_blocked = True
        self._reading_changed()

    def resume_writing(self) -> None:
        self._write_blocked = False
        self._reading_changed()

    # -- frames ------------------------------------------------------------------

    def _frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == CONTINUATION:
            if self._message is None:
                self._fail(PROTOCOL_ERROR, "a continuation with no message")
                return
            self._message += payload
            if fin:
                message, self._message = bytes(self._message), None
                self._deliver(self._message_opcode, message)
        elif opcode in (TEXT, BINARY):
            if self._message is not None:
                self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
                return
            if fin:
                self._deliver(opcode, payload)
            else:
                self._message, self._message_opcode = bytearray(payload), opcode
        elif opcode == PING:
            self.write(frame(PONG, payload))
        elif opcode == CLOSE:
            problem = close_payload_problem(payload)
            if problem is not None:
                self._fail(*problem)
                return
            if self.transport is None:
                return
            if self._closing is False:  # the peer's Close: answer it, then end
                self.transport.write(frame(CLOSE, payload[:2]))
            elif isinstance(self._closing, asyncio.TimerHandle):  # its answer to ours
                self._closing.cancel()
            self._closing = True
            self.transport.close()
        elif opcode != PONG:
            self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")

    def _deliver(self, opcode: int, payload: bytes) -> None:
        if self._closing or self.listener is None:
            return  # the closing handshake has begun: no more messages
        if opcode == TEXT:
            try:
                self.listener.ws_message(payload.decode())
            except UnicodeDecodeError:
                self._fail(INVALID_DATA, "a text message that is not UTF-8")
        else:
            self.listener.ws_message(payload)

    def _fail(self, code: int, why: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): log, Close, end."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.warning("closing a WebSocket from %s: %s", peer, why)
        self._buffer = self._message = None
        if self._closing is False:
            self.close(code, wait=False)
        else:  # our Close is out already: no second one
            if isinstance(self._closing, asyncio.TimerHandle):
                self._closing.cancel()
            self._closing = True
            self.abort()
