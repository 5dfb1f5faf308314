"""Limits that answer instead of disconnecting."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import pytest

from app.core.limits import TokenBucket
from app.core.models import RoomName

from ..conftest import TIMEOUT, ServeFactory, sio_client


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


def test_token_bucket_charges_after_the_fact() -> None:
    """A cost taken up front and settled later: what was not used comes back (never
    past the burst), a cost over the reservation leaves a debt the next take waits out."""
    now = [0.0]
    bucket = TokenBucket(rate=1000, burst=5000, clock=lambda: now[0])
    assert bucket.take(4000) == 0
    bucket.charge(-3000)  # the reply used 1000 of the 4000 taken
    assert bucket.take(4000) == 0
    bucket.charge(2000)  # it used 6000: 2000 in debt
    assert bucket.take(4000) == 6000  # 6000 tokens short at 1000/s
    now[0] += 6
    assert bucket.take(4000) == 0
    bucket.charge(-10**6)
    assert bucket.take(5000) == 0 and bucket.take(1) == 1  # refunds stop at the burst


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


async def test_every_event_has_its_own_bucket(serve: ServeFactory, serializer: str,
                                              transport: str) -> None:
    """join, leave, history, rooms and changes are each limited by their own bucket:
    past its burst an event is answered rate_limited with retry_after, and the
    others still pass; nothing of a refused join, leave or change happens."""
    served = await serve(serializer=serializer, join_rate=0.5, join_burst=3, leave_rate=0.5,
                         leave_burst=2, history_rate=0.5, history_burst=2, rooms_rate=0.5,
                         rooms_burst=2, change_rate=0.5, change_burst=2)
    sio = await connect(served.url, serializer, transport, "eager")

    async def call(event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack: dict[str, Any] = await sio.call(event, data, namespace="/chat", timeout=TIMEOUT)
        return ack

    def refused(ack: dict[str, Any]) -> bool:
        return (not ack["ok"] and ack["error"]["code"] == "rate_limited"
                and 1000 <= ack["error"]["retry_after"] <= 2000)

    try:
        joins = [await call("join", {"room": room}) for room in ("a", "b", "c", "d")]
        assert [j["ok"] for j in joins] == [True, True, True, False] and refused(joins[3])
        leaves = [await call("leave", {"room": room}) for room in ("a", "b", "c")]
        assert [x["ok"] for x in leaves] == [True, True, False] and refused(leaves[2])
        assert list(served.chat.connections[sio.get_sid("/chat")].rooms) == ["c"]
        history = [await call("history", {"room": "c"}) for _ in range(3)]
        assert [h["ok"] for h in history] == [True, True, False] and refused(history[2])
        rooms = [await call("rooms", {}) for _ in range(3)]
        assert [r["ok"] for r in rooms] == [True, True, False] and refused(rooms[2])
        assert (await call("send", {"room": "c", "text": "still here"}))["ok"]
        assert [name for name, _ in await served.chat.presence.rooms()] == ["c"]
        changes = [await call(event, {"room": "c", "seq": 1, "emoji": "👍"})
                   for event in ("react", "unreact", "react")]
        assert [c["ok"] for c in changes] == [True, True, False] and refused(changes[2])
        assert "reactions" not in (await served.chat.store.page(RoomName("c"))).messages[0] \
            .as_dict()
    finally:
        await sio.disconnect()


def encoded_size(value: Any, serializer: str) -> int:
    """Bytes ``value`` takes on the wire in ``serializer`` (JSON escapes non-ASCII)."""
    if serializer == "msgpack":
        return len(msgpack.packb(value))
    return len(json.dumps(value, separators=(",", ":")))


async def test_replies_are_bounded_and_metered_in_bytes(serve: ServeFactory, serializer: str,
                                                        transport: str) -> None:
    """A join or history reply holds at most max_reply_bytes of messages, as encoded,
    with more: true when it stops early, and paging on from its edge gives the rest;
    the bytes replies return are metered, and the most a reply may cost is taken
    before the store is read, so pipelined reads past the budget are rate_limited."""
    served = await serve(serializer=serializer, max_reply_bytes=50_000,
                         reply_bytes_rate=1_000, reply_bytes_burst=200_000)
    text = "\N{PARTY POPPER}" * 4000  # 16,000 bytes of UTF-8, 48,000 of escaped JSON
    for _ in range(20):
        await served.chat.store.append(RoomName("big"), "bob", text, None)
    sio = await connect(served.url, serializer, transport, "reader")
    try:
        caught_up = await sio.call("join", {"room": "big", "since": 0}, namespace="/chat")
        seqs = [m["seq"] for m in caught_up["messages"]]
        assert caught_up["more"] and seqs == list(range(1, len(seqs) + 1))
        assert encoded_size(caught_up["messages"], serializer) <= 50_000
        latest = await sio.call("join", {"room": "big"}, namespace="/chat")
        assert latest["more"] and latest["messages"][-1]["seq"] == 20
        assert encoded_size(latest["messages"], serializer) <= 50_000
        after = await sio.call("history", {"room": "big", "after": seqs[-1], "limit": 200},
                               namespace="/chat")
        assert after["more"] and after["messages"][0]["seq"] == seqs[-1] + 1
        pipelined = await asyncio.gather(*(
            sio.call("history", {"room": "big", "before": 20}, namespace="/chat")
            for _ in range(4)))
        assert [p["ok"] for p in pipelined] == [True, False, False, False]
        error = pipelined[1]["error"]
        assert error["code"] == "rate_limited" and error["retry_after"] > 10_000
    finally:
        await sio.disconnect()
