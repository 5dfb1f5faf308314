"""One WebSocket connection after its handshake, driven by the event loop.

For as long as a WebSocket served through aiohttp lasts, aiohttp keeps its
request handler, the parsed request, a ``WebSocketResponse`` and two tasks:
about 9 KB of the 19 KB an idle connection once cost (``bench/``, S2), none
of which Engine.IO needs once the connection is up. After the handshake
(:mod:`app.ws.handshake`) a connection costs its transport and one
:class:`WebSocketConnection`.

It reads frames (masked, possibly fragmented), answers pings and the closing
handshake, hands each whole message to its listener (an Engine.IO session)
and fails the connection on anything RFC 6455 forbids, logging why ("closing
a WebSocket: ..."). It writes what it is given; framing outgoing messages is
the caller's (:func:`app.ws.frames.frame`). Reading pauses while the listener
is behind, so nothing a peer sends makes us buffer without bound.

Reading goes on while the peer is slow to read what we write: a slow reader
must still be heard (its pongs, its requests to catch up). What it can make
us write by itself stays bounded: while the transport holds unsent data, a
ping is answered by one pong, for the latest ping, once it has drained (as
RFC 6455 section 5.5.3 allows); the listener bounds the rest (its backlog).
The transport hands data on to the kernel as soon as it can (its high-water
mark is 0): what waits, waits with the listener, told by :meth:`ws_writable`
when to write again, and the kernel holds at most the socket's send buffer
(``send_buffer``, see :func:`app.ws.handshake.take_over`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Protocol

from .frames import (
    BINARY, CLOSE, CONTINUATION, FIN, INVALID_DATA, NORMAL, PING, PONG, PROTOCOL_ERROR, TEXT,
    TOO_BIG, close_payload_problem, frame, unmask,
)

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds to wait for the peer's answer to our Close
PAUSE_BYTES = 1 << 16  # a listener this far behind stops reading from its peer


class Listener(Protocol):
    """Who gets a connection's messages (an Engine.IO session)."""

    def ws_message(self, data: str | bytes) -> None: ...

    def ws_closed(self) -> None: ...

    def ws_writable(self, writable: bool) -> None: ...


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


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket connection after its handshake, fed by the event loop."""

    __slots__ = ("transport", "listener", "_registry", "max_size", "_buffer", "_message",
                 "_message_opcode", "_closing", "_paused", "_write_blocked", "_pong_owed")

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
        self._write_blocked = False  # the transport holds data the kernel has not taken
        self._pong_owed: bytes | None = None  # the latest ping's, while blocked
        transport.set_write_buffer_limits(high=0)  # pause_writing as soon as it holds any
        registry.add(self)

    # -- the listener's side ---------------------------------------------------

    def feed_later(self, data: bytes) -> None:
        """Bytes that arrived with the handshake: read once someone listens."""
        self._buffer = bytearray(data)

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
        """Read from the peer only while the listener's inbox is not full."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._paused:
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
            if opcode >= CLOSE and (length > 125 or not first & FIN):
                self._fail(PROTOCOL_ERROR, "a fragmented or long control frame")
                return
            if length + len(self._message or b"") > self.max_size:
                self._fail(TOO_BIG, f"a message over {self.max_size} bytes")
                return
            if end - head < 4 + length:
                break
            payload = unmask(bytes(buf[head:head + 4]), bytes(buf[head + 4:head + 4 + length]))
            pos = head + 4 + length
            self._frame(bool(first & FIN), opcode, payload)
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
        """The kernel did not take all we wrote: the peer is slower than we are."""
        self._write_blocked = True
        if self.listener is not None:
            self.listener.ws_writable(False)

    def resume_writing(self) -> None:
        """All we wrote is with the kernel: the owed pong, then the listener's."""
        self._write_blocked = False
        pong, self._pong_owed = self._pong_owed, None
        if pong is not None:
            self.write(frame(PONG, pong))
        if self.listener is not None and not self._write_blocked:
            self.listener.ws_writable(True)

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
            if self._write_blocked:
                self._pong_owed = payload  # one pong, for the latest ping, once drained
            else:
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
