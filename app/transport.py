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
  and memory stays bounded.
* **No reader task.** A WebSocket connection is taken over once its handshake
  is answered (:mod:`app.websocket`), and its messages come to
  :meth:`RoomcastSocket.ws_message` from the event loop: a task handles them
  only while some are waiting (python-engineio kept a reader task, and wrapped
  every read in one more task and a ``wait_for``). An idle connection has no
  task at all; dead peers are found by the heartbeat.
* **Heartbeat on timers.** Pings and their timeout checks are event-loop
  timers, not a sleeping task per session (a task costs memory on every idle
  connection), and a silent peer is dropped as soon as its ping timeout
  passes (python-engineio's sweep could take up to another ping timeout).
* Long-polling keeps python-engineio's queue, metered in bytes
  (:class:`MeteredQueue`), and its POST bodies are read whole and checked.

This module reaches below python-engineio's public API (``AsyncSocket``
internals, ``_upgrade_websocket``) through :mod:`app.compat`, which checks
each name at import; ``tests/test_transport.py`` tests the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import engineio
from aiohttp import web
from engineio import packet as eio_packet

from . import compat
from .websocket import (
    BINARY, NORMAL, PAUSE_BYTES, TEXT, HandedOff, WebSocketConnection, frame, take_over,
)

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow_consumer"  # disconnect reason


def ws_frame(pkt: eio_packet.Packet) -> bytes:
    """An Engine.IO packet as one unmasked, uncompressed WebSocket frame.
    (Binary data is framed as it is, never through the packet's encoding
    cache, which holds base64 text if a long-polling session encoded it.)"""
    if pkt.binary:
        return frame(BINARY, bytes(pkt.data))
    return frame(TEXT, pkt.encode().encode())


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


class HeldPackets(list[Any]):
    """A new session's queue until its transport is known: a list. What a new
    WebSocket session sends before its handshake is answered (its OPEN) waits
    here and leaves with the 101; a long-polling session gets a MeteredQueue.
    (An asyncio.Queue, built and dropped on every connect, cost more.)"""

    bytes = 0

    def qsize(self) -> int:
        return len(self)

    def empty(self) -> bool:
        return not self

    def put_nowait(self, item: Any) -> None:
        self.append(item)

    async def put(self, item: Any) -> None:
        self.append(item)

    def get_nowait(self) -> Any:
        return self.pop(0)

    def task_done(self) -> None:
        """Nothing waits on it."""

    async def join(self) -> None:
        """Nothing waits on it."""


# What a WebSocket's environ needs only for the handshake. The dict lives as long
# as the connection (python-socketio keeps it for the namespace handlers, which
# read REMOTE_ADDR and the forwarding headers, and for the Admin UI, which shows
# the other headers), so these go once the connection is up: about 1 KB each.
_HANDSHAKE_ONLY = frozenset({
    "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_VERSION", "HTTP_SEC_WEBSOCKET_EXTENSIONS",
    "HTTP_UPGRADE", "HTTP_CONNECTION", "RAW_URI", "REQUEST_METHOD", "SCRIPT_NAME",
    "SERVER_SOFTWARE", "SERVER_PROTOCOL", "SERVER_NAME", "SERVER_PORT", "REMOTE_PORT",
    "wsgi.input", "wsgi.errors", "wsgi.version", "wsgi.async", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "aiohttp.request",
})


def _slim(environ: dict[str, Any]) -> None:
    kept = {key: value for key, value in environ.items() if key not in _HANDSHAKE_ONLY}
    environ.clear()  # frees the table sized for all of them
    environ.update(kept)


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


class _ExactBody:
    """``wsgi.input`` whose ``read(n)`` returns all ``n`` bytes. python-engineio
    reads a POST with one ``read(content_length)``, and aiohttp's stream returns
    only what has arrived so far: a body over ~64 KB was cut short."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await (self._stream.readexactly(n) if n >= 0 else self._stream.read())
        return data


class RoomcastSocket(compat.EngineSocket):  # type: ignore[misc]
    """python-engineio's session, with direct WebSocket writes and timer heartbeats."""

    # set by adopt(); class defaults keep mypy and a half-adopted socket honest
    transport: asyncio.Transport | None = None  # set while writes go direct
    request: Any = None  # a long-polling session's first request (cut off through it)
    _ws: WebSocketConnection | None = None  # the WebSocket, once one is taken over
    _probe: str | None = None  # the upgrade message expected next, while upgrading
    _inbox: list[str | bytes] | None = None  # messages read, not yet handled
    _inbox_bytes = 0
    _pump: asyncio.Future[None] | None = None  # handles the inbox while it has any
    max_backlog_bytes = 4_000_000
    _out: list[bytes] | None = None  # frames written this turn of the loop
    _out_bytes = 0
    _ping_timer: asyncio.TimerHandle | None = None
    _pong_timer: asyncio.TimerHandle | None = None
    # python-engineio's attributes, typed
    last_ping: float | None
    queue: Any  # MeteredQueue, or WRITTEN once writes go direct
    connected: bool
    upgraded: bool
    upgrading: bool

    @classmethod
    def adopt(cls, socket: compat.EngineSocket, max_backlog_bytes: int,
              transport: str) -> RoomcastSocket:
        """Turn a session python-engineio has just created into one of ours
        (before anything has been queued on it)."""
        socket.__class__ = cls
        assert isinstance(socket, RoomcastSocket)
        if transport != "websocket":
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

    def abort(self) -> None:
        """Drop this session's connection at once, unsent data and all."""
        if self._ws is not None:
            self._ws.abort()
        elif self.request is not None and self.request.transport is not None:
            self.request.transport.abort()

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

    async def poll(self) -> list[Any]:
        """What one long-poll GET answers: the packets queued, up to the server's
        ``max_poll_packets`` (the rest wait for the next GET). python-engineio
        answered everything queued, and its own client refuses a payload of more
        than 16 packets and disconnects ("transport error"): a stock python-socketio
        client on polling lost a busy room, and every ack of a burst of calls."""
        limit = self.server.max_poll_packets or None
        try:
            first = await asyncio.wait_for(
                self.queue.get(), self.server.ping_interval + self.server.ping_timeout)
            self.queue.task_done()
        except (asyncio.TimeoutError, asyncio.CancelledError):
            raise engineio.exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while not self.queue.empty() and (limit is None or len(packets) < limit):
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is None:  # the session is closing: the next GET gets nothing more
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

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

    async def handle_get_request(self, environ: dict[str, Any]) -> Any:
        """A WebSocket request is one whatever its Connection header says (which
        :func:`take_over` checks): python-engineio served a new WebSocket session
        whose request lacked ``Connection: upgrade`` as a poll, and failed (500)."""
        if (environ.get("HTTP_UPGRADE", "").lower() == "websocket"
                and "transport=websocket" in environ.get("QUERY_STRING", "")):
            return await self._upgrade_websocket(environ)
        return await super().handle_get_request(environ)

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        """A WebSocket request for this session: a new connection, or an upgrade
        from long-polling. Answer its handshake and take the connection over
        (:func:`app.websocket.take_over`); the request handler returns at once,
        and what arrives is read by the connection (:meth:`ws_message`)."""
        request = environ["aiohttp.request"]
        if self.upgraded or self._ws is not None:
            log.info("eio_sid=%s: refused a second WebSocket", self.sid)
            return web.Response(status=400, text="already upgraded")
        # a new session's OPEN goes out with the 101, in one write
        first = b"" if self.connected else self._queued_frames()
        try:
            connection = take_over(request, self.server.connections,
                                   self.server.max_http_buffer_size, then=first)
        except (web.HTTPException, ConnectionResetError) as exc:
            log.info("eio_sid=%s: WebSocket handshake refused (%s)", self.sid, exc)
            if not self.connected:  # the session was for this connection alone
                await self.close(wait=False, abort=True,
                                 reason=self.server.reason.TRANSPORT_ERROR)
            if isinstance(exc, web.HTTPException):
                return web.Response(status=exc.status, text=exc.text, headers=exc.headers)
            return HandedOff()
        self._ws = connection
        if self.connected:  # from long-polling: PING probe -> PONG probe -> UPGRADE
            self.upgrading = True  # (polling GETs are answered NOOP meanwhile)
            self._probe = "2probe"
        else:
            self.connected = self.upgraded = True
            self.request = None  # what a polling session is cut off through
            _slim(environ)
            self._go_direct()
        connection.listen(self)
        return HandedOff()

    def ws_message(self, data: str | bytes) -> None:
        """A whole message from the WebSocket, in order. Engine.IO packets are
        handled one after another by a task that lives while any are waiting
        (an idle connection has none); a peer that sends faster than they are
        handled stops being read."""
        if self._probe is not None:
            self._upgrade_step(data)
            return
        if self.closed:
            return
        if isinstance(data, str) and not (data and data[0] in "0123456"):
            # not Engine.IO: python-engineio raised out of its handler (a
            # traceback, and a session left open until the heartbeat)
            log.warning("closing a WebSocket: invalid Engine.IO packet %r", data[:20])
            if self._ws is not None:
                self._ws.abort()  # no closing handshake with a peer that speaks garbage
            return
        if self._inbox is None:
            self._inbox = [data]
        else:
            self._inbox.append(data)
        self._inbox_bytes += len(data)
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._handle_inbox())
        elif self._inbox_bytes > PAUSE_BYTES and self._ws is not None:
            self._ws.pause_reading()

    async def _handle_inbox(self) -> None:
        try:
            while self._inbox and not self.closed:
                batch, self._inbox, self._inbox_bytes = self._inbox, None, 0
                if self._ws is not None:
                    self._ws.resume_reading()
                for data in batch:
                    if self.closed:
                        break
                    try:
                        await self.receive(eio_packet.Packet(encoded_packet=data))
                    except engineio.exceptions.UnknownPacketError:
                        pass  # e.g. a NOOP: skipped, and the rest still handled
        except engineio.exceptions.SocketIsClosedError:
            pass
        except Exception:
            log.exception("closing eio_sid=%s: error reading the WebSocket", self.sid)
            if self._ws is not None:
                self._ws.abort()
        finally:
            self._pump = None
            self._inbox = None
            if self._ws is None and not self.closed:  # the peer left meanwhile
                await self._transport_closed()

    def ws_closed(self) -> None:
        """The connection ended (the peer left, or its closing handshake is done)."""
        self._ws = None
        if self._probe is not None:  # a failed upgrade: the session stays on polling
            self._probe = None
            self.upgrading = False
            return
        self.transport = None
        if self._pump is None and not self.closed:  # else it closes once drained
            asyncio.ensure_future(self._transport_closed())

    async def _transport_closed(self) -> None:
        self.stop_timers()
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)

    def _upgrade_step(self, data: str | bytes) -> None:
        """One message of the upgrade handshake, as python-engineio does it: answer
        the probe and end the pending poll; on UPGRADE, switch to direct writes."""
        connection = self._ws
        assert connection is not None
        if self._probe == "2probe" and data == "2probe":
            connection.write(ws_frame(eio_packet.Packet(eio_packet.PONG, data="probe")))
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the poll
            self._probe = "5"
            return
        self._probe = None
        self.upgrading = False
        if data == "5" and not self.closed:
            self.upgraded = True
            self._go_direct()
            return
        log.info("eio_sid=%s: failed WebSocket upgrade (got %r)", self.sid, data[:20])
        self._ws = None
        connection.listener = None
        connection.close(wait=False)

    def _queued_frames(self) -> bytes:
        """Take what is queued, as WebSocket frames."""
        frames = []
        while not self.queue.empty():
            pkt = self.queue.get_nowait()
            self.queue.task_done()
            if pkt is not None:
                frames.append(ws_frame(pkt))
        return b"".join(frames)

    def _go_direct(self) -> None:
        """Write what was queued while on long-polling, then switch to direct writes."""
        transport = self._ws.transport if self._ws is not None else None
        if transport is None:
            return
        frames = self._queued_frames()
        if frames:
            transport.write(frames)
        self.transport = transport
        self.queue = WRITTEN

    async def close(self, wait: bool = True, abort: bool = False,
                    reason: str | None = None, ws_code: int = NORMAL) -> None:
        """End the session: its Engine.IO CLOSE packet unless ``abort``, then on
        WebSocket the closing handshake with ``ws_code``."""
        await super().close(wait=False if self.direct else wait, abort=abort, reason=reason)
        self.stop_timers()
        connection, self._ws = self._ws, None
        if connection is not None:
            # our CLOSE packet (if any) first, then the WebSocket closing handshake
            self.flush()
            self.transport = None
            connection.listener = None
            connection.close(ws_code)
