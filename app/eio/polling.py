"""HTTP long-polling: the handshake, one GET at a time, POST bodies.

Requests come from the front door (:mod:`app.eio.front`, which reads plain ones
itself) or from aiohttp (the unusual ones); both look alike here.

The protocol's rules (``docs/engine.io-protocol/v4-current.md``, "HTTP
long-polling"), each tested on the wire in ``tests/wire/test_eio_protocol.py``:

* a GET waits until something is queued and answers it in one body, up to
  ``max_poll_packets`` packets (python-engineio's client refuses more than
  16 and disconnects); packets queued in one turn of the loop leave together;
* a second GET while one waits, or a second POST while one is read, is
  answered 400 and the session is closed;
* a GET the client gives up on (its connection closes) closes the session at
  once, not at the ping timeout;
* a POST body is read whole, up to ``maxPayload`` bytes, and must be
  Engine.IO framing: otherwise 400 and the session is closed; it is answered
  ``ok`` once its packets are queued for handling (and, if the session is
  behind in handling them, once it has caught up);
* a session the client closes answers its waiting GET with a NOOP; one the
  server closes, with CLOSE; one of a server going away, with 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import packets
from .packets import PacketError
from .session import POLLING

if TYPE_CHECKING:
    from .server import EngineServer, LiveSession

log = logging.getLogger(__name__)

TEXT_PLAIN = "text/plain; charset=UTF-8"


def _answer(body: str, cors: dict[str, str]) -> web.Response:
    return web.Response(body=body.encode(), headers={**cors, "Content-Type": TEXT_PLAIN})


async def open_session(engine: EngineServer, request: Any,
                       cors: dict[str, str]) -> web.StreamResponse:
    """A new long-polling session: its OPEN is the body of the answer."""
    session = engine.new_session(request, POLLING)
    if not await engine.connected(session):
        return web.Response(status=401, text="refused", headers=cors)
    return _answer(session.open_packet(engine.upgrades), cors)


Reply = Callable[[web.Response], bool]
"""Hands a poll's answer to its connection; False if the connection is gone."""


def start_poll(engine: EngineServer, session: LiveSession, cors: dict[str, str],
               reply: Reply) -> asyncio.Future[str | None]:
    """Begin answering a GET, with no task of its own: ``reply`` gets the answer
    in a later turn of the loop, once something is queued. The future returned
    is the waiting poll: cancelling it (its client left) closes the session."""
    waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    if session.poll_waiter is not None:
        log.warning("closing eio_sid=%s: a second concurrent poll", session.sid)
        engine.close(session, engine.reason.TRANSPORT_ERROR, goodbye=False)
        refusal = web.Response(status=400, text="a poll is already waiting", headers=cors)
        waiter.add_done_callback(lambda w: w.cancelled() or reply(refusal))
        waiter.set_result(None)
        return waiter
    if session.upgrading == "5":  # probed: the client has paused polling
        waiter.set_result(packets.NOOP_TEXT)
    elif session.queued or session.closed:
        waiter.set_result(None)
    else:
        session.poll_waiter = waiter  # the heartbeat's ping comes within ping_interval
    waiter.add_done_callback(lambda w: _polled(engine, session, cors, reply, w))
    return waiter


def _polled(engine: EngineServer, session: LiveSession, cors: dict[str, str], reply: Reply,
            waiter: asyncio.Future[str | None]) -> None:
    if session.poll_waiter is waiter:
        session.poll_waiter = None
    if waiter.cancelled():  # the client closed the connection, or the server is stopping
        if not session.closed:
            log.info("closing eio_sid=%s: its poll was cut", session.sid)
            engine.close(session, engine.reason.TRANSPORT_CLOSE, goodbye=False)
        return
    if engine.going_away and session.closed:
        answer = web.Response(
            status=503, text="server going away; reconnect", headers=cors)
    else:
        batch = session.take()
        if session.closed and not session.queued:
            engine.forget(session)
        elif session.skipping and session.resume_due(0):
            engine.caught_up(session)
        if not batch:
            batch = [waiter.result()
                     or (packets.CLOSE_TEXT if session.closed else packets.NOOP_TEXT)]
        answer = _answer(packets.encode_payload(batch), cors)
    if not reply(answer) and not session.closed:  # taken, but its connection went
        log.info("closing eio_sid=%s: its poll was cut", session.sid)
        engine.close(session, engine.reason.TRANSPORT_CLOSE, goodbye=False)


async def poll(engine: EngineServer, session: LiveSession, request: Any,
               cors: dict[str, str]) -> web.StreamResponse:
    """:func:`start_poll` for a caller that awaits the answer (aiohttp's handlers)."""
    answered: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()

    def reply(response: web.Response) -> bool:
        if answered.done():  # cancelled: the handler is gone
            return False
        answered.set_result(response)
        return True

    waiter = start_poll(engine, session, cors, reply)
    try:
        return await answered
    except asyncio.CancelledError:
        waiter.cancel()
        raise


async def post(engine: EngineServer, session: LiveSession, request: Any,
               cors: dict[str, str]) -> web.StreamResponse:
    if session.posting:
        log.warning("closing eio_sid=%s: a second concurrent POST", session.sid)
        engine.close(session, engine.reason.TRANSPORT_ERROR, goodbye=False)
        return web.Response(status=400, text="a POST is already being read", headers=cors)
    limit = engine.max_http_buffer_size
    if (request.content_length or 0) > limit:
        log.warning("closing eio_sid=%s: a POST of %d bytes, over the %d-byte limit",
                    session.sid, request.content_length, limit)
        engine.close(session, engine.reason.TRANSPORT_ERROR, goodbye=False)
        return web.Response(status=413, text=f"over the {limit}-byte limit", headers=cors)
    session.posting = True
    try:
        body = await _read(request, limit)
    finally:
        session.posting = False
    try:
        if body is None:
            raise PacketError(f"a POST body over the {limit}-byte limit")
        received = packets.decode_payload(body.decode(), engine.limits.max_payload_packets)
    except (PacketError, UnicodeDecodeError) as exc:
        log.warning("closing eio_sid=%s: invalid Engine.IO payload (%s)", session.sid, exc)
        engine.close(session, engine.reason.TRANSPORT_ERROR, goodbye=False)
        return web.Response(status=400, text="invalid Engine.IO payload", headers=cors)
    for packet in received:
        if session.closed or not engine.incoming(session, packet):
            break
    while engine.behind(session) and session.pump is not None and not session.closed:
        await asyncio.shield(session.pump)  # the client's next POST waits for us
    return _answer("ok", cors)


async def _read(request: Any, limit: int) -> bytes | None:
    """The whole body, or None if it is longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
