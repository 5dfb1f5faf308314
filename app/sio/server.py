"""Roomcast's Socket.IO v5 server: python-socketio's ``AsyncServer`` on our engine.

:class:`RoomcastServer` runs python-socketio on Roomcast's own Engine.IO
server (:mod:`app.eio`) through its one seam, ``_engineio_server_class``,
and changes what the Socket.IO protocol (socketio/socket.io,
``docs/socket.io-protocol/v5-current.md``) or a chat server needs, each
covered by ``tests/wire/test_engine.py`` and ``tests/wire/test_sio_protocol.py``:

* **The CONNECT acknowledgement comes first.** python-socketio runs the
  namespace's connect handler before it sends CONNECT, so whatever the
  handler emits reached the client before the client knew it was connected
  (socket.io-client drops such packets). What the handler sends is held and
  follows the CONNECT; if the connect is refused it is dropped.
* **A refused connect says why in v5's form**: ``{"message": ...}``.
  python-socketio sent a bare string for an unknown namespace, which
  socket.io-client 4 shows as an empty message.
* **Reserved event names** (``connect``, ``disconnect``, ...) sent by a
  client are refused, with the reply the application gives
  (``refuse_event``), instead of running the connect or disconnect handler.
  A nameless event is refused the same way.
* **Invalid Socket.IO framing closes the connection**, as the protocol asks
  (python-socketio logged a traceback and kept it, and took ``42{}``, an EVENT
  whose payload is not an array, as an event with no name).
* **Sessions that never join a namespace** are closed after
  ``connect_timeout`` seconds (one timer serves them all).
* **The client manager starts at boot** (:meth:`start_manager`), so a Redis
  fan-out node subscribes before it says healthy.
* **Broadcasts encode once** (:meth:`broadcast`): python-socketio started a
  task per recipient.
* **A reader that falls behind can catch up rather than be cut**
  (:meth:`catch_up_when_behind`): the engine drops what a broadcast marked
  droppable for it, and once it has drained each of its namespaces hears of
  it (the handler's ``caught_up(sid)``), to tell the client what to fetch.
* **Each connection has at most ``max_events_in_progress`` events handled
  at once.** An event's handler runs in a task of its own, started in
  arrival order, as python-socketio's did; past the bound the connection's
  next event waits for one to finish, so the engine stops reading that
  WebSocket (or its POST waits) and nothing is dropped. A failure in a
  handler is logged with its traceback; only packets that do not decode are
  blamed on the peer.

It reaches below python-socketio's public API through :mod:`app.compat`
(``_engineio_server_class``, ``_handle_eio_connect``, ``_handle_connect``,
``_handle_eio_message``, ``_handle_eio_disconnect``, ``_handle_event``,
``_send_packet``); each name is checked at import.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from socketio import packet

from .. import compat
from ..eio.server import EngineServer

log = logging.getLogger(__name__)

RESERVED_EVENTS = frozenset({
    "connect", "connect_error", "disconnect", "disconnecting",
    "newListener", "removeListener",
})


class HandlerFailed(Exception):
    """A handler raised (a bug of the server's): not the peer's packet's fault."""


def _no_reply(reason: str) -> list[Any]:
    return []


class RoomcastServer(compat.SocketIOServer):  # type: ignore[misc]
    manager_initialized: bool
    eio: EngineServer

    def __init__(self, *args: Any, connect_timeout: float = 45.0,
                 max_backlog_packets: int = 1000, max_backlog_bytes: int = 1_000_000,
                 max_node_backlog_bytes: int = 0, max_poll_packets: int = 16,
                 send_buffer: int = 65536, max_events_in_progress: int = 50,
                 refuse_event: Callable[[str], list[Any]] = _no_reply, **kwargs: Any) -> None:
        # handlers run inline in python-socketio's _handle_event; we start the
        # task per event ourselves (see _handle_event), bounded per connection
        kwargs["async_handlers"] = False
        super().__init__(*args, **kwargs)
        self.max_events_in_progress = max_events_in_progress
        self._in_progress: dict[str, int] = {}  # eio_sid -> its events being handled
        self._slot_free: dict[str, asyncio.Future[None]] = {}  # eio_sid -> its next waits
        self._event_tasks: set[asyncio.Task[None]] = set()
        self.connect_timeout = connect_timeout
        self.max_backlog_packets = max_backlog_packets
        self.max_backlog_bytes = max_backlog_bytes
        self.refuse_event = refuse_event
        self.eio.on("caught_up", self._handle_caught_up)
        self.eio.configure(max_backlog_packets=max_backlog_packets,
                           max_backlog_bytes=max_backlog_bytes,
                           max_node_backlog_bytes=max_node_backlog_bytes,
                           max_poll_packets=max_poll_packets, send_buffer=send_buffer)
        # sessions not yet in a namespace -> when they must be; in connect order,
        # so also in deadline order: one timer serves them all (see _deadlines_due)
        self._unjoined: OrderedDict[str, float] = OrderedDict()
        self._deadline_timer: asyncio.TimerHandle | None = None
        # sessions whose connect handler is running -> what it sent meanwhile
        self._connecting: dict[str, list[str | bytes]] = {}

    def _engineio_server_class(self) -> type:
        return EngineServer

    # -- connecting ------------------------------------------------------------

    async def _handle_eio_connect(self, eio_sid: str, environ: Any) -> None:
        await super()._handle_eio_connect(eio_sid, environ)
        loop = asyncio.get_running_loop()
        self._unjoined[eio_sid] = deadline = loop.time() + self.connect_timeout
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadline, self._deadlines_due)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        namespace = namespace or "/"
        held = self._connecting.setdefault(eio_sid, [])
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        except Exception as exc:
            raise HandlerFailed from exc
        finally:
            self._connecting.pop(eio_sid, None)
        if self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
            self._unjoined.pop(eio_sid, None)  # joined: no deadline now
            for part in held:  # what the connect handler sent, after the CONNECT
                await self.eio.send(eio_sid, part)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        kind = pkt.packet_type
        if kind == packet.CONNECT_ERROR and not isinstance(pkt.data, dict):
            pkt.data = {"message": "Invalid namespace" if pkt.data == "Unable to connect"
                        else str(pkt.data)}
        held = self._connecting.get(eio_sid)
        if held is not None and kind not in (packet.CONNECT, packet.CONNECT_ERROR):
            encoded = pkt.encode()
            held.extend(encoded if isinstance(encoded, list) else [encoded])
            return
        await super()._send_packet(eio_sid, pkt)

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
        session = self.eio.sockets.get(eio_sid)
        if not joined and session is not None:
            log.info("closing eio_sid=%s: no namespace joined within %g s",
                     eio_sid, self.connect_timeout)
            self.eio.close(session, self.reason.SERVER_DISCONNECT)

    # -- receiving ---------------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except HandlerFailed as exc:  # our code, not the peer's packet
            log.error("closing eio_sid=%s: the connect handler failed", eio_sid,
                      exc_info=exc.__cause__)
            session = self.eio.sockets.get(eio_sid)
            if session is not None:
                self.eio.close(session, self.reason.SERVER_DISCONNECT)
        except Exception as exc:  # undecodable or out-of-protocol packet
            log.warning("closing eio_sid=%s: invalid Socket.IO packet (%s: %s)",
                        eio_sid, type(exc).__name__, exc)
            session = self.eio.sockets.get(eio_sid)
            if session is not None:
                self.eio.close(session, self.reason.TRANSPORT_ERROR)

    async def _event_slot(self, eio_sid: str) -> None:
        """Wait until ``eio_sid`` has fewer than the bound of events in progress,
        and count one more. (One caller per session at a time: the engine hands
        a session's messages over one after another.)"""
        while self._in_progress.get(eio_sid, 0) >= self.max_events_in_progress:
            waiter = self._slot_free[eio_sid] = asyncio.get_running_loop().create_future()
            await waiter
        self._in_progress[eio_sid] = self._in_progress.get(eio_sid, 0) + 1

    async def _run_event(self, eio_sid: str, namespace: str | None, id: int | None,
                         data: list[Any]) -> None:
        await super()._handle_event(eio_sid, namespace, id, data)

    def _event_done(self, eio_sid: str, task: asyncio.Task[None]) -> None:
        self._event_tasks.discard(task)
        left = self._in_progress.get(eio_sid, 1) - 1
        if left > 0:
            self._in_progress[eio_sid] = left
        else:
            self._in_progress.pop(eio_sid, None)
        waiter = self._slot_free.pop(eio_sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not task.cancelled() and task.exception() is not None:
            log.error("eio_sid=%s: an event's handler failed", eio_sid,
                      exc_info=task.exception())

    def events_in_progress(self, eio_sid: str) -> int:
        return self._in_progress.get(eio_sid, 0)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: str) -> None:
        self._unjoined.pop(eio_sid, None)
        self._connecting.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None,
                            data: Any) -> None:
        if not isinstance(data, list):  # e.g. 42{}: an EVENT's payload MUST be an array
            log.warning("closing eio_sid=%s: an EVENT whose payload is not an array", eio_sid)
            session = self.eio.sockets.get(eio_sid)
            if session is not None:
                self.eio.close(session, self.reason.TRANSPORT_ERROR)
            return
        event = data[0] if data else None
        if isinstance(event, str) and event not in RESERVED_EVENTS:
            await self._event_slot(eio_sid)
            task = asyncio.ensure_future(self._run_event(eio_sid, namespace, id, data))
            self._event_tasks.add(task)
            task.add_done_callback(lambda done: self._event_done(eio_sid, done))
            return
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        log.debug("refused event %r from sid=%s", event, sid)
        if id is None or not self.manager.is_connected(sid, namespace):
            return
        reason = (f"{event!r} is a reserved event name" if isinstance(event, str)
                  else "an event needs a name")
        await self._send_packet(eio_sid, self.packet_class(
            packet.ACK, namespace=namespace, id=id, data=self.refuse_event(reason)))

    # -- sending ------------------------------------------------------------------

    async def broadcast(self, eio_sids: Iterable[str], payload: str | bytes,
                        droppable: bool = False) -> None:
        """Send one encoded Socket.IO packet to many sessions (the engine writes
        the same WebSocket frame to each); ``droppable``: a session catching up
        may drop it (see :meth:`catch_up_when_behind`)."""
        if self._connecting:
            eio_sids = list(eio_sids)
            for eio_sid in eio_sids:
                held = self._connecting.get(eio_sid)
                if held is not None:
                    held.append(payload)
            eio_sids = [s for s in eio_sids if s not in self._connecting]
        await self.eio.broadcast(eio_sids, payload, droppable)

    # -- readers that fall behind ------------------------------------------------------

    def catch_up_when_behind(self, sid: str, namespace: str) -> None:
        """Connection ``sid`` of ``namespace`` fetches again what it misses: past
        its backlog bound it skips droppable events rather than being cut
        (:meth:`EngineServer.catch_up_when_behind`)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            self.eio.catch_up_when_behind(eio_sid)

    async def _handle_caught_up(self, eio_sid: str) -> None:
        """A session that skipped has drained: each namespace it is connected to
        whose handler has ``caught_up`` is told, with its sid there."""
        for namespace, handler in list(self.namespace_handlers.items()):
            sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
            caught_up = getattr(handler, "caught_up", None)
            if sid is not None and caught_up is not None:
                await caught_up(sid)

    def backlog(self, eio_sid: str) -> int:
        return self.eio.backlog(eio_sid)

    def lagging(self, eio_sid: str) -> bool:
        return self.eio.lagging(eio_sid)

    # -- running -------------------------------------------------------------------

    def start_manager(self) -> None:
        """Start the client manager now rather than at the first connection, so
        that a Redis fan-out node subscribes (and can report health) at boot."""
        if not self.manager_initialized:
            self.manager_initialized = True
            self.manager.initialize()

    async def close_all_sessions(self, over: float = 0.0) -> int:
        """Close every session so that clients reconnect, spread over ``over``
        seconds (see EngineServer.close_all)."""
        return await self.eio.close_all(over)
