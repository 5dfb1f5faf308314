"""Socket.IO packets in msgpack, decoded within bounds sized for chat events.

python-socketio's ``MsgPackPacket`` decodes with msgpack's defaults, which
admit anything that fits in the message: one 1 MB message holding an array of
990,000 empty maps became about 70 MB of Python objects before any check, and
60 MB sent over 20 connections took a server to 2.1 GB. :class:`BoundedMsgPackPacket`
decodes the same wire format with:

* msgpack's own limits, checked as it reads: at most :data:`MAX_CONTAINER`
  entries in any array or map, :data:`MAX_EXT` bytes in an extension value;
* at most :data:`MAX_OBJECTS` containers and entries in the whole packet,
  counted as each container completes, so decoding stops long before the
  amplification adds up (a chat event has a dozen);
* JavaScript's ``undefined`` as absent: socket.io-client's msgpack parser
  (notepack.io) writes it as the extension value type 0 (``d4 00 00``), so
  ``{room, since: undefined}`` arrived as a map holding an ``ExtType`` and was
  refused. A map entry whose value is ``undefined`` is dropped; an array
  element becomes ``None`` (as ``JSON.stringify`` does).

A packet past a bound raises :class:`PacketTooComplex` (a ``ValueError``), so
the server closes that connection like any other undecodable packet, and
nothing else is affected. Encoding is python-socketio's.
"""

from __future__ import annotations

from typing import Any

import msgpack
from socketio import msgpack_packet

MAX_CONTAINER = 64  # entries in one array or map
MAX_OBJECTS = 512  # containers and entries in one packet
MAX_EXT = 16  # bytes of one extension value
UNDEFINED_TYPE = 0  # notepack.io's extension type for `undefined`


class PacketTooComplex(ValueError):
    """A packet holds more than a chat event ever needs."""


class _Undefined:
    """JavaScript's ``undefined`` while a packet is decoded."""


UNDEFINED = _Undefined()


class _Budget:
    """Hooks for one decoding: count what is built, drop what is undefined."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_OBJECTS

    def _spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise PacketTooComplex(f"more than {MAX_OBJECTS} objects in one packet")

    def array(self, items: list[Any]) -> list[Any]:
        self._spend(1 + len(items))
        return [None if item is UNDEFINED else item for item in items]

    def map(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        self._spend(1 + len(pairs))
        return {key: value for key, value in pairs if value is not UNDEFINED}

    @staticmethod
    def ext(code: int, data: bytes) -> Any:
        if code == UNDEFINED_TYPE:
            return UNDEFINED
        return msgpack.ExtType(code, data)  # refused by the event's parser


def loads(data: bytes) -> Any:
    """Decode one msgpack value within the bounds above."""
    budget = _Budget()
    value = msgpack.unpackb(
        data, list_hook=budget.array, object_pairs_hook=budget.map, ext_hook=budget.ext,
        max_array_len=MAX_CONTAINER, max_map_len=MAX_CONTAINER, max_ext_len=MAX_EXT)
    return None if value is UNDEFINED else value


class BoundedMsgPackPacket(msgpack_packet.MsgPackPacket):  # type: ignore[misc]
    """python-socketio's msgpack packet, decoded with :func:`loads`."""

    def decode(self, encoded_packet: bytes) -> None:
        decoded = loads(encoded_packet)
        if not isinstance(decoded, dict):
            raise ValueError("a msgpack Socket.IO packet is a map")
        self.packet_type = decoded["type"]
        self.data = decoded.get("data")
        self.id = decoded.get("id")
        self.namespace = decoded["nsp"]
