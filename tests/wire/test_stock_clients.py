"""python-socketio's own clients, unpatched (each in a process of its own, away
from the limits Roomcast lifts in this one), keep up with Roomcast on both

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers
transports and serializers: a busy room, and a burst of pipelined calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.appkeys import SIO_KEY

from ..conftest import TIMEOUT, PeerFactory, Served, ServeFactory, until
from ..processes import Process, start_server
from ..rawclient import EIO_MESSAGE, EVENT, RawClient, decode_sio, encode_sio

STOCK_CLIENT = Path(__file__).resolve().parent.parent / "stock_client.py"
COUNT = 100  # as in stock_client.py
SCENARIO_TIMEOUT = 40.0  # seconds one stock client's scenario may take


async def stock(kind: str, transport: str, served: Served, scenario: str) -> Process:
    return await start_stock(kind, transport, served.settings.serializer, scenario, served.url)


async def start_stock(kind: str, transport: str, serializer: str, scenario: str,
                      url: str) -> Process:
    return await Process.start(str(STOCK_CLIENT), kind, transport, serializer, scenario, url,
                               cwd=STOCK_CLIENT.parent)


async def result(client: Process) -> dict[str, Any]:
    line = await client.line(SCENARIO_TIMEOUT)
    assert await client.wait(TIMEOUT) == 0, client.stderr_lines
    outcome: dict[str, Any] = json.loads(line)
    return outcome


@pytest.mark.parametrize("kind", ["async", "sync", "simple"])
async def test_a_stock_client_keeps_up_with_a_busy_room(
        served: Served, peer: PeerFactory, transport: str, kind: str) -> None:
    """100 messages sent in one burst to a room a stock client is in: it gets
    them all, in order, and stays connected (python-engineio's client drops a
    polling connection whose response holds more than 16 packets)."""
    client = await stock(kind, transport, served, "busy")
    assert await client.line(SCENARIO_TIMEOUT) == "ready"
    sender = await peer("sender", transports=["websocket"])
    await sender.join("busy")
    for i in range(COUNT):  # one write after another, acks not awaited between
        await sender.sio.emit("send", {"room": "busy", "text": f"m{i}"}, namespace="/chat")
    assert await result(client) == {"seqs": list(range(1, COUNT + 1)), "connected": True}


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_stock_client_pipelines_a_hundred_calls(
        served: Served, transport: str, kind: str) -> None:
    """A stock client sends 100 acked events at once: every one is acknowledged
    and it stays connected (their acks used to leave in one poll response)."""
    client = await stock(kind, transport, served, "pipeline")
    assert await result(client) == {"acked": COUNT, "connected": True}


@pytest.mark.parametrize("kind", ["async", "sync", "simple"])
async def test_a_stock_client_reconnects_across_a_server_restart(
        tmp_path: Path, transport: str, serializer: str, kind: str) -> None:
    """SIGTERM, then a new server on the same port: the stock client comes back by
    itself (it stayed away when shutdown sent it an Engine.IO CLOSE, its goodbye)."""
    server, port = await start_server(tmp_path, "--serializer", serializer)
    client = await start_stock(kind, transport, serializer, "restart", f"http://127.0.0.1:{port}")
    try:
        assert await client.line(SCENARIO_TIMEOUT) == "ready"
        assert await server.stop() == 0
        server, _ = await start_server(tmp_path, "--serializer", serializer, "--port", str(port))
        assert await result(client) == {"reconnected": True}
    finally:
        assert await server.stop() == 0


@pytest.mark.parametrize(("limit", "first"), [(16, 16), (0, 40)])
async def test_a_poll_answers_at_most_max_poll_packets(
        serve: ServeFactory, serializer: str, limit: int, first: int) -> None:
    """With 40 acks queued, a long-poll GET carries ``--max-poll-packets`` of them
    (16 by default; 0: all), and the next GETs the rest, in order."""
    served = await serve(serializer=serializer, max_poll_packets=limit)
    client = await RawClient.open(served.url, "polling", serializer)
    try:
        await client.connect({"name": "raw"})
        payloads = [encode_sio({"type": EVENT, "nsp": "/chat", "data": ["rooms"], "id": i},
                               serializer) for i in range(40)]
        await client.send_eio(*(p if isinstance(p, bytes) else EIO_MESSAGE + p
                                for p in payloads))
        await until(lambda: served.app[SIO_KEY].backlog(client.sid) == 40)
        status, packets = await client.poll()
        assert (status, len(packets)) == (200, first)
        while len(packets) < 40:
            packets += (await client.poll())[1]
        ids = [decode_sio(p if isinstance(p, bytes) else p[1:])["id"] for p in packets]
        assert ids == list(range(40))
    finally:
        await client.close()
