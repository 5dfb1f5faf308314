"""One Engine.IO session's transport: how packets reach a client, fast.

python-engineio gives every session a queue and, once on WebSocket, a writer
task that takes packets off it one by one; python-socketio's broadcast starts
one more task per recipient to put the packet there. A room message to 100
members cost some 300 task steps and 100 frame encodings, and that, not
Python, capped fan-out at about 15,000 deliveries a second (``bench/``).
:class:`RoomcastSocket` replaces python-engineio's ``AsyncSocket`` (the
engine swaps the class of each new session, :meth:`RoomcastSocket.adopt`):

* **Direct WebSocket writes.** Once a session is on WebSocket, every packet
  is written to the connection's transport synchronously, in call order, as
  one frame (:func:`ws_frame`); a broadcast builds that frame once and writes
  the same bytes to every member (:meth:`RoomcastSocket.write`). No queue, no
  writer task, no per-recipient task. The frames of one turn of the event
  loop go out in one write per connection (:class:`Outbox`). The kernel and the event loop's
  transport buffer what the peer has not read yet; a peer whose buffer passes
  ``max_backlog_bytes`` is cut off as a slow consumer, so nobody else waits
  and memory stays bounded. Frames are sent uncompressed, which RFC 7692
  allows even when permessage-deflate was negotiated.
* **A lean reader.** The WebSocket reader awaits the next message directly
  (python-engineio wrapped every read in a new task and a ``wait_for``); dead
  peers are found by the heartbeat instead. It runs from the top of the
  request handler (:func:`run_websocket`), so python-engineio's handshake
  call chain, and what its frames hold, is freed once the connection is up.
* **Heartbeat on timers.** Pings and their timeout checks are event-loop
  timers, not a sleeping task per session (a task costs memory on every idle
  connection), and a silent peer is dropped as soon as its ping timeout
  passes (python-engineio's sweep could take up to another ping timeout).
* Long-polling keeps python-engineio's queue, metered in bytes
  (:class:`MeteredQueue`), and its POST bodies are read whole and checked.

This module reaches below python-engineio's public API (``AsyncSocket``
internals, ``_websocket_handler``, the aiohttp driver's ``WebSocket``);
``tests/test_transport.py`` fails loudly if the library changes under it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import engineio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver
from engineio.async_socket import AsyncSocket

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow_consumer"  # disconnect reason

_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode


def ws_frame(pkt: eio_packet.Packet) -> bytes:
    """An Engine.IO packet as one unmasked, uncompressed WebSocket frame.
    (Binary data is framed as it is, never through the packet's encoding
    cache, which holds base64 text if a long-polling session encoded it.)"""
    if pkt.binary:
        first, payload = _BINARY, bytes(pkt.data)
    else:
        first, payload = _TEXT, pkt.encode().encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class MeteredQueue(asyncio.Queue[Any]):
    """A long-polling session's outgoing queue that knows how many bytes it holds."""

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


class _Written:
    """The queue of a session that writes directly: always empty, since what
    is sent is written at once. One shared instance stands in for the
    asyncio.Queue (some 3 KB) each idle connection would otherwise keep."""

    bytes = 0

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def put_nowait(self, item: Any) -> None:
        """Nothing to wake: there is no writer task (python-engineio puts None)."""

    async def put(self, item: Any) -> None:
        """A packet sent after the connection ended: nowhere to go."""

    async def join(self) -> None:
        """Nothing is ever waiting to be written."""


WRITTEN = _Written()


# What a WebSocket's environ needs only for the handshake. The dict lives as long
# as the connection (python-socketio keeps it for the namespace handlers, which
# read REMOTE_ADDR and the forwarding headers, and for the Admin UI, which shows
# the other headers), so these go once the connection is up: about 1 KB each.
_HANDSHAKE_ONLY = frozenset({
    "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION", "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    "HTTP_UPGRADE", "HTTP_CONNECTION", "RAW_URI", "REQUEST_METHOD", "SCRIPT_NAME",
    "SERVER_SOFTWARE", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "REMOTE_PORT",
    "wsgi.input", "wsgi.errors", "wsgi.version", "wsgi.async", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once",
})


def _slim(environ: dict[str, Any]) -> None:
    kept = {key: value for key, value in environ.items() if key not in _HANDSHAKE_ONLY}
    environ.clear()  # frees the table sized for all of them
    environ.update(kept)


# the read loop a WebSocket handshake leaves on its request, for the handler to run
READER = web.RequestKey("roomcast_websocket_reader", Coroutine[Any, Any, None])


async def run_websocket(request: Any, response: Any) -> Any:
    """Run the read loop a WebSocket handshake left on ``request`` (if any), for
    the life of the connection, then return ``response`` to aiohttp."""
    reader = request.pop(READER, None)
    if reader is not None:
        await reader
    return response


def drop_websocket(request: Any) -> None:
    """The request failed after its handshake: close the read loop unrun."""
    reader = request.pop(READER, None)
    if reader is not None:
        reader.close()


class Outbox:
    """The sessions written to during this turn of the event loop. Each is
    flushed once at the end of the turn, so the frames a busy turn writes to
    one connection (a batch of stored messages, their acks) cost one system
    call rather than one each: under load the loop spends its time in Python,
    not in the kernel. Order is kept: every frame of a session goes through it."""

    def __init__(self) -> None:
        self._dirty: list[RoomcastSocket] = []

    def add(self, socket: RoomcastSocket) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(socket)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for socket in dirty:
            try:
                socket.flush()
            except Exception:  # one broken connection must not stall the others
                log.exception("eio_sid=%s: write failed; dropping the connection", socket.sid)
                socket._out = None
                if socket.transport is not None:
                    socket.transport.abort()


class RoomcastWebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """The aiohttp driver's WebSocket, logging why an incoming message was refused
    and closing on a frame that is not Engine.IO."""

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


class RoomcastSocket(AsyncSocket):  # type: ignore[misc]
    """python-engineio's session, with direct WebSocket writes and timer heartbeats."""

    # set by adopt(); class defaults keep mypy and a half-adopted socket honest
    transport: asyncio.Transport | None = None
    request: Any = None  # the aiohttp request that carries the connection
    _ws: Any = None  # the driver's WebSocket, once upgraded
    max_backlog_bytes = 4_000_000
    _out: list[bytes] | None = None  # frames written this turn of the loop
    _out_bytes = 0
    _ping_timer: asyncio.TimerHandle | None = None
    _pong_timer: asyncio.TimerHandle | None = None
    # python-engineio's attributes, typed
    last_ping: float | None
    queue: Any  # MeteredQueue, or WRITTEN once writes go direct
    connected: bool

    @classmethod
    def adopt(cls, socket: AsyncSocket, max_backlog_bytes: int) -> RoomcastSocket:
        """Turn a session python-engineio has just created into one of ours
        (before anything has been queued on it)."""
        socket.__class__ = cls
        assert isinstance(socket, RoomcastSocket)
        socket.queue = MeteredQueue()
        socket.max_backlog_bytes = max_backlog_bytes
        return socket

    # -- writing ------------------------------------------------------------

    @property
    def direct(self) -> bool:
        """On WebSocket: packets go straight to the transport."""
        return self.transport is not None

    def backlog_bytes(self) -> int:
        """Bytes written but not yet taken by the peer (or queued, on polling)."""
        if self.transport is not None:
            return int(self.transport.get_write_buffer_size())
        return int(getattr(self.queue, "bytes", 0))

    def write(self, frame: bytes) -> bool:
        """Write one WebSocket frame, in order, at the end of this turn of the
        event loop; False if the session cannot take it (its peer is too far
        behind: the caller cuts it off)."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return True  # nothing to cut: it is going anyway
        if self._out is None:
            if transport.get_write_buffer_size() > self.max_backlog_bytes:
                return False
            self._out = [frame]
            self._out_bytes = len(frame)
            self.server.outbox.add(self)
            return True
        self._out_bytes += len(frame)
        if self._out_bytes + transport.get_write_buffer_size() > self.max_backlog_bytes:
            return False
        self._out.append(frame)
        return True

    def flush(self) -> None:
        """Hand this turn's frames to the transport: one write, one system call."""
        out, self._out = self._out, None
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    async def send(self, pkt: eio_packet.Packet) -> None:
        if pkt.packet_type == eio_packet.OPEN and isinstance(pkt.data, dict):
            # python-engineio advertises int(ping_interval): 2.5 s became 2000 ms
            pkt.data["pingInterval"] = round(self.server.ping_interval * 1000)
        if not self.direct:
            await super().send(pkt)
            return
        if self.closed:
            return
        if not self.write(ws_frame(pkt)):
            await self.server.cut_slow_consumer(self)

    # -- heartbeat ----------------------------------------------------------

    def schedule_ping(self) -> None:
        if self.last_ping:  # only after the previous ping was answered
            self.last_ping = None
            self._ping_timer = asyncio.get_running_loop().call_later(
                self.server.ping_interval, self._ping_due)

    def _ping_due(self) -> None:
        self._ping_timer = None
        if self.closing or self.closed:
            return
        self.last_ping = sent = time.time()
        ping = eio_packet.Packet(eio_packet.PING)
        if not self.direct:
            self.queue.put_nowait(ping)
        elif not self.write(ws_frame(ping)):
            asyncio.ensure_future(self.server.cut_slow_consumer(self))
        self._pong_timer = asyncio.get_running_loop().call_later(
            self.server.ping_timeout + 0.05, self._pong_due, sent)

    def _pong_due(self, sent: float) -> None:
        self._pong_timer = None
        if self.last_ping == sent and not (self.closing or self.closed):
            asyncio.ensure_future(self.check_ping_timeout())  # closes: "ping timeout"

    def stop_timers(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    # -- long-polling -------------------------------------------------------

    async def handle_post_request(self, environ: dict[str, Any]) -> Any:
        """Read the whole POST body; a body that is not Engine.IO framing closes
        the session (python-engineio logged a traceback and kept it): raising
        EngineIOError makes it answer 400 and disconnect."""
        environ["wsgi.input"] = _ExactBody(environ["wsgi.input"])
        try:
            return await super().handle_post_request(environ)
        except engineio.exceptions.EngineIOError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
            log.warning("closing eio_sid=%s: invalid Engine.IO payload (%s)", self.sid, exc)
            raise engineio.exceptions.EngineIOError(str(exc)) from exc

    # -- WebSocket ----------------------------------------------------------

    async def _websocket_handler(self, ws: Any) -> None:
        """The handshake (or upgrade probe) here, at the bottom of python-engineio's
        call chain; the read loop is left for the top of the request handler to
        run (:func:`run_websocket`), so the chain's frames, and the handshake
        they hold, are not kept alive for as long as the connection lasts."""
        self.request = ws.environ["aiohttp.request"]
        if self.connected:  # an upgrade from long-polling: the probe first
            if not await self._probe(ws):
                return
        else:
            self.connected = True
        self.upgraded = True
        self._ws = ws
        _slim(ws.environ)
        self._go_direct()
        self.request[READER] = self._read(ws)

    async def _read(self, ws: Any) -> None:
        try:
            while not self.closed:
                data = await ws.wait()  # raises OSError once the connection ends
                if data and len(data) > self.server.max_http_buffer_size:
                    break
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=data))
                except engineio.exceptions.UnknownPacketError:
                    pass
        except OSError:
            pass  # the connection ended
        except engineio.exceptions.SocketIsClosedError:
            pass
        except Exception:
            log.exception("closing eio_sid=%s: error reading the WebSocket", self.sid)
        finally:
            self.transport = None
            await self.close(wait=False, abort=True,
                             reason=self.server.reason.TRANSPORT_CLOSE)
            await ws.close()

    async def _probe(self, ws: Any) -> bool:
        """The upgrade handshake, as python-engineio does it: PING probe -> PONG
        probe, end the pending poll, then UPGRADE."""
        self.upgrading = True  # hold packet sends during the upgrade
        try:
            pkt = eio_packet.Packet(encoded_packet=await ws.wait())
            if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
                log.info("eio_sid=%s: failed WebSocket upgrade, no probe", self.sid)
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the poll
            pkt = eio_packet.Packet(encoded_packet=await ws.wait())
            if pkt.packet_type != eio_packet.UPGRADE:
                log.info("eio_sid=%s: failed WebSocket upgrade, no UPGRADE", self.sid)
                return False
            return True
        except OSError:
            return False
        finally:
            self.upgrading = False

    def _go_direct(self) -> None:
        """Write what was queued while on long-polling, then switch to direct writes."""
        transport = self.request.transport if self.request is not None else None
        if transport is None:
            return
        frames = []
        while not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is not None:
                frames.append(ws_frame(pkt))
        if frames:
            transport.write(b"".join(frames))
        self.transport = transport
        self.queue = WRITTEN

    async def close(self, wait: bool = True, abort: bool = False,
                    reason: str | None = None) -> None:
        was_open = not (self.closed or self.closing)
        await super().close(wait=False if self.direct else wait, abort=abort, reason=reason)
        self.stop_timers()
        if was_open and self.transport is not None:
            # the reader is waiting on the socket: end the connection with a
            # closing handshake (our CLOSE packet, if any, is written first)
            self.flush()
            self.transport = None
            asyncio.ensure_future(self._ws.close())
