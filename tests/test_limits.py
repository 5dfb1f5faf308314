"""Limits that answer instead of disconnecting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.chat.limits import TokenBucket

from .conftest import TIMEOUT, ServeFactory, sio_client


def test_token_bucket() -> None:
    """A burst passes, then each token waits 1/rate; waiting refills."""
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == 500
    now[0] += 0.25
    assert bucket.take() == 250
    now[0] += 0.25
    assert bucket.take() == 0
    now[0] += 100
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 500]
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1)


async def connect(url: str, serializer: str, transport: str, name: str,
                  **extra: Any) -> Any:
    sio = sio_client(serializer)
    await sio.connect(url, auth={"name": name}, namespaces=["/chat"], transports=[transport],
                      wait_timeout=TIMEOUT, **extra)
    return sio


async def refusal(url: str, serializer: str, transport: str, name: str) -> dict[str, Any]:
    """Connect, expecting a refusal; the refusal's {code, message}."""
    sio = sio_client(serializer)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("connect_error", errors.put_nowait, namespace="/chat")
    with pytest.raises(Exception):
        await sio.connect(url, auth={"name": name}, namespaces=["/chat"],
                          transports=[transport], wait_timeout=TIMEOUT)
    data: dict[str, Any] = (await asyncio.wait_for(errors.get(), TIMEOUT))["data"]
    return data


async def test_flood_is_rate_limited_and_connection_stays(
        serve: ServeFactory, serializer: str, transport: str) -> None:
    """Over the send and typing rates the ack is rate_limited with retry_after (ms);
    nothing is stored or relayed for it, the connection stays, and after waiting
    retry_after the next send goes through."""
    served = await serve(serializer=serializer, send_rate=5, send_burst=3,
                         typing_rate=1, typing_burst=2)
    sio = await connect(served.url, serializer, transport, "flood")
    try:
        await sio.call("join", {"room": "r"}, namespace="/chat")
        acks = await asyncio.gather(*(sio.call("send", {"room": "r", "text": f"m{i}"},
                                               namespace="/chat") for i in range(5)))
        assert [a["ok"] for a in acks] == [True, True, True, False, False]
        error = acks[3]["error"]
        assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 200
        typing = [await sio.call("typing", {"room": "r", "active": True}, namespace="/chat")
                  for _ in range(3)]
        assert [t["ok"] for t in typing] == [True, True, False]
        assert typing[2]["error"]["code"] == "rate_limited"
        await asyncio.sleep(error["retry_after"] / 1000)  # the behaviour under test
        later = await sio.call("send", {"room": "r", "text": "later"}, namespace="/chat")
        assert later["ok"] and later["message"]["seq"] == 4
    finally:
        await sio.disconnect()


async def test_room_and_connection_limits(serve: ServeFactory, serializer: str,
                                          transport: str) -> None:
    """Joining past max_rooms is too_large; connections past the per-name limit are
    refused at connect with rate_limited; closing one makes room again."""
    served = await serve(serializer=serializer, max_rooms=2, max_connections_per_name=2)
    first = await connect(served.url, serializer, transport, "ann")
    second = await connect(served.url, serializer, transport, "ann")
    try:
        for room in ("a", "b"):
            assert (await first.call("join", {"room": room}, namespace="/chat"))["ok"]
        third = await first.call("join", {"room": "c"}, namespace="/chat")
        assert third["error"]["code"] == "too_large"
        assert (await first.call("join", {"room": "a"}, namespace="/chat"))["ok"]  # rejoin ok
        error = await refusal(served.url, serializer, transport, "ann")
        assert error["code"] == "rate_limited"
        await second.disconnect()
        again = await connect(served.url, serializer, transport, "ann")
        await again.disconnect()
    finally:
        await first.disconnect()


async def test_connections_per_address_are_limited(serve: ServeFactory, serializer: str,
                                                   transport: str) -> None:
    """Past max_connections_per_address, another name from the same address is refused
    with rate_limited."""
    served = await serve(serializer=serializer, max_connections_per_address=2)
    held = [await connect(served.url, serializer, transport, f"u{i}") for i in range(2)]
    try:
        error = await refusal(served.url, serializer, transport, "u9")
        assert error["code"] == "rate_limited" and "address" in error["message"]
    finally:
        for sio in held:
            await sio.disconnect()
