"""RFC 6455 framing, with no I/O: what a server writes and how it checks a Close.

A server's frames are never masked and never fragmented here; what a client
sends is parsed by :class:`app.ws.connection.WebSocketConnection`, which uses
:func:`unmask` and :func:`close_payload_problem`. Tested with plain calls in
``tests/unit/test_ws_frames.py``.
"""

from __future__ import annotations

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
FIN = 0x80

# close codes (RFC 6455 section 7.4.1)
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``mask`` (at C speed, as big integers)."""
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (a server's frames are never masked)."""
    n = len(payload)
    if n < 126:
        header = bytes((FIN | opcode, n))
    elif n < 65536:
        header = bytes((FIN | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((FIN | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def close_payload_problem(payload: bytes) -> tuple[int, str] | None:
    """Why a Close frame's payload is invalid (the code to fail with and a
    reason), or None. RFC 6455 section 5.5.1: empty, or a 2-byte code and UTF-8
    text; section 7.4: 1005, 1006, 1015 and codes outside 1000-4999 are never
    sent, 1004 and 1016-2999 are reserved."""
    if not payload:
        return None
    if len(payload) == 1:
        return PROTOCOL_ERROR, "a one-byte Close"
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return PROTOCOL_ERROR, f"a Close with code {code}, which RFC 6455 forbids"
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        return INVALID_DATA, "a Close reason that is not UTF-8"
    return None
