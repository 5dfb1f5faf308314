"""The database goes away and comes back: sends are refused as unavailable (never
silently dropped), /healthz says 503, and service resumes by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from .conftest import PeerFactory, ServeFactory, Served
from .services import ThrowawayPostgres


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
