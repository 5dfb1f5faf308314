"""``python -m app`` as a real process: settings, graceful shutdown, restart,
and a client that rides through the restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client import ChatClient

from ..conftest import TIMEOUT, sio_client
from ..processes import Process, start_server
from ..proxy import Proxy


async def direct_send(url: str, serializer: str, room: str, texts: list[str]) -> list[int]:
    """Connect, join, send each text, disconnect; the stored seq numbers."""
    sio = sio_client(serializer)
    await sio.connect(url, auth={"name": "sender"}, namespaces=["/chat"], wait_timeout=TIMEOUT)
    try:
        await sio.call("join", {"room": room}, namespace="/chat")
        seqs = []
        for text in texts:
            ack = await sio.call("send", {"room": room, "text": text}, namespace="/chat")
            seqs.append(ack["message"]["seq"])
        return seqs
    finally:
        await sio.disconnect()


async def test_defaults_serve_on_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    """With no settings, the server creates data/roomcast.db where it runs and
    answers /healthz."""
    server, port = await start_server(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with http.get(f"http://127.0.0.1:{port}/") as response:
                assert response.status == 200
                assert "Roomcast" in await response.text()
        assert (tmp_path / "data" / "roomcast.db").exists()
    finally:
        assert await server.stop() == 0


async def test_environment_configures_the_server(tmp_path: Path) -> None:
    """ROOMCAST_* variables set the store and serializer; a bad one is named in the error."""
    bad = await Process.start("-m", "app", "--port", "0", cwd=tmp_path,
                              env={"ROOMCAST_SERIALIZER": "xml"})
    assert await bad.wait() == 2
    assert any("ROOMCAST_SERIALIZER" in line for line in bad.stderr_lines)
    server, port = await start_server(tmp_path, env={"ROOMCAST_SERIALIZER": "json",
                                                     "ROOMCAST_STORE": "sqlite:///x/y.db"})
    try:
        seqs = await direct_send(f"http://127.0.0.1:{port}", "json", "r", ["hi"])
        assert seqs == [1]
        assert (tmp_path / "x" / "y.db").exists()
    finally:
        assert await server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_restart_keeps_history_and_clients_recover(
        tmp_path: Path, transport: str, serializer: str, sig: int) -> None:
    """SIGTERM/SIGINT stops the server cleanly (exit 0); after a restart, history and
    seq carry on, and a connected ChatClient reconnects by itself, gets what was sent
    meanwhile once and in order, and delivers what it sent while the server was down."""
    server, port = await start_server(tmp_path, "--serializer", serializer)
    proxy = await Proxy(port).start()
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    states: asyncio.Queue[str] = asyncio.Queue()
    alice = ChatClient(proxy.url, "alice", serializer=serializer, transports=[transport],
                       reconnection_delay=0.05, reconnection_delay_max=0.3,
                       on_message=received.put_nowait, on_state=states.put_nowait)
    try:
        await alice.connect()
        await alice.join("r")
        assert await direct_send(f"http://127.0.0.1:{port}", serializer, "r",
                                 ["m1", "m2"]) == [1, 2]
        assert [(await asyncio.wait_for(received.get(), TIMEOUT))["seq"]
                for _ in range(2)] == [1, 2]

        assert await server.stop(sig) == 0
        assert any("sqlite store closed" in line for line in server.stderr_lines)
        while await asyncio.wait_for(states.get(), TIMEOUT) != "disconnected":
            pass
        offline_send = asyncio.ensure_future(alice.send("r", "sent while down"))

        server, port = await start_server(tmp_path, "--serializer", serializer)
        proxy.upstream = port
        # the offline send may land before, between or after these two
        seqs = await direct_send(f"http://127.0.0.1:{port}", serializer, "r", ["m3", "m4"])
        assert seqs[0] < seqs[1] and set(seqs) <= {3, 4, 5}
        stored = await asyncio.wait_for(offline_send, 3 * TIMEOUT)
        got = [(await asyncio.wait_for(received.get(), TIMEOUT)) for _ in range(3)]
        assert [m["seq"] for m in got] == [3, 4, 5]
        assert sorted(m["text"] for m in got) == ["m3", "m4", "sent while down"]
        assert stored in got
        history = await alice.history("r")
        assert [m["seq"] for m in history["messages"]] == [1, 2, 3, 4, 5]
    finally:
        await alice.close()
        await proxy.close()
        assert await server.stop() == 0
