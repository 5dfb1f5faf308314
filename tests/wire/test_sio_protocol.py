"""The Socket.IO v5 protocol on the wire, where python-socketio needed fixing.

Each test is a rule of socketio/socket.io's
``docs/socket.io-protocol/v5-current.md``, checked with a raw client over both
transports and both serializers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from app.appkeys import SIO_KEY

from ..conftest import TIMEOUT, ServeFactory, Served
from ..rawclient import CONNECT, CONNECT_ERROR, EVENT, RawClient

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers


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


def add_echo(served: Served) -> None:
    """The Socket.IO test suite's server on ``/echo``: ``message`` is echoed as
    ``message-back``, ``message-with-ack`` acked with its arguments."""
    sio = served.app[SIO_KEY]

    async def message(sid: str, *args: Any) -> None:
        await sio.emit("message-back", args, to=sid, namespace="/echo")  # (a tuple: the args)

    async def message_with_ack(sid: str, *args: Any) -> Any:
        return args

    sio.on("connect", lambda *_: None, namespace="/echo")
    sio.on("message", message, namespace="/echo")
    sio.on("message-with-ack", message_with_ack, namespace="/echo")


async def echo_client(serve: ServeFactory, transport: str) -> RawClient:
    served = await serve(serializer="json")
    add_echo(served)
    client = await RawClient.open(served.url, transport, "json")
    await client.send_eio("40/echo,")
    connected = await client.next_eio()
    assert isinstance(connected, str) and connected.startswith("40/echo,{"), connected
    return client


async def test_a_plain_text_event_and_its_ack(serve: ServeFactory, transport: str) -> None:
    client = await echo_client(serve, transport)
    try:
        await client.send_eio('42/echo,["message",1,"2",{"3":[true]}]')
        assert await client.next_eio() == '42/echo,["message-back",1,"2",{"3":[true]}]'
        await client.send_eio('42/echo,456["message-with-ack",1,"2",{"3":[false]}]')
        assert await client.next_eio() == '43/echo,456[1,"2",{"3":[false]}]'
    finally:
        await client.close()


async def test_binary_attachments_arrive_as_they_were_sent(serve: ServeFactory,
                                                           transport: str) -> None:
    """An event with two binary attachments (JSON parser: a placeholder packet,
    then one binary packet each; base64 with ``b`` over polling) comes back the
    same way, as an event and as an ack."""
    client = await echo_client(serve, transport)
    placeholders = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}'
    try:
        await client.send_eio(f'452-/echo,["message",{placeholders}]', b"\x01\x02\x03",
                              b"\x04\x05\x06")
        back = [await client.next_eio() for _ in range(3)]
        assert back[0] == f'452-/echo,["message-back",{placeholders}]'
        assert back[1:] == [b"\x01\x02\x03", b"\x04\x05\x06"]
        await client.send_eio(f'452-/echo,789["message-with-ack",{placeholders}]',
                              b"\x01\x02\x03", b"\x04\x05\x06")
        acked = [await client.next_eio() for _ in range(3)]
        assert acked[0] == f'462-/echo,789[{placeholders}]'
        assert acked[1:] == [b"\x01\x02\x03", b"\x04\x05\x06"]
    finally:
        await client.close()


@pytest.mark.parametrize("invalid", [
    "4abc",  # an unknown Socket.IO packet type
    '42/echo,{}',  # an EVENT whose payload is not an array
    '42/echo,abc["message-with-ack",1]',  # an ack id that is not a number
])
async def test_invalid_socketio_framing_closes_the_connection(
        serve: ServeFactory, transport: str, invalid: str) -> None:
    client = await echo_client(serve, transport)
    try:
        await client.send_eio(invalid)
        with pytest.raises(ConnectionError):
            while True:
                packet = await asyncio.wait_for(client.next_eio(), TIMEOUT)
                assert packet == "1", packet  # (Engine.IO's CLOSE, then the end)
    finally:
        await client.close()
