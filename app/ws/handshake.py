"""The WebSocket opening handshake (RFC 6455 section 4.2): check it, answer it.

:func:`accept` builds the 101 for a valid handshake (no extension, no
subprotocol) or raises; :func:`take_over` answers it and moves the TCP
connection to a :class:`~app.ws.connection.WebSocketConnection`, whether the
request was read by the front door (:mod:`app.eio.front`) or by aiohttp, whose
request then ends as if its peer had gone (:class:`HandedOff`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
from typing import Any

from aiohttp import web

from .. import compat
from .connection import OpenConnections, WebSocketConnection

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class HandshakeError(web.HTTPBadRequest):
    """A request that cannot be upgraded to a WebSocket (answered 400)."""


def accept(request: web.BaseRequest) -> bytes:
    """The 101 response to a valid WebSocket handshake; HandshakeError otherwise."""
    headers = request.headers
    if request.version < (1, 1):
        raise HandshakeError(text="WebSocket needs HTTP/1.1")
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError(text="not a WebSocket upgrade")
    connection = {token.strip() for token in headers.get("Connection", "").lower().split(",")}
    if "upgrade" not in connection:
        raise HandshakeError(text="no Connection: upgrade")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise web.HTTPUpgradeRequired(headers={"Sec-WebSocket-Version": "13"},
                                      text="WebSocket version 13 only")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (binascii.Error, ValueError):
        raise HandshakeError(text="invalid Sec-WebSocket-Key") from None
    digest = base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + digest + b"\r\n\r\n")


class HandedOff(web.StreamResponse):
    """What the aiohttp handler returns for a connection taken over: its 101 is
    written and the connection is no longer aiohttp's, so nothing more is."""

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> Any:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: Any, registry: OpenConnections, max_size: int,
              then: bytes = b"", send_buffer: int = 0) -> WebSocketConnection:
    """Answer the WebSocket handshake of ``request`` (with the frames ``then``, in
    the same write) and take its connection, from aiohttp or from the front door
    (:mod:`app.eio.front`); the handler then returns :class:`HandedOff`. Raises
    HandshakeError (or HTTPUpgradeRequired) for a bad handshake,
    ConnectionResetError if the peer is already gone. Nothing is read until
    :meth:`WebSocketConnection.listen`.

    ``send_buffer`` (bytes; 0: the system's default) bounds what the kernel
    holds for a peer that reads slowly: Linux grows a socket's send buffer
    up to megabytes by itself, and whatever waits there waits ahead of the
    next ping, beyond the server's reach."""
    response = accept(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the peer left during the handshake")
    sock = transport.get_extra_info("socket")
    if send_buffer and sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        except OSError:  # (not a socket that has one)
            pass
    connection = WebSocketConnection(transport, registry, max_size)
    detach = getattr(request, "detach", None)  # a request the front door read
    tail = detach() if detach is not None else compat.release_aiohttp_connection(request)
    if tail:
        connection.feed_later(tail)
    transport.set_protocol(connection)
    transport.write(response + then)
    try:
        transport.resume_reading()  # aiohttp may have paused it while it buffered
    except (AttributeError, NotImplementedError, RuntimeError):
        pass
    return connection
