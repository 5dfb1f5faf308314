"""app/ws/: the WebSocket connections Roomcast takes over from aiohttp,
spoken to frame by frame over a raw TCP socket (RFC 6455). If aiohttp changes
what :func:`app.ws.handshake.take_over` relies on, these fail."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.eio import server as engine_module
from app.ws import connection as websocket
from app.appkeys import SIO_KEY
from app.ws.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, unmask

from ..conftest import TIMEOUT, Served, until
from ..rawclient import CONNECT, decode_sio, encode_sio

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers

RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # section 1.3


def handshake(host: str, key: str = RFC_KEY, **headers: str) -> bytes:
    fields = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **headers}
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n{lines}\r\n".encode()


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
          rsv: int = 0) -> bytes:
    """A client frame (masked unless told otherwise)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + unmask(mask, payload)


class RawWebSocket:
    """A WebSocket client over a bare TCP connection, one frame at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = b""
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, served: Served, request: bytes | None = None, then: bytes = b"",
                   source: str | None = None) -> RawWebSocket:
        """Connect (from address ``source``), send the handshake (and ``then``, in
        the same write), read the answer."""
        url = urlsplit(served.url)
        reader, writer = await asyncio.open_connection(
            url.hostname, url.port, local_addr=(source, 0) if source else None)
        client = cls(reader, writer)
        writer.write((request or handshake(url.netloc)) + then)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status, *lines = head.decode().split("\r\n")
        client.status = status.encode()
        client.headers = {k.lower(): v.strip() for k, _, v in
                          (line.partition(":") for line in lines if line)}
        return client

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[bool, int, bytes]:
        async with asyncio.timeout(TIMEOUT):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "a server frame must not be masked"
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            return bool(first & 0x80), first & 0x0F, await self.reader.readexactly(n)

    async def opened(self) -> dict[str, Any]:
        """The Engine.IO OPEN packet, the first frame of every session."""
        _, opcode, payload = await self.read_frame()
        assert opcode == TEXT and payload.startswith(b"0"), payload
        handshake: dict[str, Any] = json.loads(payload[1:])
        return handshake

    async def at_eof(self) -> bool:
        async with asyncio.timeout(TIMEOUT):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


def sio_message(serializer: str, packet: dict[str, Any]) -> tuple[int, bytes]:
    """A Socket.IO packet as (opcode, payload) of one WebSocket message."""
    payload = encode_sio(packet, serializer)
    if isinstance(payload, bytes):
        return BINARY, payload
    return TEXT, ("4" + payload).encode()


def sio_packet(opcode: int, payload: bytes) -> dict[str, Any]:
    return decode_sio(payload if opcode == BINARY else payload.decode()[1:])


async def test_the_handshake_is_answered_as_rfc_6455_says(served: Served) -> None:
    """101 with the accept key of RFC 6455's own example, no extension (a
    permessage-deflate offer is declined), then Engine.IO's OPEN."""
    client = await RawWebSocket.open(served, handshake(
        urlsplit(served.url).netloc, **{"Sec-WebSocket-Extensions": "permessage-deflate"}))
    try:
        assert client.status == b"HTTP/1.1 101 Switching Protocols"
        assert client.headers["upgrade"].lower() == "websocket"
        assert client.headers["connection"].lower() == "upgrade"
        assert client.headers["sec-websocket-accept"] == RFC_ACCEPT
        assert "sec-websocket-extensions" not in client.headers
        opened = await client.opened()
        assert opened["sid"] in served.app[SIO_KEY].eio.sockets
    finally:
        client.close()


async def test_a_session_knows_its_peers_address(served: Served) -> None:
    """REMOTE_ADDR is the peer's address (python-engineio's aiohttp driver said
    127.0.0.1 for everyone), so the log names who connected."""
    client = await RawWebSocket.open(served, source="127.0.0.2")
    try:
        sid = (await client.opened())["sid"]
        assert served.app[SIO_KEY].environ[sid]["REMOTE_ADDR"] == "127.0.0.2"
    finally:
        client.close()


@pytest.mark.parametrize(("headers", "status"), [
    ({"Sec-WebSocket-Version": "8"}, b"426"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, b"400"),  # 5 bytes, not 16
    ({"Sec-WebSocket-Key": "not base64!"}, b"400"),
    ({"Connection": "keep-alive, Upgrade-Insecure"}, b"400"),
])
async def test_a_bad_handshake_is_refused_and_leaves_no_session(
        served: Served, headers: dict[str, str], status: bytes) -> None:
    headers = dict(headers)  # shared by every run of the parameter
    key = headers.pop("Sec-WebSocket-Key", RFC_KEY)
    client = await RawWebSocket.open(served, handshake(urlsplit(served.url).netloc, key,
                                                       **headers))
    try:
        assert client.status.split()[1] == status, client.status
        if status == b"426":
            assert client.headers["sec-websocket-version"] == "13"
        await until(lambda: not served.app[SIO_KEY].eio.sockets)
        assert not served.app[SIO_KEY].eio.connections
    finally:
        client.close()


async def test_fragments_and_a_ping_between_them_make_one_message(served: Served) -> None:
    """A CONNECT sent in three fragments with a ping in between: the ping is
    answered with its own payload, and the message is read whole."""
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        opcode, payload = sio_message(served.settings.serializer,
                                      {"type": CONNECT, "nsp": "/chat", "data": {"name": "frag"}})
        a, b = len(payload) // 3, 2 * len(payload) // 3
        client.send(frame(opcode, payload[:a], fin=False)
                    + frame(PING, b"are you there")
                    + frame(CONTINUATION, payload[a:b], fin=False))
        assert await client.read_frame() == (True, PONG, b"are you there")
        client.send(frame(CONTINUATION, payload[b:]))
        fin, opcode, payload = await client.read_frame()
        assert sio_packet(opcode, payload)["type"] == CONNECT  # not CONNECT_ERROR
    finally:
        client.close()


async def test_frames_sent_with_the_handshake_are_read(served: Served) -> None:
    """A client that writes its first frame in the same packet as its request:
    what aiohttp buffered after the headers is not lost in the take-over."""
    client = await RawWebSocket.open(served, then=frame(PING, b"early"))
    try:
        await client.opened()
        assert await client.read_frame() == (True, PONG, b"early")
    finally:
        client.close()


@pytest.mark.parametrize(("bad", "code"), [
    (frame(TEXT, b"4x", masked=False), 1002),
    (frame(TEXT, b"4x", rsv=0x40), 1002),  # compressed, though nothing was agreed
    (frame(CONTINUATION, b"x"), 1002),
    (frame(TEXT, b"4\xff\xfe"), 1007),  # not UTF-8
    (frame(PING, b"x" * 126), 1002),  # control frames carry at most 125 bytes
    (frame(0x3, b"x"), 1002),  # reserved opcode
    (bytes((0x81, 0xFF)) + (1 << 62).to_bytes(8, "big"), 1009),  # refused on its header
    # Close codes a peer must never send (RFC 6455 section 7.4), and a bad reason
    *((frame(CLOSE, bad_code.to_bytes(2, "big")), 1002)
      for bad_code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)),
    (frame(CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007),
])
async def test_a_protocol_violation_fails_the_connection_with_its_code(
        served: Served, caplog: pytest.LogCaptureFixture, bad: bytes, code: int) -> None:
    """Anything RFC 6455 forbids gets a Close with the matching status code, the
    connection ends, the session is cleaned up, and the log says why."""
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        client.send(bad)
        fin, opcode, payload = await client.read_frame()
        assert (opcode, int.from_bytes(payload[:2], "big")) == (CLOSE, code)
        assert await client.at_eof()
        await until(lambda: not served.app[SIO_KEY].eio.sockets)
        assert not served.app[SIO_KEY].eio.connections
        assert any("closing a WebSocket" in r.getMessage() for r in caplog.records)
    finally:
        client.close()


async def test_a_client_close_is_answered_and_ends_the_session(served: Served) -> None:
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        client.send(frame(CLOSE, (1000).to_bytes(2, "big") + b"bye"))
        assert await client.read_frame() == (True, CLOSE, (1000).to_bytes(2, "big"))
        assert await client.at_eof()  # the server closes TCP first (RFC 6455 7.1.1)
        await until(lambda: not served.app[SIO_KEY].eio.sockets)
        assert not served.app[SIO_KEY].eio.connections
    finally:
        client.close()


async def test_a_peer_that_never_answers_our_close_is_cut_off(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server closes a session; the peer reads the Close but never answers it:
    the connection is dropped after CLOSE_TIMEOUT, not kept."""
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.2)
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        assert await served.app[SIO_KEY].close_all_sessions() == 1  # as at shutdown
        assert await client.read_frame() == (True, CLOSE, (1001).to_bytes(2, "big"))
        assert await client.at_eof()
        assert not served.app[SIO_KEY].eio.connections
    finally:
        client.close()


async def test_a_peer_that_answers_our_close_ends_the_connection_at_once(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server closes a session and the peer answers its Close: the
    connection ends then, not when CLOSE_TIMEOUT runs out (the session had let
    go of the connection, which then read nothing, not even the answer)."""
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 3600.0)
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        assert await served.app[SIO_KEY].close_all_sessions() == 1  # as at shutdown
        assert await client.read_frame() == (True, CLOSE, (1001).to_bytes(2, "big"))
        client.send(frame(CLOSE, (1000).to_bytes(2, "big")))
        assert await client.at_eof()
        await until(lambda: not served.app[SIO_KEY].eio.connections)
    finally:
        client.close()


async def burst_is_answered_in_order(client: RawWebSocket, serializer: str, n: int) -> None:
    """Join /chat, then send ``n`` acked events in one write: all n acks come back,
    in order."""
    client.send(frame(*sio_message(serializer, {"type": CONNECT, "nsp": "/chat",
                                                "data": {"name": "burst"}})))
    assert sio_packet(*(await client.read_frame())[1:])["type"] == CONNECT
    client.send(b"".join(frame(*sio_message(serializer, {
        "type": 2, "nsp": "/chat", "data": ["rooms"], "id": i})) for i in range(1, n + 1)))
    acks = [sio_packet(*(await client.read_frame())[1:])["id"] for _ in range(n)]
    assert acks == list(range(1, n + 1))


async def test_aiohttp_forgets_a_connection_it_handed_over(served: Served) -> None:
    """Once its handshake is answered a WebSocket is no longer one of aiohttp's
    connections, and nothing of aiohttp's (request, handler, task) is kept for it;
    a burst of messages on it is read in order."""
    runner = served.server.runner
    assert runner is not None and runner.server is not None
    clients = [await RawWebSocket.open(served) for _ in range(5)]
    try:
        for client in clients:
            await client.opened()
        await until(lambda: not runner.server.connections)  # type: ignore[union-attr]
        assert len(served.app[SIO_KEY].eio.connections) == 5
        await burst_is_answered_in_order(clients[0], served.settings.serializer, 200)
    finally:
        for client in clients:
            client.close()
    await until(lambda: not served.app[SIO_KEY].eio.connections)


async def test_a_burst_over_the_inbox_bound_pauses_the_peer_and_loses_nothing(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that sends faster than its messages are handled stops being read
    (its TCP window closes) until they are, and every message is handled, in order."""
    monkeypatch.setattr(engine_module, "PAUSE_BYTES", 200)
    pauses = 0
    pause = websocket.WebSocketConnection.pause_reading

    def counting_pause(self: websocket.WebSocketConnection) -> None:
        nonlocal pauses
        pauses += 1
        pause(self)

    monkeypatch.setattr(websocket.WebSocketConnection, "pause_reading", counting_pause)
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        await burst_is_answered_in_order(client, served.settings.serializer, 500)
        assert pauses > 0
    finally:
        client.close()


def test_unmask_is_its_own_inverse_and_matches_the_rfc_example() -> None:
    mask = bytes.fromhex("37fa213d")
    assert unmask(mask, bytes.fromhex("7f9f4d5158")) == b"Hello"  # RFC 6455 section 5.7
    data = os.urandom(1001)
    assert unmask(mask, unmask(mask, data)) == data
    assert unmask(mask, b"") == b""


async def test_a_packet_engineio_does_not_handle_drops_nothing_after_it(served: Served) -> None:
    """A NOOP (which python-engineio refuses as an unknown packet) sent in the same
    write as events: it is skipped, and the events after it are all handled."""
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        serializer = served.settings.serializer
        client.send(frame(*sio_message(serializer, {"type": CONNECT, "nsp": "/chat",
                                                    "data": {"name": "noop"}})))
        assert sio_packet(*(await client.read_frame())[1:])["type"] == CONNECT
        events = [frame(*sio_message(serializer, {"type": 2, "nsp": "/chat",
                                                  "data": ["rooms"], "id": i}))
                  for i in (1, 2)]
        client.send(events[0] + frame(TEXT, b"6") + events[1])
        acks = [sio_packet(*(await client.read_frame())[1:])["id"] for _ in range(2)]
        assert acks == [1, 2]
    finally:
        client.close()


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1014, 3000, 4999])
async def test_a_close_with_any_allowed_code_is_answered(served: Served, code: int) -> None:
    """Codes RFC 6455 allows a peer to send are echoed in the closing handshake."""
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        client.send(frame(CLOSE, code.to_bytes(2, "big") + "ça".encode()))
        assert await client.read_frame() == (True, CLOSE, code.to_bytes(2, "big"))
        assert await client.at_eof()
    finally:
        client.close()


@pytest.mark.matrix("transport")  # control frames: no serializer in them
async def test_a_peer_that_pings_and_never_reads_cannot_grow_our_buffer(
        served: Served) -> None:
    """A peer floods pings (no Socket.IO connect needed) and reads nothing: the
    server reads on (a slow reader must still be heard) but owes it one pong,
    for its latest ping, rather than queueing pongs without bound; when the
    peer reads again it gets pongs for its pings in order, ending with the
    latest, and the connection is still up."""
    pings = (24 << 20) // 131  # 24 MB of 125-byte pings: more than the kernel buffers
    client = await RawWebSocket.open(served)
    try:
        await client.opened()
        [connection] = list(served.app[SIO_KEY].eio.connections)
        payloads = [i.to_bytes(4, "big") * 31 + b"p" for i in range(pings)]
        client.send(b"".join(frame(PING, payload) for payload in payloads))
        transport = connection.transport
        assert transport is not None
        await until(lambda: connection._pong_owed == payloads[-1], 30)  # all read
        assert transport.get_write_buffer_size() < 1 << 20
        index = {payload: i for i, payload in enumerate(payloads)}
        seen = -1
        while seen < len(payloads) - 1:
            fin, opcode, payload = await client.read_frame()
            assert (fin, opcode) == (True, PONG)
            assert index[payload] > seen  # in order, each for a ping it sent
            seen = index[payload]
        client.send(frame(PING, b"still here"))
        assert await client.read_frame() == (True, PONG, b"still here")
    finally:
        client.close()


def test_a_frame_trickled_in_small_pieces_is_not_copied_per_piece() -> None:
    """The bytes of a frame that arrives piece by piece are appended to one
    buffer, not copied whole for every piece (which cost CPU quadratic in the
    frame's size), and the message is delivered whole."""
    class Transport:
        def __init__(self) -> None:
            self.written = b""

        def write(self, data: bytes) -> None:
            self.written += data

        def get_extra_info(self, name: str) -> Any:
            return None

        def is_closing(self) -> bool:
            return False

        def set_write_buffer_limits(self, high: int | None = None) -> None:
            pass

    class Listener:
        messages: list[str | bytes] = []

        def ws_message(self, data: str | bytes) -> None:
            self.messages.append(data)

        def ws_closed(self) -> None:
            pass

        def ws_writable(self, writable: bool) -> None:
            pass

    connection = websocket.WebSocketConnection(
        Transport(), websocket.OpenConnections(), max_size=1 << 20)  # type: ignore[arg-type]
    listener = Listener()
    connection.listen(listener)
    message = os.urandom(1 << 16)
    data = frame(BINARY, message) + frame(BINARY, b"next")
    connection.data_received(data[:100])
    buffer = connection._buffer
    for at in range(100, len(data) - 10, 1000):
        connection.data_received(data[at:at + 1000])
        assert connection._buffer is buffer or connection._buffer is None
    connection.data_received(data[at + 1000:])
    assert listener.messages == [message, b"next"]
    assert connection._buffer is None
