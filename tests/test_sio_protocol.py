"""The Socket.IO v5 protocol on the wire, where python-socketio needed fixing.

Each test is a rule of socketio/socket.io's
``docs/socket.io-protocol/v5-current.md``, checked with a raw client over both
transports and both serializers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from app.keys import SIO_KEY

from .conftest import TIMEOUT, Served
from .rawclient import CONNECT, CONNECT_ERROR, EVENT, RawClient


async def test_a_refused_namespace_says_why_in_v5_form(served: Served, transport: str) -> None:
    """CONNECT_ERROR carries ``{"message": ...}`` (a bare string was v4's form, which
    socket.io-client 4 shows as an empty message)."""
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    try:
        refused = await client.connect(None, nsp="/nosuch")
        assert refused["type"] == CONNECT_ERROR and refused["nsp"] == "/nosuch"
        assert refused["data"] == {"message": "Invalid namespace"}
        # the session stays usable for another namespace
        assert (await client.connect({"name": "after"}))["type"] == CONNECT
    finally:
        await client.close()


class Greeting(socketio.AsyncNamespace):  # type: ignore[misc]
    """A namespace whose connect handler emits, as many applications' do."""

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> Any:
        await self.emit("welcome", {"to": sid}, to=sid)
        await self.emit("joined", sid, room=sid)  # through the room broadcast path
        if auth == "refuse":
            return False
        return None


async def test_what_a_connect_handler_emits_follows_the_connect_ack(
        served: Served, transport: str) -> None:
    served.app[SIO_KEY].register_namespace(Greeting("/greet"))
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    try:
        first = await client.connect(None, nsp="/greet")
        assert first["type"] == CONNECT, first
        sid = first["data"]["sid"]
        welcome = await asyncio.wait_for(client.recv(), TIMEOUT)
        assert (welcome["type"], welcome["data"]) == (EVENT, ["welcome", {"to": sid}])
        joined = await asyncio.wait_for(client.recv(), TIMEOUT)
        assert (joined["type"], joined["data"]) == (EVENT, ["joined", sid])
    finally:
        await client.close()


async def test_what_a_refused_connect_handler_emitted_is_dropped(
        served: Served, transport: str) -> None:
    served.app[SIO_KEY].register_namespace(Greeting("/greet"))
    client = await RawClient.open(served.url, transport, served.settings.serializer)
    try:
        refused = await client.connect("refuse", nsp="/greet")
        assert refused["type"] == CONNECT_ERROR, refused
        assert refused["data"]["message"]
        ok = await client.connect({"name": "next"})  # the next packet is chat's ack
        assert ok["type"] == CONNECT and ok["nsp"] == "/chat"
    finally:
        await client.close()
