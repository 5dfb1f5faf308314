"""``ChatClient``: python-socketio's ``AsyncClient`` with Roomcast's guarantees.

* **Every message and change once, in order.** A room's seq numbers its
  stream: messages and the changes made to them (edits, deletes, reactions).
  For each joined room the client keeps the last seq it handed over (a
  message to ``on_message``, a change to ``on_change``). An entry at or below
  it is a duplicate and dropped; one beyond ``last + 1`` reveals a gap, which
  is filled from ``history`` first. After a reconnect the client rejoins each
  room with ``since = last`` and pages forward until it has caught up; told
  by the server to catch up (``catch_up``: its link to the other nodes may
  have lost events, or this client read slower than its rooms spoke), it
  pages forward to the seq the server names.
* **Never cut for reading slowly.** It connects with ``auth.catch_up``: when
  it falls behind its rooms, the server stops sending it live events rather
  than disconnecting it, and once it has read what was sent it gets a
  ``catch_up`` per room; it pages history from where it is, at its own pace.
* **Sends and changes are never lost or doubled.** ``send`` (and ``reply``,
  ``edit``, ``delete``, ``react``, ``unreact``) picks a ``client_id`` and
  retries through reconnects until the server acknowledges it; the server
  stores a repeated ``(room, name, client_id)`` once.
* **Handlers run one at a time, in order**, on one dispatcher task, so a
  handler may itself call ``send`` (as the bot does). The client's own sent
  messages reach ``on_message`` too, in their place in the room's order.
* **Resuming where a consumer stopped.** With ``cursor`` (a name of your
  choosing), the server keeps how far this person's consumer has handled
  each room: after the handler of an entry returns, the client moves the
  cursor to it (``advance``, coalesced); the first ``join`` of a room reads
  on from the cursor, so a bot that restarts hands over every entry after
  the last one it handled, and none before. An entry handled just before a
  crash, its cursor move not yet stored, is handed over again: a handler
  whose effects are idempotent (a reply with a ``client_id`` made from the
  entry's room and seq, as the bot's) acts exactly once.
* **What is new.** ``markers`` holds, per room joined, where the person
  stands (``read``, ``unread``, ``mentions``, ``seq``), kept current by join
  acks, ``mark_read`` and the person's other connections' reads;
  ``on_mention`` gets each message that mentions the person, from any room;
  ``direct`` opens a direct conversation (token mode) and joins it.
* **Governed rooms.** ``create_room``, ``configure``, ``set_role``,
  ``remove``, ``ban``, ``unban``, ``mute`` and ``unmute`` act on a room (token
  mode; the server decides who may); each action is an entry of the room's
  stream and reaches ``on_change`` in order like any change (no ``target``;
  ``user`` is the person it was on). Banned or removed, the client stops
  rejoining the room. ``room_info`` and ``audit`` read a room's settings,
  people and actions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from socketio import exceptions as sio_errors

from . import compat, uploads

log = logging.getLogger(__name__)

OUSTING = ("ban", "remove")  # the actions that take their person out of the room

# python-engineio drops a polling connection whose response holds more than 16
# packets, as one does whenever more than 16 messages queue up between polls.
# The server bounds the response in bytes: a client lifts the count bound when made.
POLL_PACKETS = 100_000

NAMESPACE = "/chat"
JSON = dict[str, Any]
# wire format -> python-socketio's name for it
SOCKETIO_SERIALIZERS = {"msgpack": "msgpack", "json": "default"}
Handler = Callable[[JSON], Awaitable[None] | None]
TokenProvider = Callable[[], Awaitable[str] | str]

# Errors worth retrying a send for: the server will accept it later.
_RETRYABLE = frozenset({"unavailable", "rate_limited", "internal"})
# ``internal`` may be the message's own doing (a server fault it triggers): retried
# this many times, then the send fails instead of coming back for ever
MAX_INTERNAL_RETRIES = 3
_TRANSIENT = (sio_errors.TimeoutError, sio_errors.BadNamespaceError,
              sio_errors.DisconnectedError)


class ChatClientError(Exception):
    """The server refused a request (or the connection); ``code`` is the protocol's."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after  # ms, with rate_limited


@dataclass
class _Room:
    last: int = 0  # highest seq of the room's stream handed over
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ChatClient:
    """A Roomcast connection under one display name.

    :param url: the server, e.g. ``http://localhost:8080``.
    :param name: the display name (1 to 32 printable characters); in token mode
        ``name`` is the token's (its name claim, else sub), whatever is given.
    :param token: a signed token, for a server in token mode (the server then
        takes the name from it).
    :param serializer: ``msgpack`` (the server's default) or ``json``; must
        match the server's.
    :param transports: ``None`` for polling upgraded to WebSocket,
        ``["websocket"]`` or ``["polling"]`` to force one.
    :param request_timeout: seconds to wait for one ack before treating the
        connection as lost (default 10).
    :param reconnection_delay: first back-off in seconds, doubled up to
        ``reconnection_delay_max`` (defaults 0.5 and 5); each wait is drawn
        from 0 to twice the back-off (full jitter).
    :param on_change: called with each change to a message (``kind`` edit,
        delete, react or unreact; ``target`` the message's seq) and to the
        room (a governance action: ``kind`` create, configure, role, remove,
        ban, unban, mute or unmute; no ``target``), in the room's order with
        the messages.
    :param on_state: called with ``"ready"`` once connected with every room
        rejoined, and with ``"disconnected"`` when the connection drops.
    :param http_session: an ``aiohttp.ClientSession`` to connect with (for a
        proxy, TLS settings or a source address); the caller closes it.
    :param token_provider: token mode: called (sync or async) for a fresh
        token before the current one expires, which is then sent with
        ``renew`` and used for later reconnects. Without it the server ends
        the connection when the token expires, and the client stops.
    :param on_mention: called with ``{room, message}`` for each message that
        mentions this person (``@name``; every message of a direct
        conversation), joined to its room or not.
    :param on_read: called with ``{room, read, unread, mentions, seq}`` when
        another connection of this person moved its read marker.
    :param on_direct: called with ``{room, with, from}`` when someone opens a
        direct conversation with this person.
    :param on_receipt: called with ``{room, receipts: [{user, seq}]}`` when
        members of a joined room read further.
    :param on_gone: called with ``{room, from, to, why}`` when entries this
        client had not handed over were removed by the room's retention before
        it could read them: it goes on after ``to``.
    :param on_report: to a room's moderators and owners: called with each new
        report of a message (``{room, seq, by, reason, ts, from, text}``) and
        each resolution (``{room, seq, resolved, by, reason, ts}``).
    """

    def __init__(self, url: str, name: str = "", *, token: str | None = None,
                 serializer: str = "msgpack",
                 transports: list[str] | None = None, request_timeout: float = 10.0,
                 reconnection_delay: float = 0.5, reconnection_delay_max: float = 5.0,
                 on_message: Handler | None = None, on_presence: Handler | None = None,
                 on_typing: Handler | None = None, on_change: Handler | None = None,
                 on_state: Callable[[str], object] | None = None,
                 http_session: Any = None, token_provider: TokenProvider | None = None,
                 on_mention: Handler | None = None, on_read: Handler | None = None,
                 on_direct: Handler | None = None, on_receipt: Handler | None = None,
                 cursor: str | None = None, on_report: Handler | None = None,
                 on_gone: Handler | None = None) -> None:
        compat.lift_polling_packet_limit(POLL_PACKETS)
        self.url = url
        # in token mode the server takes the name from the token: so does the client
        self.name = token_name(token) if token is not None else name
        self.auth: JSON = {"token": token} if token is not None else {"name": name}
        # this client fetches what it misses (catch_up, gaps): the server may
        # skip live events for it while it reads slower than its rooms speak,
        # rather than cut it off
        self.auth["catch_up"] = True
        self.transports = transports
        self.request_timeout = request_timeout
        self.on_message = on_message
        self.on_presence = on_presence
        self.on_typing = on_typing
        self.on_change = on_change
        self.on_state = on_state
        self.on_mention = on_mention
        self.on_read = on_read
        self.on_direct = on_direct
        self.on_receipt = on_receipt
        self.on_report = on_report
        self.on_gone = on_gone
        self.token_provider = token_provider
        self.cursor = cursor
        self._handled: dict[str, int] = {}  # room -> seq handled, not yet advanced
        self._advancing: set[str] = set()  # rooms with a cursor move in flight
        self.markers: dict[str, JSON] = {}  # room -> {read, unread, mentions, seq}
        self._sio = socketio.AsyncClient(
            serializer=SOCKETIO_SERIALIZERS[serializer], reconnection=True, reconnection_attempts=0,
            # full jitter: each wait anywhere from 0 to twice the back-off, so the
            # clients of a node that went away do not come back as one herd
            randomization_factor=1.0, reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max, http_session=http_session)
        self._rooms: dict[str, _Room] = {}
        self._ready = asyncio.Event()  # connected, and every room rejoined
        self._connect_error: JSON | None = None
        self._closing = False
        self._closed = asyncio.Event()  # close() was called: requests waiting end
        self._connected_once = False
        self._connections = 0  # connects so far: a rejoin belongs to one of them
        # (handler, event, whether it is an entry of a room's stream)
        self._dispatch: asyncio.Queue[tuple[Handler | None, JSON, bool]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._own_http: aiohttp.ClientSession | None = None  # see connect()
        self._sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self._sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self._sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        self._sio.on("message", self._on_message, namespace=NAMESPACE)
        self._sio.on("presence", self._on_presence, namespace=NAMESPACE)
        self._sio.on("typing", self._on_typing, namespace=NAMESPACE)
        self._sio.on("catch_up", self._on_catch_up, namespace=NAMESPACE)
        self._sio.on("change", self._on_message, namespace=NAMESPACE)
        for event in ("mention", "read", "direct", "receipt", "report"):
            self._sio.on(event, self._relay(event), namespace=NAMESPACE)
        self.renewals = 0  # tokens renewed on a live connection

    # -- connection -------------------------------------------------------------

    @property
    def joined(self) -> list[str]:
        """The rooms this client is in (and rejoins after a reconnect)."""
        return list(self._rooms)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def transport(self) -> str | None:
        transport = compat.client_engine(self._sio).current_transport
        return str(transport) if transport else None

    async def connect(self, *, retry: bool = False) -> None:
        """Connect; raise :class:`ChatClientError` if refused, or if unreachable
        and not ``retry`` (with ``retry``, keep trying with back-off).
        Later drops are handled by reconnecting in the background."""
        self._spawn(self._dispatcher())
        if self.token_provider is not None and "token" in self.auth:
            self._spawn(self._keep_token_fresh())
        eio = compat.client_engine(self._sio)
        if eio.http is None:
            # One HTTP session for the client's life. python-engineio makes a new
            # one per connection and, when a polling connection fails, closes it
            # while a reconnect attempt may already have made the next one, which
            # is then dropped unclosed (the reconnect races its reset).
            eio.http = self._own_http = aiohttp.ClientSession()
            eio.external_http = True
        try:
            await self._sio.connect(self.url, auth=self.auth, namespaces=[NAMESPACE],
                                    transports=self.transports, wait_timeout=self.request_timeout,
                                    retry=retry)
        except sio_errors.ConnectionError as exc:
            await self.close()
            error = self._connect_error or {}
            data = error.get("data")
            if not isinstance(data, dict):
                data = {}
            raise ChatClientError(data.get("code", "unavailable"),
                                  data.get("message") or error.get("message") or str(exc)
                                  ) from None
        await self._ready.wait()

    async def close(self) -> None:
        """Disconnect for good and stop background work."""
        self._closing = True
        self._closed.set()
        self._ready.clear()
        await compat.shutdown(self._sio)  # disconnects, or stops a reconnect loop
        if self._sio.connected:  # a reconnect attempt finished meanwhile
            await self._sio.disconnect()
        if self._own_http is not None:
            await self._own_http.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_closed(self) -> None:
        """Wait until the connection ends for good (``close`` or given up)."""
        await self._sio.wait()

    async def _reconnect_after_server_close(self) -> None:
        """Reconnect when python-socketio will not: after the server ends the
        session (an Engine.IO CLOSE from a server shutting down, or one that
        timed us out while we were suspended) it does not reconnect at all.

        python-engineio also drains its own stop signal in that case, leaving
        its write loop waiting about 30 s (ping interval + 5 s) before the old
        connection's tasks end; we end it now, wait for the old read loop to
        finish tearing down, then reconnect with the usual back-off.
        """
        eio = compat.client_engine(self._sio)
        if eio.write_loop_task is not None:
            eio.write_loop_task.cancel()  # it treats cancellation as "stop"
        if eio.read_loop_task is not None:
            await eio.read_loop_task
        while not self._closing and not self._sio.connected:
            log.info("the server closed the session; reconnecting")
            try:
                await self._sio.connect(
                    self.url, auth=self.auth, namespaces=[NAMESPACE],
                    transports=self.transports, wait_timeout=self.request_timeout, retry=True)
            except sio_errors.ConnectionError as exc:  # refused: try again later
                data = (self._connect_error or {}).get("data")
                if isinstance(data, dict) and data.get("code") == "unauthorized" \
                        and self.token_provider is None:
                    log.error("reconnect refused (%s): the token will not do; stopping",
                              data.get("message"))
                    self._report("unauthorized")
                    return
                log.warning("reconnect refused: %s", exc)
                await asyncio.sleep(self._sio.reconnection_delay_max)

    async def _on_connect(self) -> None:
        log.info("connected to %s as %r over %s", self.url, self.name, self.transport)
        self._connections += 1
        if not self._connected_once:
            self._connected_once = True
            self._set_ready()
        else:
            self._spawn(self._rejoin_all())

    async def _on_disconnect(self, reason: str = "") -> None:
        log.info("disconnected (%s)", reason)
        self._ready.clear()
        self._report("disconnected")
        if reason == self._sio.reason.SERVER_DISCONNECT and not self._closing:
            self._spawn(self._reconnect_after_server_close())

    async def _on_connect_error(self, data: Any) -> None:
        self._connect_error = data if isinstance(data, dict) else {"message": str(data)}

    async def _rejoin_all(self) -> None:
        """Rejoin every room, catching up on what each missed. A refusal the
        server may lift (presence down, rate limited, a fault) is retried with
        back-off while the connection stays up: no reconnect would come to
        retry it. A lost connection ends this; the reconnect starts it again."""
        delay = self._sio.reconnection_delay
        pending = list(self._rooms)
        connection = self._connections
        while pending and not self._closing:
            room = pending[0]
            try:
                state = self._rooms.get(room)
                if state is not None:
                    # entries that race the ack wait for it: one broadcast between the
                    # server's entering the room and its answer would otherwise look
                    # like a gap, whose fill the server refuses (not joined yet)
                    async with state.lock:
                        ack = await self._call_paced("join", {"room": room,
                                                              "since": state.last})
                        await self._accept(room, _stream(ack), locked=True)
                        if ack["more"]:
                            await self._catch_up(room, ack["seq"], locked=True)
            except _TRANSIENT as exc:
                log.info("rejoin interrupted (%s); will retry on reconnect", exc)
                return
            except ChatClientError as exc:
                if exc.code not in _RETRYABLE:
                    log.warning("could not rejoin %s (%s); leaving it", room, exc)
                    self._rooms.pop(room, None)
                    pending.pop(0)
                    continue
                log.info("rejoin of %s refused (%s); retrying in %.1f s", room, exc, delay)
                await asyncio.sleep(delay)
                if self._connections != connection or not self._sio.connected:
                    return  # the connection dropped: its reconnect rejoins
                delay = min(delay * 2, self._sio.reconnection_delay_max)
                continue
            pending.pop(0)
            delay = self._sio.reconnection_delay
        if self._closing or self._connections != connection:
            return
        log.info("rejoined %d rooms", len(self._rooms))
        self._set_ready()

    async def _keep_token_fresh(self) -> None:
        """Token mode: fetch a fresh token when four fifths of the current one's
        life have passed, ``renew`` the live connection with it, and keep it for
        reconnects. A failed fetch or renew is tried again, sooner each time."""
        while not self._closing:
            expires = token_expiry(self.auth["token"])
            if expires is None:
                log.warning("the token has no readable exp; not renewing it")
                return
            await asyncio.sleep(max(0.5, 0.8 * (expires - time.time())))
            try:
                assert self.token_provider is not None
                fresh = self.token_provider()
                token = await fresh if inspect.isawaitable(fresh) else fresh
            except Exception:
                log.exception("token_provider failed; trying again")
                continue
            self.auth["token"] = token  # the next connect, or reconnect, sends it
            if not self._ready.is_set():
                continue
            try:
                await self._call("renew", {"token": token})
                self.renewals += 1
            except (ChatClientError, *_TRANSIENT) as exc:
                log.warning("renew failed (%s); trying again", exc)

    def _set_ready(self) -> None:
        self._ready.set()
        self._report("ready")

    def _report(self, state: str) -> None:
        if self.on_state is not None and not self._closing:
            try:
                self.on_state(state)
            except Exception:
                log.exception("on_state handler failed")

    # -- requests ---------------------------------------------------------------

    async def _call(self, event: str, payload: JSON | None = None) -> JSON:
        """One request on the current connection; raise on an error ack (and
        ``closed`` at once if :meth:`close` is called meanwhile)."""
        ack = await self._unless_closed(self._sio.call(
            event, payload if payload is not None else {}, namespace=NAMESPACE,
            timeout=self.request_timeout))
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = ack.get("error", {}) if isinstance(ack, dict) else {}
            retry_after = error.get("retry_after")
            raise ChatClientError(error.get("code", "internal"), error.get("message", repr(ack)),
                                  retry_after if isinstance(retry_after, int) else None)
        return ack

    async def _call_paced(self, event: str, payload: JSON) -> JSON:
        """``_call``, waiting out ``rate_limited`` answers (a long catch-up is
        paced by the server's reply budget)."""
        while True:
            try:
                return await self._call(event, payload)
            except ChatClientError as exc:
                if exc.code != "rate_limited" or self._closing:
                    raise
                await asyncio.sleep((exc.retry_after or 1000) / 1000)

    async def request(self, event: str, payload: JSON | None = None) -> JSON:
        """Send one event once the client is ready; return the ok ack. Raises
        :class:`ChatClientError` ``closed`` once :meth:`close` was called (a
        request waiting for a reconnect, or for its ack, then ends at once, as
        do sends retrying)."""
        if not self._ready.is_set():
            await self._unless_closed(self._ready.wait())
        return await self._call(event, payload)

    async def _unless_closed(self, work: Awaitable[Any]) -> Any:
        """``work``'s outcome, unless :meth:`close` comes first: then it is
        cancelled and ``closed`` raised."""
        if self._closed.is_set():
            if inspect.iscoroutine(work):
                work.close()
            raise ChatClientError("closed", "this client was closed")
        task = asyncio.ensure_future(work)
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise ChatClientError("closed", "this client was closed")
        return task.result()

    async def join(self, room: str, *, invite: str | None = None) -> JSON:
        """Join ``room`` (a private room: with an ``invite``'s code, if not a
        member yet); return the ack (``seq``, ``members``, the latest
        ``messages``). Messages after the ack's ``seq`` go to ``on_message``;
        with a ``cursor``, every entry after where it stands, first."""
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
            payload: JSON = {"room": room, **({"invite": invite} if invite else {})}
            if self.cursor is not None:
                payload["cursor"] = self.cursor
            async with state.lock:  # messages that race the ack wait for it
                try:
                    ack = await self.request("join", payload)
                except BaseException:
                    del self._rooms[room]
                    raise
                position = ack.get("cursor")
                state.last = ack["seq"] if position is None else int(position)
                if position is not None:  # read on from the cursor
                    await self._accept(room, _stream(ack), locked=True)
                    if ack["more"]:
                        await self._catch_up(room, ack["seq"], locked=True)
            self._marked(ack)
            if self.cursor is not None and position is None:
                self._advance(room, ack["seq"])  # a new cursor starts here, for good
            return ack
        async with state.lock:  # (entries that race the ack wait for it: _rejoin_all)
            ack = await self.request("join", {"room": room, "since": state.last})
            await self._accept(room, _stream(ack), locked=True)
        self._marked(ack)
        return ack

    def _marked(self, reading: JSON) -> None:
        """Keep where the person stands in a room (a join or read ack, a read
        event); a marker only moves forward."""
        room = reading["room"]
        known = self.markers.get(room)
        if known is None or reading["read"] >= known["read"]:
            self.markers[room] = {key: reading[key] for key in
                                  ("read", "unread", "mentions", "seq")}

    async def mark_read(self, room: str, seq: int | None = None) -> JSON:
        """Move this person's read marker in ``room`` (joined) to ``seq``, by
        default to the last entry handed over; return where they stand."""
        state = self._rooms.get(room)
        upto = seq if seq is not None else (state.last if state is not None else 0)
        ack = await self.request("read", {"room": room, "seq": upto})
        self._marked(ack)
        return ack

    async def unread(self) -> dict[str, JSON]:
        """This person's rooms (any they joined, ever, up to 100) with their
        ``read``, ``unread``, ``mentions`` and ``seq``; ``with`` for a direct
        conversation."""
        return {r["name"]: r for r in await self.rooms() if "read" in r}

    async def direct(self, *names: str) -> str:
        """Open (or find again) the direct conversation with ``names`` (token
        mode), join it and return its room."""
        ack = await self.request("direct", {"with": list(names)})
        await self.join(ack["room"])
        return str(ack["room"])

    async def leave(self, room: str) -> None:
        await self.request("leave", {"room": room})
        self._rooms.pop(room, None)

    async def history(self, room: str, *, before: int | None = None,
                      after: int | None = None, limit: int = 50) -> JSON:
        return await self.request("history", _given(room=room, limit=limit, before=before,
                                                    after=after))

    async def search(self, query: str, *, room: str | None = None, cursor: str | None = None,
                     limit: int = 20) -> JSON:
        """Messages with the words of ``query`` in ``room`` (or every joined room),
        newest first: the ack's ``results`` (``{message, marked}``) and ``next``,
        the cursor for older ones."""
        return await self.request("search", _given(query=query, limit=limit, room=room,
                                                   cursor=cursor))

    async def rooms(self) -> list[JSON]:
        rooms: list[JSON] = (await self.request("rooms"))["rooms"]
        return rooms

    async def members(self, room: str, *, next: str | None = None, limit: int = 100) -> JSON:
        """A page of ``room``'s members (a room joined): ``members``, ``count`` and,
        if there are more, ``members_next`` (pass it as ``next``). A room of up
        to the server's ``--presence-list-max`` comes whole in the join's ack."""
        return await self.request("members", _given(room=room, next=next, limit=limit))

    async def typing(self, room: str, active: bool) -> None:
        await self.request("typing", {"room": room, "active": active})

    async def send(self, room: str, text: str, *, client_id: str | None = None,
                   reply_to: int | None = None, attachments: list[str] | None = None) -> JSON:
        """Send ``text`` to ``room`` (answering message ``reply_to``, if given;
        carrying the files ``attachments``, ids :meth:`upload` returned, with
        which ``text`` may be empty); retry through reconnects until stored.

        Returns the stored message. Raises :class:`ChatClientError` for a
        refusal that retrying cannot fix (``not_member``, ``too_large``, ...),
        and for ``internal`` once it has come back MAX_INTERNAL_RETRIES times;
        never once the server has acknowledged the message (messages before it
        that this client has not seen yet come by catch-up).
        """
        payload: JSON = {"room": room, "text": text}
        if reply_to is not None:
            payload["reply_to"] = reply_to
        if attachments:
            payload["attachments"] = list(attachments)
        message: JSON = (await self._write("send", payload, client_id))["message"]
        await self._deliver(room, [message])
        return message

    # -- attachments ------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        http = compat.client_engine(self._sio).http or self._own_http
        if http is None:
            raise ChatClientError("closed", "connect first")
        return http

    async def upload(self, room: str, path: str | Path, *, name: str | None = None) -> str:
        """Upload the file at ``path`` to ``room`` (joined), resumably: a cut
        connection resumes where the server says the upload stands. Returns the
        file's id, to :meth:`send` in a message (within the server's
        ``--upload-expiry``). Raises :class:`ChatClientError` if refused (the
        limits: ``too_large``, ``rate_limited``) or if the upload fails."""
        source = Path(path)
        grant = (await self.request("upload", {"room": room, "name": name or source.name,
                                               "size": source.stat().st_size}))["upload"]
        try:
            await uploads.tus_upload(self._http(), self.url, grant, source)
        except uploads.UploadFailed as exc:
            raise ChatClientError("upload_failed", str(exc)) from None
        return str(grant["id"])

    async def send_file(self, room: str, path: str | Path, text: str = "", *,
                        client_id: str | None = None) -> JSON:
        """Upload the file at ``path`` and send it to ``room`` in a message
        (with ``text``); the stored message."""
        file_id = await self.upload(room, path)
        return await self.send(room, text, attachments=[file_id], client_id=client_id)

    async def links(self, room: str, ids: list[str]) -> dict[str, JSON]:
        """Links to files of ``room`` (joined): ``{id: {url, thumbnail?}}``, valid
        for the server's ``--file-link-ttl``; an id that is no file the
        room's members may read is left out."""
        ack = await self.request("files", {"room": room, "ids": list(ids)})
        files: dict[str, JSON] = ack["files"]
        return files

    async def download(self, room: str, file_id: str, dest: str | Path, *,
                       thumbnail: bool = False) -> Path:
        """Save file ``file_id`` of ``room`` (or its thumbnail) to ``dest``."""
        link = (await self.links(room, [file_id])).get(file_id)
        if link is None or (thumbnail and "thumbnail" not in link):
            raise ChatClientError("not_found", f"no file {file_id} in {room!r}")
        url = self.url.rstrip("/") + str(link["thumbnail" if thumbnail else "url"])
        try:
            return await uploads.download(self._http(), url, Path(dest))
        except uploads.UploadFailed as exc:
            raise ChatClientError("not_found" if exc.status == 404 else "forbidden",
                                  str(exc)) from None

    async def reply(self, room: str, seq: int, text: str) -> JSON:
        """Send ``text`` in answer to message ``seq``; see :meth:`send`."""
        return await self.send(room, text, reply_to=seq)

    async def edit(self, room: str, seq: int, text: str) -> JSON:
        """Replace the text of one's own message ``seq``. Returns the ack:
        ``message`` as it stands after, and the ``change`` (null if the text
        was the same)."""
        return await self._change("edit", {"room": room, "seq": seq, "text": text})

    async def delete(self, room: str, seq: int) -> JSON:
        """Delete one's own message ``seq`` (a moderator: anyone's)."""
        return await self._change("delete", {"room": room, "seq": seq})

    async def react(self, room: str, seq: int, emoji: str) -> JSON:
        """Add one's ``emoji`` reaction to message ``seq`` (once per person)."""
        return await self._change("react", {"room": room, "seq": seq, "emoji": emoji})

    async def unreact(self, room: str, seq: int, emoji: str) -> JSON:
        """Take one's ``emoji`` reaction off message ``seq``."""
        return await self._change("unreact", {"room": room, "seq": seq, "emoji": emoji})

    # -- governing rooms (token mode) ---------------------------------------------

    async def create_room(self, room: str, *, private: bool = False, topic: str = "") -> JSON:
        """Create ``room`` with this person as its owner (it must have no
        entries yet); ``private``: only its members may join."""
        return await self._act("create", {"room": room, "private": private, "topic": topic})

    async def configure(self, room: str, **settings: Any) -> JSON:
        """Change some of ``room``'s settings: ``topic``, ``slow`` (seconds
        between one person's messages, 0: off), ``locked`` (read-only) and
        ``private`` (an owner's)."""
        return await self._act("configure", {"room": room, **settings})

    async def set_role(self, room: str, user: str, role: str | None) -> JSON:
        """Make ``user`` a ``member``, ``moderator`` or ``owner`` of ``room``, or
        none (``None``)."""
        return await self._act("role", {"room": room, "user": user, "role": role})

    async def remove(self, room: str, user: str, *, reason: str = "") -> JSON:
        """Take ``user`` out of ``room`` now (and out of its members, if private)."""
        return await self._act("remove", {"room": room, "user": user, "reason": reason})

    async def ban(self, room: str, user: str, *, seconds: int | None = None,
                  reason: str = "") -> JSON:
        """Ban ``user`` from ``room`` for ``seconds`` (None: until unbanned)."""
        return await self._act("ban", _given(room=room, user=user, seconds=seconds,
                                             reason=reason))

    async def unban(self, room: str, user: str) -> JSON:
        return await self._act("unban", {"room": room, "user": user})

    async def mute(self, room: str, user: str, seconds: int, *, reason: str = "") -> JSON:
        """Let ``user`` read ``room`` but not send, react, edit or type there for
        ``seconds``."""
        return await self._act("mute", {"room": room, "user": user, "seconds": seconds,
                                        "reason": reason})

    async def unmute(self, room: str, user: str) -> JSON:
        return await self._act("unmute", {"room": room, "user": user})

    async def room_info(self, room: str) -> JSON:
        """``room``'s ``settings``, where this person stands (``you``) and its
        ``people`` (to a moderator: everyone with a role, a ban or a mute)."""
        return await self.request("room_info", {"room": room})

    async def audit(self, room: str, *, before: int | None = None, limit: int = 50) -> JSON:
        """``room``'s actions, newest first (its moderators and owners)."""
        return await self.request("audit", _given(room=room, before=before, limit=limit))

    async def invite(self, room: str, *, seconds: int | None = None,
                     uses: int | None = None) -> JSON:
        """A new invite to a private room: ``code`` (for ``join(room,
        invite=code)``, shown this once) and ``id`` (to ``revoke`` it)."""
        invite: JSON = (await self.request("invite", _given(room=room, seconds=seconds,
                                                            uses=uses)))["invite"]
        return invite

    async def revoke(self, room: str, invite_id: str) -> None:
        await self.request("revoke", {"room": room, "id": invite_id})

    async def report(self, room: str, seq: int, *, reason: str = "") -> JSON:
        """Report message ``seq`` to the room's moderators and owners."""
        return await self.request("report", {"room": room, "seq": seq, "reason": reason})

    async def reports(self, room: str) -> list[JSON]:
        """The room's open reports, oldest first (its moderators and owners)."""
        reports: list[JSON] = (await self.request("reports", {"room": room}))["reports"]
        return reports

    async def resolve(self, room: str, seq: int, *, reason: str = "") -> JSON:
        """Close the open reports of message ``seq``."""
        return await self.request("resolve", {"room": room, "seq": seq, "reason": reason})

    async def _act(self, event: str, payload: JSON) -> JSON:
        ack = await self._write(event, payload)
        if payload["room"] in self._rooms:
            await self._deliver(payload["room"], [ack["action"]])
        return ack

    async def _change(self, event: str, payload: JSON) -> JSON:
        ack = await self._write(event, payload)
        if ack.get("change") is not None:
            await self._deliver(payload["room"], [ack["change"]])
        return ack

    async def _write(self, event: str, payload: JSON, client_id: str | None = None) -> JSON:
        """Call ``event`` with a ``client_id`` until the server answers it, resending
        the same id through reconnects and passing faults (stored once)."""
        payload = {**payload, "client_id": client_id or uuid.uuid4().hex}
        delay = 0.1
        internal = 0
        while True:
            try:
                return await self.request(event, payload)
            except (ChatClientError, *_TRANSIENT) as exc:
                if isinstance(exc, ChatClientError) and exc.code not in _RETRYABLE:
                    raise
                if isinstance(exc, ChatClientError) and exc.code == "internal":
                    internal += 1
                    if internal > MAX_INTERNAL_RETRIES:
                        raise
                # a dropped connection or a passing server fault: back off, then
                # resend the same client_id once the client is ready again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- delivery ---------------------------------------------------------------

    async def _on_message(self, message: JSON) -> None:
        room = message.get("room")
        if isinstance(room, str) and room in self._rooms:
            await self._deliver(room, [message])

    async def _deliver(self, room: str, entries: list[JSON]) -> None:
        """:meth:`_accept`, where a gap that cannot be filled now is left to
        catch-up (the next entry of the room, a ``catch_up`` or the rejoin fill
        it): a send or change the server acknowledged has succeeded, whatever
        this read does (its caller must not retry it)."""
        try:
            await self._accept(room, entries)
        except (ChatClientError, *_TRANSIENT) as exc:
            log.info("could not fill a gap in %s (%s); will catch up", room, exc)

    async def _on_catch_up(self, event: JSON) -> None:
        """The server says ``room`` is at ``seq`` (its link to the other nodes may
        have lost events): fetch what this client has not handed over yet."""
        room, seq = event.get("room"), event.get("seq")
        if not (isinstance(room, str) and room in self._rooms and isinstance(seq, int)):
            return
        if seq > self._rooms[room].last:
            try:
                await self._catch_up(room, seq)
            except (ChatClientError, *_TRANSIENT) as exc:
                log.info("could not catch up on %s (%s); will on rejoin", room, exc)

    async def _accept(self, room: str, entries: list[JSON], *, locked: bool = False) -> None:
        """Hand over entries of the room's stream (messages, changes) in seq
        order, once each, filling any gap before one from history."""
        state = self._rooms.get(room)
        if state is None:
            return
        if not locked:
            async with state.lock:
                return await self._accept(room, entries, locked=True)
        for entry in sorted(entries, key=_order):
            if "seq" not in entry:  # what retention removed: go on after it
                self._skip(room, state, entry)
                continue
            seq = int(entry["seq"])
            if seq <= state.last:
                continue
            if seq > state.last + 1:
                await self._catch_up(room, seq - 1, locked=True)
                if seq <= state.last:
                    continue
            state.last = seq
            self._hand_over(entry)

    def _hand_over(self, entry: JSON) -> None:
        handler = self.on_change if "kind" in entry else self.on_message
        self._dispatch.put_nowait((handler, entry, True))
        if entry.get("kind") in OUSTING and "target" not in entry \
                and entry.get("user") == self.name:
            # the server took this person out of the room: no rejoin
            log.info("%s from %s by %s", entry["kind"], entry["room"], entry.get("from"))
            self._rooms.pop(str(entry["room"]), None)

    async def _catch_up(self, room: str, upto: int, *, locked: bool = False) -> None:
        """Page forward from the room's last seq until ``upto`` is delivered."""
        state = self._rooms[room]
        if not locked:
            async with state.lock:
                return await self._catch_up(room, upto, locked=True)
        while state.last < upto:
            page = await self._call_paced("history", {"room": room, "after": state.last,
                                                      "limit": 200})
            last = state.last
            for entry in sorted(_stream(page), key=_order):
                if "seq" not in entry:
                    self._skip(room, state, entry)
                elif int(entry["seq"]) == state.last + 1:
                    state.last += 1
                    self._hand_over(entry)
            if not page["more"] or state.last == last:
                break

    def _skip(self, room: str, state: _Room, gone: JSON) -> None:
        """Entries up to ``gone["to"]`` were removed (retention): not a gap."""
        upto = int(gone["to"])
        if upto > state.last:
            log.info("%s: entries %d to %d were removed (%s)", room, state.last + 1, upto,
                     gone.get("why"))
            self._dispatch.put_nowait((self.on_gone, {"room": room, **gone,
                                                      "from": state.last + 1}, False))
            state.last = upto

    def _relay(self, event: str) -> Callable[[JSON], Awaitable[None]]:
        async def relay(data: JSON) -> None:
            if event == "read":
                self._marked(data)
            self._dispatch.put_nowait((getattr(self, "on_" + event), data, False))
        return relay

    async def _on_presence(self, event: JSON) -> None:
        self._dispatch.put_nowait((self.on_presence, event, False))

    async def _on_typing(self, event: JSON) -> None:
        self._dispatch.put_nowait((self.on_typing, event, False))

    async def _dispatcher(self) -> None:
        while True:
            handler, event, entry = await self._dispatch.get()
            if handler is not None:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("handler %r failed", handler)
            if entry and self.cursor is not None:
                self._advance(str(event["room"]), int(event["seq"]))

    def _advance(self, room: str, seq: int) -> None:
        """The entry ``seq`` of ``room`` is handled: move the cursor there (one
        move in flight per room; those handled meanwhile go in the next)."""
        self._handled[room] = max(seq, self._handled.get(room, 0))
        if room not in self._advancing:
            self._advancing.add(room)
            self._spawn(self._advancing_to(room))

    async def _advancing_to(self, room: str) -> None:
        try:
            while (seq := self._handled.get(room)) is not None:
                try:
                    await self.request("advance", {"room": room, "cursor": self.cursor,
                                                   "seq": seq})
                except (ChatClientError, *_TRANSIENT) as exc:
                    # (moves are coalesced: the next one carries this one's entries too)
                    log.info("could not move the cursor in %s (%s); will again", room, exc)
                    wait = getattr(exc, "retry_after", None)
                    await asyncio.sleep(wait / 1000 if wait else 1.0)
                    continue
                if self._handled.get(room) == seq:
                    del self._handled[room]
        finally:
            self._advancing.discard(room)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _given(**fields: Any) -> JSON:
    """A payload of the fields that are not None (optional fields are left out)."""
    return {key: value for key, value in fields.items() if value is not None}


def _order(entry: JSON) -> int:
    """Stream order: by seq (a ``gone`` range first)."""
    return int(entry.get("seq", 0))


def _stream(ack: JSON) -> list[JSON]:
    """The entries of a join or history ack that reads on: messages and changes
    (and first, what retention removed of them: a ``gone`` range, no seq)."""
    gone = [ack["gone"]] if "gone" in ack else []
    return [*gone, *ack["messages"], *ack.get("changes", [])]


def token_claims(token: str) -> JSON:
    """A JWT's claims, read without checking the signature (the server checks
    it); empty if it has none."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_expiry(token: str) -> float | None:
    """A JWT's ``exp`` (seconds since the epoch); None if it has none."""
    exp = token_claims(token).get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def token_name(token: str) -> str:
    """The name the server takes from a token (its ``name``, else ``sub``)."""
    claims = token_claims(token)
    name = claims.get("name", claims.get("sub"))
    return name if isinstance(name, str) else ""
