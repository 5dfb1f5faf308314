"""A bare Engine.IO v4 / Socket.IO v5 client, for tests that must misbehave.

It speaks the wire protocol by hand over aiohttp (WebSocket or HTTP
long-polling) with either serializer, and does only what the test says:
it answers pings only while ``answer_pings`` is true, and polls only when
asked to. Packets come back as dicts ``{"type", "nsp", "data", "id"}``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import msgpack

# Engine.IO packet types
EIO_OPEN, EIO_CLOSE, EIO_PING, EIO_PONG, EIO_MESSAGE = "0", "1", "2", "3", "4"
# Socket.IO packet types
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR = 0, 1, 2, 3, 4
SEPARATOR = "\x1e"


def encode_sio(packet: dict[str, Any], serializer: str) -> str | bytes:
    """A Socket.IO packet as the Engine.IO MESSAGE payload (str for JSON, bytes for msgpack)."""
    if serializer == "msgpack":
        encoded: bytes = msgpack.packb({k: v for k, v in packet.items() if v is not None})
        return encoded
    text = str(packet["type"])
    if packet.get("nsp", "/") != "/":
        text += packet["nsp"] + ","
    if packet.get("id") is not None:
        text += str(packet["id"])
    if packet.get("data") is not None:
        text += json.dumps(packet["data"])
    return text


def decode_sio(payload: str | bytes) -> dict[str, Any]:
    if isinstance(payload, bytes):
        decoded: dict[str, Any] = msgpack.unpackb(payload)
        return {"type": decoded["type"], "nsp": decoded.get("nsp", "/"),
                "data": decoded.get("data"), "id": decoded.get("id")}
    kind, rest = int(payload[0]), payload[1:]
    nsp = "/"
    if rest.startswith("/"):
        nsp, _, rest = rest.partition(",")
    digits = ""
    while rest and rest[0].isdigit():
        digits, rest = digits + rest[0], rest[1:]
    return {"type": kind, "nsp": nsp, "data": json.loads(rest) if rest else None,
            "id": int(digits) if digits else None}


class RawClient:
    def __init__(self, url: str, transport: str, serializer: str,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base = url + "/socket.io/?EIO=4"
        self.transport = transport
        self.serializer = serializer
        self.session = session or aiohttp.ClientSession()  # closed with the client
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sid = ""
        self.handshake: dict[str, Any] = {}
        self.answer_pings = True
        self.pings = 0
        self._inbox: list[str | bytes] = []  # Engine.IO packets read, not yet taken
        self._next_id = 0

    @classmethod
    async def open(cls, url: str, transport: str, serializer: str,
                   session: aiohttp.ClientSession | None = None) -> RawClient:
        client = cls(url, transport, serializer, session)
        if transport == "websocket":
            client.ws = await client.session.ws_connect(client.base + "&transport=websocket")
        else:
            async with client.session.get(client.base + "&transport=polling") as response:
                client._inbox.extend(_split_payload(await response.text()))
        opened = await client._next_eio()
        assert isinstance(opened, str) and opened[0] == EIO_OPEN, opened
        client.handshake = json.loads(opened[1:])
        client.sid = client.handshake["sid"]
        return client

    # -- Engine.IO ------------------------------------------------------------

    async def send_eio(self, *packets: str | bytes) -> int:
        """Send Engine.IO packets; returns the HTTP status for polling (101 for ws)."""
        if self.ws is not None:
            for p in packets:
                await (self.ws.send_bytes(p) if isinstance(p, bytes) else self.ws.send_str(p))
            return 101
        body = SEPARATOR.join(
            "b" + base64.b64encode(p).decode() if isinstance(p, bytes) else p for p in packets)
        async with self.session.post(self._poll_url(), data=body.encode()) as response:
            await response.read()
            return response.status

    def _poll_url(self) -> str:
        return f"{self.base}&transport=polling&sid={self.sid}"

    async def poll(self) -> tuple[int, list[str | bytes]]:
        """One long-poll GET: (status, Engine.IO packets)."""
        async with self.session.get(self._poll_url()) as response:
            text = await response.text()
            return response.status, _split_payload(text) if response.status == 200 else []

    async def _next_eio(self) -> str | bytes:
        while not self._inbox:
            if self.ws is not None:
                frame = await self.ws.receive()
                if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._inbox.append(frame.data if frame.type == aiohttp.WSMsgType.BINARY
                                       else str(frame.data))
                else:
                    raise ConnectionError(f"websocket ended: {frame.type}")
            else:
                status, packets = await self.poll()
                if status != 200:
                    raise ConnectionError(f"poll answered {status}")
                self._inbox.extend(packets)
        return self._inbox.pop(0)

    async def next_eio(self) -> str | bytes:
        """The next Engine.IO packet as it came (pings answered, not returned)."""
        while True:
            p = await self._next_eio()
            if p == EIO_PING:
                await self.send_eio(EIO_PONG)
                continue
            return p

    # -- Socket.IO ------------------------------------------------------------

    async def send_sio(self, packet: dict[str, Any]) -> int:
        payload = encode_sio(packet, self.serializer)
        return await self.send_eio(payload if isinstance(payload, bytes)
                                   else EIO_MESSAGE + payload)

    async def recv(self) -> dict[str, Any]:
        """The next Socket.IO packet, answering pings on the way if told to."""
        while True:
            p = await self._next_eio()
            if isinstance(p, bytes):
                return decode_sio(p)
            if p[0] == EIO_PING:
                self.pings += 1
                if self.answer_pings:
                    await self.send_eio(EIO_PONG + p[1:])
            elif p[0] == EIO_MESSAGE:
                return decode_sio(p[1:])
            elif p[0] == EIO_CLOSE:
                raise ConnectionError("server closed the session")

    async def next_ping(self) -> None:
        """Wait for the server's next PING (answered if ``answer_pings``)."""
        while True:
            p = await self._next_eio()
            if isinstance(p, str) and p[0] == EIO_PING:
                self.pings += 1
                if self.answer_pings:
                    await self.send_eio(EIO_PONG + p[1:])
                return
            if isinstance(p, str) and p[0] == EIO_CLOSE:
                raise ConnectionError("server closed the session")

    async def connect(self, auth: Any, nsp: str = "/chat") -> dict[str, Any]:
        await self.send_sio({"type": CONNECT, "nsp": nsp, "data": auth})
        return await self.recv()

    async def call(self, event: str, *args: Any, nsp: str = "/chat") -> Any:
        """Emit with an ack id and return the ack's first argument, skipping events."""
        self._next_id += 1
        ack_id = self._next_id
        await self.send_sio({"type": EVENT, "nsp": nsp, "data": [event, *args], "id": ack_id})
        while True:
            packet = await self.recv()
            if packet["type"] == ACK and packet["id"] == ack_id:
                return packet["data"][0] if packet["data"] else None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()


def _split_payload(text: str) -> list[str | bytes]:
    packets: list[str | bytes] = []
    for p in text.split(SEPARATOR) if text else []:
        packets.append(base64.b64decode(p[1:]) if p.startswith("b") else p)
    return packets
