"""Engine.IO v4 packets and payloads, with no I/O.

The protocol (socketio/socket.io, ``docs/engine.io-protocol/v4-current.md``):
a packet is its type digit and its data; over WebSocket each packet is one
message (a binary message is a MESSAGE packet, as it is); over long-polling
the packets of one body are joined by the record separator ``\\x1e`` and a
binary packet is ``b`` and its data in base64.

Outgoing packets are kept encoded: ``str`` for a text packet (type digit
included), ``bytes`` for a binary message. Incoming ones decode to
``(type, data)``. Tested with plain calls in ``tests/unit/test_eio_packets.py``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)
SEPARATOR = "\x1e"

Encoded = str | bytes  # a packet ready to send: text with its type digit, or binary
Packet = tuple[int, str | bytes]

PING_TEXT, PONG_TEXT, CLOSE_TEXT, NOOP_TEXT = "2", "3", "1", "6"
PROBE = "probe"


class PacketError(ValueError):
    """Not Engine.IO framing: the session that sent it is closed."""


def message(data: str | bytes) -> Encoded:
    """A MESSAGE packet carrying ``data`` (an encoded Socket.IO packet)."""
    return data if isinstance(data, bytes) else "4" + data


def open_packet(sid: str, upgrades: list[str], ping_interval: float, ping_timeout: float,
                max_payload: int) -> str:
    """The handshake's OPEN packet (intervals in seconds, sent in milliseconds)."""
    return '0{"sid":' + json.dumps(sid) + _open_rest(tuple(upgrades), ping_interval,
                                                     ping_timeout, max_payload)


@functools.lru_cache(maxsize=8)
def _open_rest(upgrades: tuple[str, ...], ping_interval: float, ping_timeout: float,
               max_payload: int) -> str:
    """What follows the sid in an OPEN packet: the same for every session."""
    return "," + json.dumps({
        "upgrades": list(upgrades), "pingInterval": round(ping_interval * 1000),
        "pingTimeout": round(ping_timeout * 1000), "maxPayload": max_payload,
    }, separators=(",", ":"))[1:]


def decode(data: str | bytes) -> Packet:
    """One packet as received over WebSocket (or one part of a polling body)."""
    if isinstance(data, bytes):
        return MESSAGE, data
    if not data or data[0] not in "0123456":
        raise PacketError(f"not an Engine.IO packet: {data[:20]!r}")
    return ord(data[0]) - 48, data[1:]


def decode_payload(body: str, max_packets: int) -> list[Packet]:
    """The packets of a long-polling POST body, at most ``max_packets``."""
    if body.count(SEPARATOR) >= max_packets:
        raise PacketError(f"more than {max_packets} packets in one payload")
    packets: list[Packet] = []
    for part in body.split(SEPARATOR):
        if part[:1] == "b":
            try:
                packets.append((MESSAGE, base64.b64decode(part[1:], validate=True)))
            except (binascii.Error, ValueError):
                raise PacketError("invalid base64 in a binary packet") from None
        else:
            packets.append(decode(part))
    return packets


def encode_payload(packets: list[Encoded]) -> str:
    """One long-polling response body: binary packets in base64 with ``b``."""
    if len(packets) == 1 and isinstance(packets[0], str):
        return packets[0]
    return SEPARATOR.join(
        p if isinstance(p, str) else "b" + base64.b64encode(p).decode() for p in packets)


def size(packet: Encoded) -> int:
    """What a queued packet counts against its session's backlog."""
    return len(packet) + 16
