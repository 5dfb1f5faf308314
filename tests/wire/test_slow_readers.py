"""Slow readers are caught up, not cut: a client that reads slower than its
room speaks (through a throttled link) gets every message and change once, in
order, and stays connected, while a stock client that does not catch up by
itself is still cut off, as documented."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.appkeys import SIO_KEY
from client import ChatClient

from ..conftest import TIMEOUT, PeerFactory, Served, ServeFactory, until
from ..proxy import Proxy
from ..jsclient import JSClient

pytestmark = pytest.mark.matrix()

RATE = 40_000  # bytes a second: the slow reader's link
MESSAGES = 150  # of TEXT bytes each, sent as fast as the server takes them
TEXT = 1000
# small bounds, so that the reader falls behind within a second or two; pings
# every second, so that a ping stuck behind what waits would show at once
SLOW = {"max_backlog_bytes": 48_000, "max_reply_bytes": 24_000, "socket_send_buffer": 16384,
        "ping_interval": 1.0, "ping_timeout": 3.0}


@pytest.fixture
async def slow(serve: ServeFactory, serializer: str) -> Served:
    return await serve(serializer=serializer, **SLOW)


@pytest.fixture
async def link(slow: Served) -> AsyncIterator[Proxy]:
    proxy = await Proxy(int(slow.url.rsplit(":", 1)[1]), rate=RATE).start()
    yield proxy
    await proxy.close()


def text(i: int) -> str:
    return f"{i:04d} " + "x" * (TEXT - 5)


async def test_a_slow_reader_gets_everything_once_in_order_and_stays_connected(
        slow: Served, link: Proxy, peer: PeerFactory, transport: str) -> None:
    """A ChatClient on a link of 40 KB/s in a room where 150 KB arrive in well
    under a second (and reactions to them): the server skips live events for
    it rather than cut it, and it pages the rest from history at its pace."""
    messages: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    states: list[str] = []
    everything = asyncio.Event()
    reactions = MESSAGES // 10

    def on_message(message: dict[str, Any]) -> None:
        messages.append(message)
        if len(messages) == MESSAGES and len(changes) == reactions:
            everything.set()

    def on_change(change: dict[str, Any]) -> None:
        changes.append(change)
        if len(messages) == MESSAGES and len(changes) == reactions:
            everything.set()

    alice = ChatClient(link.url, "alice", serializer=slow.settings.serializer,
                       transports=[transport], reconnection_delay=0.05,
                       reconnection_delay_max=0.2, request_timeout=TIMEOUT,
                       on_message=on_message, on_change=on_change, on_state=states.append)
    try:
        await alice.connect()
        await alice.join("r")
        bob = await peer("bob", server=slow)
        await bob.join("r")
        sent = [await bob.send("r", text(i)) for i in range(MESSAGES)]
        for message in sent[:reactions]:
            await bob.ok("react", {"room": "r", "seq": message["seq"], "emoji": "👍"})
        engine = slow.app[SIO_KEY].eio
        assert engine.skips >= 1  # it did fall behind: live events were skipped
        await asyncio.wait_for(everything.wait(), 4 * MESSAGES * TEXT / RATE)
        assert [m["text"] for m in messages] == [text(i) for i in range(MESSAGES)]
        seqs = [entry["seq"] for entry in messages + changes]
        assert sorted(seqs) == list(range(1, MESSAGES + reactions + 1))  # each once
        assert [c["kind"] for c in changes] == ["react"] * reactions
        assert [c["target"] for c in changes] == [m["seq"] for m in sent[:reactions]]
        assert "disconnected" not in states and alice.connected  # never cut
        assert engine.budget.cuts == 0
        assert link.forwarded < 3 * MESSAGES * TEXT  # fetched again, not sent twice over
    finally:
        await alice.close()


@pytest.mark.matrix("transport")  # (both serializers: the ChatClient test above)
async def test_socket_io_client_following_the_protocol_is_caught_up(
        slow: Served, link: Proxy, peer: PeerFactory, transport: str,
        js: list[JSClient]) -> None:
    """socket.io-client from npm, with the protocol's rules for catching up
    (``tests/node/client.mjs``, ``catchUp``) and ``auth.catch_up``, on the same
    slow link: everything once, in order, never disconnected."""
    reactions = MESSAGES // 10
    dora = await JSClient.start(
        url=link.url, transports=[transport], name="dora", room="r", send=0,
        parser=slow.settings.serializer, expect=MESSAGES, changes=reactions, catchUp=True)
    js.append(dora)
    assert (await dora.line("joined"))["ok"] is True
    bob = await peer("bob", server=slow)
    await bob.join("r")
    sent = [await bob.send("r", text(i)) for i in range(MESSAGES)]
    for message in sent[:reactions]:
        await bob.ok("react", {"room": "r", "seq": message["seq"], "emoji": "👍"})
    assert slow.app[SIO_KEY].eio.skips >= 1
    done = await dora.line("received", timeout=4 * MESSAGES * TEXT / RATE)
    assert done["texts"] == [text(i)[:10] for i in range(MESSAGES)]  # (what it reports)
    assert done["changes"] == reactions and done["disconnects"] == 0


async def test_a_stock_client_that_does_not_catch_up_is_still_cut(
        slow: Served, link: Proxy, peer: PeerFactory) -> None:
    """A plain python-socketio client, which does not say it catches up, is
    disconnected when it falls that far behind (``slow_consumer``): it would
    not know what it missed if live events were skipped for it."""
    reader = await peer("carol", server=dataclasses.replace(slow, url=link.url))
    await reader.join("r")
    bob = await peer("bob", server=slow)
    await bob.join("r")
    for i in range(MESSAGES):
        await bob.send("r", text(i))
    await until(lambda: not reader.sio.connected, 10 * TIMEOUT)
    assert slow.app[SIO_KEY].eio.skips == 0
    async with aiohttp.ClientSession() as http, http.get(slow.url + "/metrics") as response:
        metrics = await response.text()
    assert 'roomcast_disconnects_total{reason="slow_consumer"} 1.0' in metrics
