"""app/eio/packets.py: the Engine.IO v4 codec, with plain calls (no server)."""

from __future__ import annotations

import json

import pytest

from app.eio import packets
from app.eio.packets import MESSAGE, NOOP, PING, PONG, PacketError


def test_a_polling_payload_joins_packets_with_the_record_separator() -> None:
    # the protocol's own example: 4hello, a ping, 4world
    assert packets.encode_payload(["4hello", "2", "4world"]) == "4hello\x1e2\x1e4world"
    assert packets.decode_payload("4hello\x1e2\x1e4world", 16) == [
        (MESSAGE, "hello"), (PING, ""), (MESSAGE, "world")]


def test_binary_is_base64_with_a_b_prefix_in_polling() -> None:
    # the protocol's example: 4hello, then <01 02 03 04>
    assert packets.encode_payload(["4hello", b"\x01\x02\x03\x04"]) == "4hello\x1ebAQIDBA=="
    assert packets.decode_payload("4hello\x1ebAQIDBA==", 16) == [
        (MESSAGE, "hello"), (MESSAGE, b"\x01\x02\x03\x04")]
    assert packets.encode_payload([b"\x01"]) == "bAQ=="


def test_a_websocket_binary_message_is_a_message_packet_as_it_is() -> None:
    assert packets.decode(b"\x00\xff") == (MESSAGE, b"\x00\xff")
    assert packets.decode("3probe") == (PONG, "probe")
    assert packets.decode("6") == (NOOP, "")


@pytest.mark.parametrize("bad", ["", "abc", "7", "x4hello", "4ok\x1e", "b!!!", "bAQI"])
def test_what_is_not_engineio_framing_is_refused(bad: str) -> None:
    with pytest.raises(PacketError):
        packets.decode_payload(bad, 16)


def test_a_payload_over_the_packet_bound_is_refused_before_decoding() -> None:
    assert len(packets.decode_payload("\x1e".join(["3"] * 16), 16)) == 16
    with pytest.raises(PacketError, match="more than 16"):
        packets.decode_payload("\x1e".join(["3"] * 17), 16)


def test_the_open_packet_carries_the_handshake_in_milliseconds() -> None:
    opened = packets.open_packet("abc", ["websocket"], 2.5, 20, 1_000_000)
    assert opened[0] == "0"
    assert json.loads(opened[1:]) == {"sid": "abc", "upgrades": ["websocket"],
                                      "pingInterval": 2500, "pingTimeout": 20000,
                                      "maxPayload": 1_000_000}


def test_a_message_packet_has_its_type_digit_unless_binary() -> None:
    assert packets.message('2["x"]') == '42["x"]'
    assert packets.message(b"\x93") == b"\x93"
