"""Slow and stuck clients: bounded backlog, typing shed first, everyone else on time."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from app.core.models import RoomName
from app.appkeys import SIO_KEY
from app.ws.frames import TEXT

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, sio_client, until
from ..members import Member
from ..processes import start_server
from ..rawclient import CONNECT, RawClient
from .test_websocket import frame, handshake

pytestmark = pytest.mark.matrix("transport")  # both transports; the serializer does not matter


async def test_typing_is_shed_first_then_the_stuck_client_is_cut(
        serve: ServeFactory, serializer: str, transport: str, peer: PeerFactory) -> None:
    """A polling client that stops polling: past half the packet bound it gets no more
    typing signals, past the bound it is disconnected (slow_consumer) while the room
    keeps every message."""
    served = await serve(serializer=serializer, max_backlog_packets=40)
    sio = served.app[SIO_KEY]
    alice, bob = await peer("alice", server=served), await peer("bob", server=served)
    await alice.join("busy")
    await bob.join("busy")
    stuck = await RawClient.open(served.url, "polling", serializer)
    assert (await stuck.connect({"name": "stuck"}))["type"] == CONNECT
    await stuck.call("join", {"room": "busy"})  # then it never polls again
    for i in range(25):
        await alice.send("busy", f"m{i}")
    waiting = sio.backlog(stuck.sid)
    assert waiting > 20
    await alice.ok("typing", {"room": "busy", "active": True})
    assert (await bob.next("typing"))["user"] == "alice"
    assert sio.backlog(stuck.sid) == waiting  # the typing signal was not queued for it
    for i in range(25, 60):
        await alice.send("busy", f"m{i}")
    assert [(await bob.next("message"))["text"] for _ in range(60)] == [
        f"m{i}" for i in range(60)]
    events = [await bob.next("presence") for _ in range(2)]
    assert events[-1] == {"room": "busy", "user": "stuck", "event": "leave",
                          "members": ["alice", "bob"], "count": 2}
    assert stuck.sid not in sio.eio.sockets
    await stuck.close()


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


async def test_stuck_websocket_reader_is_cut_and_memory_stays_bounded(tmp_path: Path) -> None:
    """A WebSocket client that stops reading in a busy room: the others get all 3000
    messages (4 KB each, 12 MB in all: more than the kernel's socket buffers hold)
    on time, the stuck one is cut off as a slow consumer, and the server's resident
    memory grows by less than 60 MB."""
    server, port = await start_server(tmp_path, "--max-backlog-packets", "200",
                                      "--max-backlog-bytes", "1000000",
                                      "--max-text-length", "5000")
    url = f"http://127.0.0.1:{port}"
    clients = []
    try:
        stuck = await RawClient.open(url, "websocket", "msgpack")
        assert (await stuck.connect({"name": "stuck"}))["type"] == CONNECT
        await stuck.call("join", {"room": "busy"})  # and from now on reads nothing
        received: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        presence: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        for name in ("alice", "bob"):
            sio = sio_client("msgpack")
            if name == "bob":
                sio.on("message", received.put_nowait, namespace="/chat")
                sio.on("presence", presence.put_nowait, namespace="/chat")
            await sio.connect(url, auth={"name": name}, namespaces=["/chat"],
                              transports=["websocket"], wait_timeout=TIMEOUT)
            await sio.call("join", {"room": "busy"}, namespace="/chat")
            clients.append(sio)
        alice = clients[0]
        baseline = rss_kb(server.proc.pid)
        text = "x" * 4000
        for batch in range(30):
            await asyncio.gather(*(alice.call("send", {"room": "busy", "text": text},
                                              namespace="/chat") for _ in range(100)))
        got = [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(3000)]
        assert [m["seq"] for m in got] == list(range(1, 3001))
        left = await asyncio.wait_for(presence.get(), TIMEOUT)
        assert left["user"] == "stuck" and left["event"] == "leave"
        growth_mb = (rss_kb(server.proc.pid) - baseline) / 1024
        print(f"server RSS growth: {growth_mb:.1f} MB")
        assert growth_mb < 60
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as response:
                metrics = await response.text()
        assert 'roomcast_disconnects_total{reason="slow_consumer"} 1.0' in metrics
        assert any("slow consumer" in line for line in server.stderr_lines)
        await stuck.close()
    finally:
        for sio in clients:
            await sio.disconnect()
        assert await server.stop() == 0


STALLED = 2000
BUDGET_MB = 40


async def stalled_reader(port: int) -> asyncio.StreamWriter:
    """A WebSocket client in room "busy" that then reads nothing at all: its socket's
    receive buffer is 4 KB, and it stops reading from it once joined."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(handshake(f"127.0.0.1:{port}")
                 + frame(TEXT, b'40/chat,{"name":"stalled"}')
                 + frame(TEXT, b'42/chat,1["join",{"room":"busy"}]'))
    async with asyncio.timeout(TIMEOUT):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readuntil(b'43/chat,1[{"ok":true')  # joined
    cast(asyncio.Transport, writer.transport).pause_reading()
    return writer


async def test_readers_stalling_together_are_held_to_the_node_budget(tmp_path: Path) -> None:
    """2,000 readers of a busy room stall at once (each could hold 1 MB, 2 GB in all):
    past the node's budget for unsent data (--max-node-backlog-bytes, 40 MB here) the
    ones furthest behind are cut, so the server's resident memory grows by about the
    budget, not by what they could each hold; a reader that keeps up gets every
    message, and is not cut."""
    server, port = await start_server(
        tmp_path, "--serializer", "json", "--max-node-backlog-bytes", str(BUDGET_MB * 10**6),
        "--max-connections-per-name", str(STALLED), "--max-connections-per-address",
        str(STALLED + 10), "--max-text-length", "5000")
    url = f"http://127.0.0.1:{port}"
    received: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    reader, sender = sio_client("json"), sio_client("json")
    reader.on("message", received.put_nowait, namespace="/chat")
    stalled: list[asyncio.StreamWriter] = []
    try:
        for sio, name in ((reader, "keeps-up"), (sender, "sender")):
            await sio.connect(url, auth={"name": name}, namespaces=["/chat"],
                              transports=["websocket"], wait_timeout=TIMEOUT)
            await sio.call("join", {"room": "busy"}, namespace="/chat")
        for start in range(0, STALLED, 200):
            stalled += await asyncio.gather(*(stalled_reader(port) for _ in range(200)))
        baseline = rss_kb(server.proc.pid)
        text = "x" * 4000  # 200 of them: 800 KB for each stalled reader, 1.6 GB in all
        for _ in range(10):
            await asyncio.gather(*(sender.call("send", {"room": "busy", "text": text},
                                               namespace="/chat", timeout=TIMEOUT)
                                   for _ in range(20)))
        got = [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(200)]
        assert [m["seq"] for m in got] == list(range(1, 201))
        growth_mb = (rss_kb(server.proc.pid) - baseline) / 1024
        print(f"server RSS growth with {STALLED} stalled readers: {growth_mb:.1f} MB")
        assert growth_mb < BUDGET_MB + 60
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as response:
                metrics = await response.text()
        cut = re.search(r'roomcast_disconnects_total\{reason="slow_consumer"\} (\S+)', metrics)
        assert cut and float(cut.group(1)) >= STALLED // 2
        assert reader.connected and any("node's budget" in line
                                        for line in server.stderr_lines)
    finally:
        for writer in stalled:
            writer.transport.abort()
        for sio in (reader, sender):
            await sio.disconnect()
        assert await server.stop() == 0


async def test_members_cut_together_each_leave_once(serve: ServeFactory) -> None:
    """300 long-polling members of a room (30 names, 10 connections each) stop
    polling; the sender's messages cut them all, many in one broadcast (the cuts
    of a broadcast run after it, not inside it): the two members who keep reading
    get every message, and hear each stalled name leave exactly once."""
    served = await serve(serializer="json", max_backlog_packets=100,
                         max_connections_per_address=1000, max_connections_per_name=10)
    sender = sio_client("json")
    stuck: list[RawClient] = []

    async def seat(name: str) -> None:
        client = await RawClient.open(served.url, "polling", "json")
        stuck.append(client)
        assert (await client.connect({"name": name}))["type"] == CONNECT
        assert (await client.call("join", {"room": "busy"}))["ok"]
        # and it never polls again

    async with aiohttp.ClientSession() as session:
        live = [await Member.seat(session, served.url, f"live{i}", "busy") for i in range(2)]
        readers = [asyncio.ensure_future(member.read()) for member in live]
        try:
            for start in range(0, 300, 50):
                await asyncio.gather(*(seat(f"s{i % 30}") for i in range(start, start + 50)))
            await sender.connect(served.url, auth={"name": "sender"}, namespaces=["/chat"],
                                 transports=["websocket"], wait_timeout=TIMEOUT)
            await sender.call("join", {"room": "busy"}, namespace="/chat")
            for _ in range(120):
                ack = await sender.call("send", {"room": "busy", "text": "hello"},
                                        namespace="/chat", timeout=TIMEOUT)
                assert ack["ok"], ack
            for member in live:
                await until(lambda: len(member.seqs) == 120 and len(member.leaves) >= 30)
                assert member.seqs == list(range(1, 121))
                assert sorted(member.leaves) == sorted(f"s{i}" for i in range(30))
            assert await served.chat.presence.members(RoomName("busy")) == [
                "live0", "live1", "sender"]
            assert len(served.chat.connections) == 3
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(client.close() for client in stuck))
            await sender.disconnect()
            for member in live:
                await member.ws.close()
