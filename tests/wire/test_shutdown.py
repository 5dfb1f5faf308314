"""A node shutting down under load tells no client anything false: every send
it acknowledged is stored and reaches the other nodes, every send it refused
(``unavailable``, once draining) is not stored, and whatever else is stored
is a send whose ack the closing connection never delivered."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
import socketio

from app.appkeys import SIO_KEY
from app.chat.namespace import NAMESPACE

from ..conftest import TIMEOUT, Peer, ServeFactory, Served, sio_client, until
from ..services import REDIS_URL, postgres_schema


async def connect(name: str, node: Served) -> Peer:
    peer = Peer(name, sio_client("msgpack"))
    await peer.sio.connect(node.url, auth={"name": name}, namespaces=[NAMESPACE],
                           transports=["websocket"], wait_timeout=TIMEOUT)
    return peer


@pytest.mark.parametrize("drain", [
    {},  # at once, every name out of presence in one step
    {"presence_grace": 15, "drain_window": 1},  # the defaults' way, sends going on
], ids=["at-once", "over-a-window"])
async def test_a_node_shutting_down_under_load_tells_no_one_anything_false(
        serve: ServeFactory, drain: dict[str, float]) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with postgres_schema() as store:
        a, b = [await serve(store=store, redis=REDIS_URL, redis_prefix=prefix,
                            node_id=f"node{i}", shutdown_timeout=5, **drain)
                for i in range(2)]
        watcher = await connect("watcher", b)
        await watcher.join("load")
        senders = [await connect(f"s{i}", a) for i in range(5)]
        for sender in senders:
            await sender.join("load")
        acked: dict[str, int] = {}  # client_id -> seq
        refused: dict[str, str] = {}  # client_id -> error code
        unanswered: set[str] = set()  # the connection ended first
        enough = asyncio.Event()

        async def send_until_gone(sender: Peer) -> None:
            for i in range(10_000):
                client_id = f"{sender.name}-{i}"
                try:
                    ack: Any = await sender.sio.call(
                        "send", {"room": "load", "text": client_id, "client_id": client_id},
                        namespace=NAMESPACE, timeout=TIMEOUT)
                except (socketio.exceptions.TimeoutError,
                        socketio.exceptions.BadNamespaceError,
                        socketio.exceptions.DisconnectedError):
                    unanswered.add(client_id)
                    return
                if ack["ok"]:
                    acked[client_id] = ack["message"]["seq"]
                    if len(acked) >= 100:
                        enough.set()
                else:
                    refused[client_id] = ack["error"]["code"]
                if not sender.sio.connected:
                    return

        sending = [asyncio.ensure_future(send_until_gone(s)) for s in senders]
        try:
            await asyncio.wait_for(enough.wait(), TIMEOUT)
            await a.server.close()  # SIGTERM's path: drain, close sessions, backends
            await asyncio.wait_for(asyncio.gather(*sending), TIMEOUT)
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)
        assert set(refused.values()) <= {"unavailable"}
        # every acknowledged send reached the other node's member...
        received: dict[str, int] = {}

        def arrived() -> bool:
            for message in watcher.pending("message"):
                received[message["client_id"]] = message["seq"]
            return acked.keys() <= received.keys()

        await until(arrived, TIMEOUT)
        assert {cid: received[cid] for cid in acked} == acked
        # ... and the store holds exactly what was acknowledged, or never answered
        stored: dict[str, int] = {}
        before = None
        while True:
            page = await watcher.ok("history", {"room": "load", "limit": 200,
                                                **({"before": before} if before else {})})
            stored.update({m["client_id"]: m["seq"] for m in page["messages"]})
            if not page["more"]:
                break
            before = page["messages"][0]["seq"]
        assert acked.items() <= stored.items()
        assert not stored.keys() & refused.keys()
        assert stored.keys() <= acked.keys() | unanswered
        print(f"acked {len(acked)}, refused {len(refused)}, unanswered {len(unanswered)}")
        await watcher.sio.disconnect()


async def test_a_node_shutting_down_closes_its_connections_over_the_drain_window(
        serve: ServeFactory) -> None:
    """--drain-window 2: the node's 30 connections close in random order over
    the window (its clients come back spread out, not as one herd); the last
    has closed within it."""
    node = await serve(drain_window=2.0, shutdown_timeout=5)
    peers = [await connect(f"p{i}", node) for i in range(30)]
    loop = asyncio.get_running_loop()
    closed: list[float] = []
    for peer in peers:
        peer.sio.eio.on("disconnect", lambda *_: closed.append(loop.time()))
    started = loop.time()
    closing = asyncio.ensure_future(node.server.close())
    try:
        await until(lambda: len(closed) >= 1)
        assert len(closed) < 30
        await asyncio.wait_for(closing, TIMEOUT)
        await until(lambda: len(closed) == 30)
        assert max(closed) - min(closed) >= 1.0  # spread: the slices came 50 ms apart
        assert max(closed) - started < 2.0 + TIMEOUT
    finally:
        for peer in peers:
            await peer.sio.disconnect()  # (no reconnecting to a server that is gone)


async def test_a_node_going_away_takes_no_new_session(serve: ServeFactory) -> None:
    """While its connections close over the window, a handshake that reaches
    the node (on an HTTP connection kept from before) is answered 503."""
    node = await serve()
    engine = node.app[SIO_KEY].eio
    engine.going_away = True
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/socket.io/?EIO=4&transport=polling") as reply:
            assert reply.status == 503 and "shutting down" in await reply.text()
    engine.going_away = False
