"""The Python ChatClient: once-only ordered delivery, recovery after a drop,
gap filling, and sends that survive reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from client import ChatClient, ChatClientError

from .conftest import TIMEOUT, Peer, PeerFactory, Served, until
from .proxy import Proxy

ClientFactory = Callable[..., Awaitable[tuple[ChatClient, "asyncio.Queue[dict[str, Any]]"]]]


@pytest.fixture
async def proxy(served: Served) -> AsyncIterator[Proxy]:
    port = int(served.url.rsplit(":", 1)[1])
    p = await Proxy(port).start()
    yield p
    await p.close()


@pytest.fixture
async def chat_client(served: Served, transport: str) -> AsyncIterator[ClientFactory]:
    """``await chat_client(name, url=...)`` -> (client, queue of on_message calls)."""
    clients: list[ChatClient] = []

    async def make(name: str, url: str | None = None) -> tuple[ChatClient, asyncio.Queue[Any]]:
        received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client = ChatClient(url or served.url, name, serializer=served.settings.serializer,
                            transports=[transport], reconnection_delay=0.05,
                            reconnection_delay_max=0.2, request_timeout=TIMEOUT,
                            on_message=received.put_nowait)
        clients.append(client)
        await client.connect()
        return client, received

    yield make
    for client in clients:
        await client.close()


async def take(queue: asyncio.Queue[dict[str, Any]], count: int) -> list[str]:
    return [(await asyncio.wait_for(queue.get(), TIMEOUT))["text"] for _ in range(count)]


async def test_handler_sees_own_and_others_messages_in_order(
        chat_client: ClientFactory, peer: PeerFactory) -> None:
    """on_message gets the room's messages after the join, including the client's own."""
    alice, received = await chat_client("alice")
    bob = await peer("bob")
    await bob.join("r")
    await bob.send("r", "before alice")
    ack = await alice.join("r")
    assert [m["text"] for m in ack["messages"]] == ["before alice"]
    await bob.send("r", "one")
    sent = await alice.send("r", "two")
    await bob.send("r", "three")
    assert sent["seq"] == 3
    assert await take(received, 3) == ["one", "two", "three"]


async def test_refusals_raise_with_the_code(chat_client: ClientFactory, served: Served) -> None:
    """A refused connect or request raises ChatClientError with the protocol's code."""
    with pytest.raises(ChatClientError) as refused:
        await ChatClient(served.url, " ", serializer=served.settings.serializer).connect()
    assert refused.value.code == "bad_name"
    alice, _ = await chat_client("alice")
    with pytest.raises(ChatClientError) as not_member:
        await alice.send("nowhere", "hi")
    assert not_member.value.code == "not_member"


@pytest.fixture
async def pair(chat_client: ClientFactory, peer: PeerFactory, proxy: Proxy
               ) -> tuple[ChatClient, asyncio.Queue[dict[str, Any]], Peer]:
    """alice (a ChatClient behind the proxy) and bob (a plain peer), both in room r."""
    alice, received = await chat_client("alice", url=proxy.url)
    bob = await peer("bob")
    await alice.join("r")
    await bob.join("r")
    return alice, received, bob


async def go_offline(alice: ChatClient, proxy: Proxy) -> None:
    """Cut alice's connections and refuse new ones until ``proxy.offline`` is reset."""
    proxy.offline = True
    proxy.cut()
    await until(lambda: not alice.connected)


Pair = tuple[ChatClient, "asyncio.Queue[dict[str, Any]]", Peer]


async def test_recovers_exactly_the_missed_messages(pair: Pair, proxy: Proxy) -> None:
    """After a drop, the client rejoins with since and hands over each missed message
    once, in order, then carries on live."""
    alice, received, bob = pair
    await bob.send("r", "m1")
    assert await take(received, 1) == ["m1"]
    await go_offline(alice, proxy)
    for text in ("m2", "m3", "m4"):
        await bob.send("r", text)
    proxy.offline = False
    assert await take(received, 3) == ["m2", "m3", "m4"]
    await bob.send("r", "m5")
    assert await take(received, 1) == ["m5"]
    await alice.send("r", "back")
    assert await take(received, 1) == ["back"]
    assert received.empty()


async def test_recovery_pages_past_five_hundred(pair: Pair, proxy: Proxy) -> None:
    """Missing more than one join's worth (500) is caught up page by page, in order."""
    alice, received, bob = pair
    missed = [f"m{i}" for i in range(620)]
    await go_offline(alice, proxy)
    await asyncio.gather(*(bob.send("r", t) for t in missed))  # pipelined: stored in order
    proxy.offline = False
    assert await take(received, 620) == missed


async def test_send_while_offline_is_delivered_once(pair: Pair, proxy: Proxy) -> None:
    """A send made while disconnected completes after the reconnect, stored once."""
    alice, received, bob = pair
    await go_offline(alice, proxy)
    sending = asyncio.ensure_future(alice.send("r", "typed offline"))
    proxy.offline = False
    message = await asyncio.wait_for(sending, TIMEOUT)
    assert (await bob.next("message"))["seq"] == message["seq"]
    history = await bob.ok("history", {"room": "r"})
    assert [m["text"] for m in history["messages"]] == ["typed offline"]


async def test_gap_is_filled_from_history(chat_client: ClientFactory, peer: PeerFactory,
                                          served: Served) -> None:
    """A message that skips seq numbers makes the client fetch the gap first."""
    alice, received = await chat_client("alice")
    bob = await peer("bob")
    await alice.join("r")
    await bob.join("r")
    # store two messages the room never hears about, as if their broadcast was lost
    store = served.chat.store
    await store.append("r", "bob", "lost 1", None)  # type: ignore[arg-type]
    await store.append("r", "bob", "lost 2", None)  # type: ignore[arg-type]
    await bob.send("r", "seen")
    assert await take(received, 3) == ["lost 1", "lost 2", "seen"]
