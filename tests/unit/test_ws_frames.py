"""app/ws/frames.py: RFC 6455 framing, with plain calls (no connection)."""

from __future__ import annotations

import os

import pytest

from app.ws.frames import (
    BINARY, CLOSE, FIN, INVALID_DATA, PROTOCOL_ERROR, TEXT, close_payload_problem, frame, unmask,
)


@pytest.mark.parametrize(("size", "header"), [
    (0, bytes((FIN | TEXT, 0))), (125, bytes((FIN | TEXT, 125))),  # 7-bit length
    (126, bytes((FIN | TEXT, 126)) + (126).to_bytes(2, "big")),  # 16-bit length
    (65535, bytes((FIN | TEXT, 126)) + (65535).to_bytes(2, "big")),
    (65536, bytes((FIN | TEXT, 127)) + (65536).to_bytes(8, "big")),  # 64-bit length
])
def test_a_server_frame_is_final_unmasked_with_the_shortest_length(size: int,
                                                                   header: bytes) -> None:
    payload = b"x" * size
    assert frame(TEXT, payload) == header + payload


def test_binary_frames_carry_their_opcode() -> None:
    assert frame(BINARY, b"\x01")[:2] == bytes((FIN | BINARY, 1))


def test_unmask_is_its_own_inverse() -> None:
    mask, data = os.urandom(4), os.urandom(1001)
    assert unmask(mask, unmask(mask, data)) == data
    assert unmask(b"\x00\x00\x00\x00", data) == data
    assert unmask(mask, b"") == b""


@pytest.mark.parametrize(("payload", "problem"), [
    (b"", None), ((1000).to_bytes(2, "big"), None), ((4999).to_bytes(2, "big") + b"bye", None),
    (b"\x03", PROTOCOL_ERROR),  # one byte
    ((999).to_bytes(2, "big"), PROTOCOL_ERROR), ((1005).to_bytes(2, "big"), PROTOCOL_ERROR),
    ((1006).to_bytes(2, "big"), PROTOCOL_ERROR), ((1015).to_bytes(2, "big"), PROTOCOL_ERROR),
    ((2999).to_bytes(2, "big"), PROTOCOL_ERROR), ((5000).to_bytes(2, "big"), PROTOCOL_ERROR),
    ((1000).to_bytes(2, "big") + b"\xff", INVALID_DATA),  # a reason that is not UTF-8
])
def test_close_payloads_rfc_6455_forbids(payload: bytes, problem: int | None) -> None:
    found = close_payload_problem(payload)
    assert (found[0] if found else None) == problem
    assert CLOSE == 0x8
