"""The database goes away and comes back: sends are refused as unavailable (never
silently dropped), /healthz says 503, and service resumes by itself."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from app.chat.namespace import NAMESPACE

from ..conftest import TIMEOUT, Peer, PeerFactory, ServeFactory, Served, sio_client
from ..processes import start_server
from ..proxy import Proxy
from ..services import ThrowawayPostgres, postgres_schema


@pytest.fixture
async def database() -> AsyncIterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        yield await pg.init()
    finally:
        await pg.stop()
        pg.remove()


async def health(served: Served) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/healthz") as response:
            return response.status


async def test_database_outage_and_recovery(database: ThrowawayPostgres, serve: ServeFactory,
                                            serializer: str, peer: PeerFactory) -> None:
    """Acknowledged messages survive; during the outage sends are `unavailable`;
    afterwards sends work again and seq carries on without a gap."""
    served = await serve(serializer=serializer, store=database.url)
    alice, bob = await peer("alice", server=served), await peer("bob", server=served)
    await alice.join("r")
    await bob.join("r")
    first = await alice.send("r", "before")
    await database.stop()
    refused = await alice.call("send", {"room": "r", "text": "during", "client_id": "d1"})
    assert refused["ok"] is False and refused["error"]["code"] == "unavailable"
    assert await health(served) == 503
    history = await bob.call("history", {"room": "r"})
    assert history["error"]["code"] == "unavailable"
    await database.start()
    async with asyncio.timeout(15):  # the pool reconnects on its next use
        while True:
            retry = await alice.call("send", {"room": "r", "text": "during", "client_id": "d1"})
            if retry["ok"]:
                break
            assert retry["error"]["code"] == "unavailable"
            await asyncio.sleep(0.2)  # a client's retry interval
    assert retry["message"]["seq"] == first["seq"] + 1
    assert await health(served) == 200
    page = await bob.ok("history", {"room": "r"})
    assert [m["text"] for m in page["messages"]] == ["before", "during"]


async def test_a_silent_database_link_costs_a_deadline_not_forever(
        serve: ServeFactory, serializer: str, peer: PeerFactory) -> None:
    """PostgreSQL behind a link that stops forwarding (no error, no answer): sends,
    reads and the health check are answered unavailable within --store-timeout
    (the node reports 503); once more calls are in flight than --store-max-pending,
    sends are refused at once; when the link comes back, the same sends (same
    client_ids) succeed, each stored once and without a gap."""
    async with postgres_schema() as url:
        parts = urlsplit(url)
        proxy = await Proxy(parts.port or 5432).start()
        try:
            proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
            served = await serve(serializer=serializer, store=proxied, store_timeout=1.0,
                                 store_max_pending=6)
            alice, bob = await peer("alice", server=served), await peer("bob", server=served)
            await alice.join("r")
            await bob.join("r")
            await alice.send("r", "before")
            proxy.stall()
            sends = [{"room": "r", "text": f"during {i}", "client_id": f"d{i}"}
                     for i in range(8)]
            refused = await asyncio.wait_for(asyncio.gather(
                *(alice.call("send", s) for s in sends)), TIMEOUT)
            assert {r["error"]["code"] for r in refused} == {"unavailable"}
            at_once = [r for r in refused if "calls waiting" in r["error"]["message"]]
            assert len(at_once) >= 2  # past store_max_pending (6), without waiting
            history = await asyncio.wait_for(bob.call("history", {"room": "r"}), TIMEOUT)
            assert history["error"]["code"] == "unavailable"
            assert await asyncio.wait_for(health(served), TIMEOUT) == 503
            proxy.resume()
            async with asyncio.timeout(15):  # the held calls finish, then ours get through
                for s in sends:
                    while not (ack := await alice.call("send", s))["ok"]:
                        assert ack["error"]["code"] == "unavailable"
                        await asyncio.sleep(0.2)  # a client's retry interval
            page = await bob.ok("history", {"room": "r", "limit": 50})
            assert [m["seq"] for m in page["messages"]] == list(range(1, 10))
            assert sorted(m["text"] for m in page["messages"]) == sorted(
                ["before", *(s["text"] for s in sends)])
            assert await health(served) == 200
        finally:
            await proxy.close()


async def in_flight(url: str) -> float:
    """The node's ``roomcast_store_calls_in_flight`` gauge."""
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as response:
            text = await response.text()
    match = re.search(r"^roomcast_store_calls_in_flight (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


async def test_a_node_on_a_silent_database_link_still_shuts_down_in_time(
        tmp_path: Path) -> None:
    """``python -m app`` on PostgreSQL behind a link gone silent, with a send stuck
    in the store: SIGTERM ends the process within --shutdown-timeout (plus
    the floors its last steps get), saying what it gave up on, not never."""
    async with postgres_schema() as url:
        parts = urlsplit(url)
        proxy = await Proxy(parts.port or 5432).start()
        try:
            proxied = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
            server, port = await start_server(tmp_path, "--store", proxied, "--store-timeout=1",
                                              "--shutdown-timeout=2")
            node = f"http://127.0.0.1:{port}"
            alice = Peer("alice", sio_client("msgpack"))
            await alice.sio.connect(node, auth={"name": "alice"}, namespaces=[NAMESPACE],
                                    transports=["websocket"], wait_timeout=TIMEOUT)
            await alice.join("r")
            await alice.send("r", "before")
            proxy.stall()
            stuck = await alice.call("send", {"room": "r", "text": "stuck", "client_id": "s"})
            assert stuck["error"]["code"] == "unavailable"  # answered; still in the store
            assert await in_flight(node) == 1
            started = time.monotonic()
            code = await server.stop(timeout=2 + 1 + 1 + TIMEOUT)
            took = time.monotonic() - started
            assert code == 0, "\n".join(server.stderr_lines)
            assert took < 2 + 1 + 1 + 2, took  # the budget, the two 1 s floors, and start-up slack
            assert any("store's drain did not finish" in line for line in server.stderr_lines)
            await alice.sio.disconnect()
        finally:
            await proxy.close()
