"""Token mode over time: a connection ends when its token expires, unless renewed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

from client import ChatClient

from ..conftest import TIMEOUT, ServeFactory, Served, sio_client, until
from ..stores import HeldReads
from ..tokens import SECRET, OTHER, token

LIFETIME = 2  # seconds of a short-lived token (exp has a resolution of one second)


class Holder:
    """A python-socketio client in /chat on a token, recording how it ended."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.sio = sio
        self.ended: asyncio.Queue[str] = asyncio.Queue()
        sio.on("disconnect", self.ended.put_nowait, namespace="/chat")

    @classmethod
    async def connect(cls, served: Served, transport: str, jwt: str) -> Holder:
        holder = cls(sio_client(served.settings.serializer))
        await holder.sio.connect(served.url, auth={"token": jwt}, namespaces=["/chat"],
                                 transports=[transport], wait_timeout=TIMEOUT)
        return holder

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, namespace="/chat",
                                                  timeout=TIMEOUT)
        return ack

    async def wait_ended(self) -> str:
        return await asyncio.wait_for(self.ended.get(), LIFETIME + TIMEOUT)


def bots(served: Served) -> list[str]:
    return [sid for sid, conn in served.chat.connections.items() if conn.name == "bot"]


def expired_count(served: Served) -> float:
    value = served.chat.metrics.registry.get_sample_value(
        "roomcast_disconnects_total", {"reason": "token_expired"})
    return value or 0.0


async def test_a_connection_ends_when_its_token_expires(serve: ServeFactory, serializer: str,
                                                        transport: str) -> None:
    """At its token's exp the server ends the connection's /chat session (counted as
    token_expired, logged), its presence is cleaned up and the room told; the same
    token cannot connect again."""
    served = await serve(serializer=serializer, jwt_secret=SECRET)
    short = token(name="shortlived", exp=int(time.time()) + LIFETIME)
    holder = await Holder.connect(served, transport, short)
    watcher = await Holder.connect(served, transport, token(name="watcher"))
    presence: asyncio.Queue[Any] = asyncio.Queue()
    watcher.sio.on("presence", presence.put_nowait, namespace="/chat")
    try:
        assert (await holder.call("join", {"room": "r"}))["ok"]
        assert (await watcher.call("join", {"room": "r"}))["ok"]
        assert await holder.wait_ended() == holder.sio.reason.SERVER_DISCONNECT
        left = await asyncio.wait_for(presence.get(), TIMEOUT)
        assert left == {"room": "r", "user": "shortlived", "event": "leave",
                        "members": ["watcher"], "count": 1}
        assert expired_count(served) == 1
        await until(lambda: len(served.chat.connections) == 1)
        again = await watcher.call("rooms", {})
        assert [(r["name"], r["members"]) for r in again["rooms"]] == [("r", 1)]
    finally:
        for sio in (holder.sio, watcher.sio):
            await sio.disconnect()


async def test_renew_takes_a_fresh_token(serve: ServeFactory, serializer: str,
                                         transport: str) -> None:
    """``renew`` with a fresh token for the same user moves the connection's deadline;
    another user's, a forged or an expired token, one that does not admit a room the
    connection is in, and a renew in name mode are refused, and change nothing."""
    served = await serve(serializer=serializer, jwt_secret=SECRET)
    exp = int(time.time()) + LIFETIME
    renewed = await Holder.connect(served, transport, token(name="alice", exp=exp))
    clock = await Holder.connect(served, transport, token(name="clock", exp=exp))
    try:
        assert (await renewed.call("join", {"room": "team"}))["ok"]
        for bad, code in ((token(name="mallory"), "unauthorized"),
                          (token(secret=OTHER, name="alice"), "unauthorized"),
                          (token(name="alice", exp=1), "unauthorized"),
                          (token(name="alice", rooms=["other"]), "unauthorized"),
                          ("", "bad_request")):
            refused = await renewed.call("renew", {"token": bad})
            assert not refused["ok"] and refused["error"]["code"] == code, bad
        fresh_exp = int(time.time()) + 600
        ack = await renewed.call("renew", {"token": token(name="alice", exp=fresh_exp)})
        assert ack == {"ok": True, "expires": fresh_exp}
        await clock.wait_ended()  # the first token's exp has passed
        sent = await renewed.call("send", {"room": "team", "text": "still here"})
        assert sent["ok"], sent
        assert expired_count(served) == 1
    finally:
        for sio in (renewed.sio, clock.sio):
            await sio.disconnect()
    named = await serve(serializer=serializer)
    plain = sio_client(serializer)
    await plain.connect(named.url, auth={"name": "n"}, namespaces=["/chat"],
                        transports=[transport], wait_timeout=TIMEOUT)
    try:
        ack = await plain.call("renew", {"token": token(name="n")}, namespace="/chat")
        assert ack["error"]["code"] == "bad_request"
    finally:
        await plain.disconnect()


async def test_chat_client_renews_from_its_token_provider(
        serve: ServeFactory, serializer: str, transport: str) -> None:
    """ChatClient asks its token_provider for a fresh token before the current one
    expires and renews the live connection: it outlives several token lifetimes on one
    connection, while a client on a token of the same age is ended."""
    served = await serve(serializer=serializer, jwt_secret=SECRET)
    issued: list[str] = []

    async def provider() -> str:
        issued.append(token(name="bot", exp=int(time.time()) + LIFETIME + 1))
        return issued[-1]

    exp = int(time.time()) + LIFETIME + 1
    bot = ChatClient(served.url, serializer=serializer, transports=[transport],
                     request_timeout=TIMEOUT, token=token(name="bot", exp=exp),
                     token_provider=provider)
    clock = await Holder.connect(served, transport, token(name="clock", exp=exp))
    try:
        await bot.connect()
        await bot.join("r")
        before = bots(served)
        await clock.wait_ended()
        await until(lambda: bot.renewals >= 2, timeout=3 * (LIFETIME + 1) + TIMEOUT)
        assert bots(served) == before and len(before) == 1  # the same connection
        assert (await bot.send("r", "on a renewed token"))["from"] == "bot"
        assert len(issued) >= 2 and expired_count(served) == 1
    finally:
        await bot.close()
        await clock.sio.disconnect()


async def test_a_renewal_racing_a_join_cannot_leave_the_connection_in_a_room_it_does_not_admit(
        serve: ServeFactory) -> None:
    """A join in flight (its history read under way) when the connection renews to
    a token that does not admit that room is refused ``unauthorized`` and leaves
    the connection out of the room: not a member, not present, sent nothing of it."""
    store = HeldReads()

    async def held(url: str) -> Any:
        return store

    served = await serve(store_factory=held, jwt_secret=SECRET)
    alice = await Holder.connect(served, "websocket", token(name="alice"))
    bob = await Holder.connect(served, "websocket", token(name="bob"))
    try:
        store.held.clear()
        joining = asyncio.ensure_future(alice.call("join", {"room": "secret"}))
        await until(lambda: store.waiting == 1)
        renewed = await alice.call("renew", {"token": token(name="alice", rooms=["lobby"])})
        assert renewed["ok"], renewed
        store.held.set()
        refused = await asyncio.wait_for(joining, TIMEOUT)
        assert refused["error"]["code"] == "unauthorized", refused
        (sid,) = [s for s, c in served.chat.connections.items() if c.name == "alice"]
        assert not served.chat.connections[sid].rooms
        assert (await bob.call("join", {"room": "secret"}))["members"] == ["bob"]
        received: asyncio.Queue[Any] = asyncio.Queue()
        alice.sio.on("message", received.put_nowait, namespace="/chat")
        assert (await bob.call("send", {"room": "secret", "text": "for members"}))["ok"]
        assert (await alice.call("join", {"room": "lobby"}))["ok"]  # what it admits
        assert (await bob.call("join", {"room": "lobby"}))["ok"]
        assert (await bob.call("send", {"room": "lobby", "text": "hello"}))["ok"]
        assert (await asyncio.wait_for(received.get(), TIMEOUT))["text"] == "hello"
    finally:
        for sio in (alice.sio, bob.sio):
            await sio.disconnect()
