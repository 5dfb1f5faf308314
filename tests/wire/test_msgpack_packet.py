"""app/sio/packet.py: msgpack Socket.IO packets are decoded within bounds,
and JavaScript's ``undefined`` (socket.io-client's msgpack parser) means absent."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from app.appkeys import SIO_KEY
from app.sio.packet import MAX_CONTAINER, MAX_OBJECTS, BoundedMsgPackPacket, loads
from app.ws.frames import BINARY, CLOSE

from ..conftest import ServeFactory, until
from ..rawclient import ACK, CONNECT, EVENT
from .test_websocket import RawWebSocket, frame, sio_message, sio_packet

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers

UNDEFINED = msgpack.ExtType(0, b"\x00")  # what notepack.io writes for `undefined`


def test_undefined_is_absent_in_a_map_and_none_in_an_array() -> None:
    packed = msgpack.packb({"room": "r", "since": UNDEFINED, "list": [1, UNDEFINED]})
    assert loads(packed) == {"room": "r", "list": [1, None]}
    assert loads(msgpack.packb(UNDEFINED)) is None


def test_other_extensions_are_kept_for_the_event_parser_to_refuse() -> None:
    assert loads(msgpack.packb({"x": msgpack.ExtType(5, b"ab")})) == {
        "x": msgpack.ExtType(5, b"ab")}


def test_a_chat_event_decodes_as_msgpack_does() -> None:
    packet = {"type": 2, "nsp": "/chat", "id": 7,
              "data": ["send", {"room": "lobby", "text": "ça va? " * 500, "client_id": "c1"}]}
    packed = msgpack.packb(packet)
    assert loads(packed) == msgpack.unpackb(packed)
    decoded = BoundedMsgPackPacket(encoded_packet=packed)
    assert (decoded.packet_type, decoded.namespace, decoded.id, decoded.data) == (
        2, "/chat", 7, packet["data"])


@pytest.mark.parametrize("hostile", [
    [{}] * 990_000,  # the 1 MB array of empty maps: 70 MB of objects with msgpack's defaults
    [0] * (MAX_CONTAINER + 1),
    {str(i): i for i in range(MAX_CONTAINER + 1)},
    [[{}] * MAX_CONTAINER] * (MAX_OBJECTS // MAX_CONTAINER + 1),  # wide and nested
    {"x": msgpack.ExtType(5, b"a" * 1000)},
])
def test_a_packet_past_the_bounds_is_refused(hostile: Any) -> None:
    with pytest.raises(ValueError):
        loads(msgpack.packb(hostile))


async def test_on_the_wire_undefined_fields_are_absent_and_hostile_packets_cut_one_peer(
        serve: ServeFactory) -> None:
    """A msgpack client sends ``join`` with ``since: undefined`` and ``send`` with
    ``client_id: undefined`` (as socket.io-client does): both succeed. A packet
    of 990,000 empty maps closes that connection only; the other peer chats on."""
    served = await serve(serializer="msgpack")
    good, bad = await RawWebSocket.open(served), await RawWebSocket.open(served)
    try:
        for i, client in enumerate((good, bad)):
            await client.opened()
            client.send(frame(*sio_message("msgpack", {
                "type": CONNECT, "nsp": "/chat", "data": {"name": f"u{i}"}})))
            assert sio_packet(*(await client.read_frame())[1:])["type"] == CONNECT

        async def call(client: RawWebSocket, event: str, payload: dict[str, Any],
                       id: int) -> dict[str, Any]:
            client.send(frame(*sio_message("msgpack", {
                "type": EVENT, "nsp": "/chat", "id": id, "data": [event, payload]})))
            while True:
                packet = sio_packet(*(await client.read_frame())[1:])
                if packet["type"] == ACK and packet["id"] == id:
                    ack: dict[str, Any] = packet["data"][0]
                    return ack

        joined = await call(good, "join", {"room": "r", "since": UNDEFINED}, 1)
        assert joined["ok"] and joined["seq"] == 0
        sent = await call(good, "send", {"room": "r", "text": "hi", "client_id": UNDEFINED}, 2)
        assert sent["ok"] and sent["message"]["text"] == "hi"

        bad.send(frame(BINARY, msgpack.packb(
            {"type": EVENT, "nsp": "/chat", "data": ["send", [{}] * 990_000]})))
        while (await bad.read_frame())[1] != CLOSE:  # the session ends, then the WebSocket
            pass
        bad.send(frame(CLOSE, (1000).to_bytes(2, "big")))
        assert await bad.at_eof()
        await until(lambda: len(served.app[SIO_KEY].eio.sockets) == 1)
        again = await call(good, "send", {"room": "r", "text": "still here"}, 3)
        assert again["ok"] and again["message"]["seq"] == 2
    finally:
        good.close()
        bad.close()
