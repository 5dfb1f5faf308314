"""The /chat events over the wire: real server, real clients. What the events
mean is tested without sockets (``tests/unit/test_chat.py``); here is what
the wire adds: both transports in one room, a malformed payload and the
reserved event names on every transport and serializer, events sent without
asking for an ack, refused connects, pipelined sends keeping their order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from app.chat.namespace import NAMESPACE
from app.core.models import RoomName

from ..conftest import PeerFactory, Served, barrier, sio_client
from ..unit.test_chat import MALFORMED


@pytest.mark.matrix
async def test_mixed_transports_share_a_room(served: Served, peer: PeerFactory) -> None:
    """A WebSocket member and a long-polling member of one room get each other's messages."""
    ws = await peer("ws", transports=["websocket"])
    poll = await peer("poll", transports=["polling"])
    await ws.join("mixed")
    await poll.join("mixed")
    from_ws = await ws.send("mixed", "over websocket")
    from_poll = await poll.send("mixed", "over polling")
    assert await poll.next("message") == from_ws
    assert await ws.next("message") == from_poll


@pytest.mark.matrix
async def test_a_malformed_payload_is_answered_over_every_transport_and_serializer(
        peer: PeerFactory) -> None:
    """A malformed payload, an unknown event and the names Socket.IO reserves,
    on every transport and serializer (the whole list of malformed payloads is
    a unit test: parsing is the same whatever carried the payload)."""
    alice = await peer("alice")
    for event, payload in [("send", {"room": "lobby", "text": ["x"]}), ("nosuchevent", {}),
                           ("disconnect", None), ("connect", {"name": "x"})]:
        ack = await alice.call(event, payload) if payload is not None else await alice.call(event)
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request", (event, ack)
    assert (await alice.join("lobby"))["ok"]


async def test_events_without_ack_harm_nothing(served: Served, peer: PeerFactory) -> None:
    """Events sent without asking for an ack, valid or not, crash nothing."""
    alice, bob = await peer("alice"), await peer("bob")
    await bob.join("lobby")
    await alice.join("lobby")
    for event, payload in MALFORMED + [("send", {"room": "lobby", "text": "no ack"})]:
        await alice.sio.emit(event, payload, namespace="/chat")
    assert (await bob.next("message"))["text"] == "no ack"
    await barrier(alice, bob, "lobby")
    assert list(served.chat.connections[alice.sid].rooms) == [RoomName("lobby")]


@pytest.mark.parametrize("auth", [None, {}, {"name": ""}, {"name": "x" * 33},
                                  {"name": "bad\tname"}, {"name": 12}])
async def test_bad_names_are_refused_at_connect(served: Served, transport: str,
                                                auth: Any) -> None:
    """A connect without a valid name is refused with code bad_name."""
    sio = sio_client(served.settings.serializer)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("connect_error", errors.put_nowait, namespace=NAMESPACE)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(served.url, auth=auth, namespaces=[NAMESPACE],
                          transports=[transport], wait_timeout=5)
    error = await asyncio.wait_for(errors.get(), 5)
    assert error["data"]["code"] == "bad_name" and error["data"]["message"]
    assert served.chat.connections == {}


async def test_pipelined_sends_keep_their_order(peer: PeerFactory) -> None:
    """Sends fired without waiting for acks are stored in the order they were sent."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("pipe")
    await bob.join("pipe")
    acks: asyncio.Queue[Any] = asyncio.Queue()
    for i in range(100):
        await alice.sio.emit("send", {"room": "pipe", "text": f"m{i}"}, namespace="/chat",
                             callback=acks.put_nowait)
    results = [await asyncio.wait_for(acks.get(), 5) for _ in range(100)]
    by_text = {r["message"]["text"]: r["message"]["seq"] for r in results}
    assert [by_text[f"m{i}"] for i in range(100)] == list(range(1, 101))
    received = [(await bob.next("message"))["text"] for _ in range(100)]
    assert received == [f"m{i}" for i in range(100)]
