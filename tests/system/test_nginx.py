"""The bundled nginx config in front of two real nodes (processes) on Redis and
PostgreSQL: sticky sessions, both transports, a node dying, forwarded addresses."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.tools.cluster import Cluster
from client import ChatClient

from ..conftest import TIMEOUT, UNLIMITED_FLAGS
from ..rawclient import RawClient
from ..services import REDIS_URL, ThrowawayRedis, postgres_schema

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 60)]  # loopback sources for "other machines"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@contextlib.asynccontextmanager
async def running_cluster(tmp_path: Path, redis_url: str, *args: str) -> AsyncIterator[Cluster]:
    """Two `python -m app ARGS` nodes behind nginx on Redis and a fresh PostgreSQL schema."""
    async with postgres_schema() as store:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        running = Cluster(nodes=2, port=0, store=store, redis=redis_url, workdir=tmp_path,
                          node_args=["--redis-prefix", prefix, "--presence-ttl", "3",
                                     *UNLIMITED_FLAGS, *args])
        try:
            yield await running.start()
        finally:
            await running.stop()


@pytest.fixture
async def cluster(tmp_path: Path, redis_url: str) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, redis_url) as running:
        yield running


def session_from(address: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def node_of(cluster: Cluster, address: str) -> str:
    async with session_from(address) as http:
        async with http.get(cluster.url + "/healthz") as response:
            return str((await response.json())["node"])


async def addresses_by_node(cluster: Cluster) -> dict[str, list[str]]:
    """Which loopback source addresses nginx sends to which node."""
    found: dict[str, list[str]] = {}
    for address in ADDRESSES:
        found.setdefault(await node_of(cluster, address), []).append(address)
    assert len(found) == 2, found
    return found


class Member:
    """A ChatClient connecting from one source address, through nginx."""

    def __init__(self, cluster: Cluster, name: str, address: str, transport: str) -> None:
        self.address = address
        self.http = session_from(address)
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client = ChatClient(cluster.url, name, transports=[transport],
                                 reconnection_delay=0.1, reconnection_delay_max=0.5,
                                 on_message=self.inbox.put_nowait, http_session=self.http)

    async def start(self, room: str) -> Member:
        await self.client.connect()
        await self.client.join(room)
        return self

    async def take(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(self.inbox.get(), timeout) for _ in range(count)]

    async def close(self) -> None:
        await self.client.close()
        await self.http.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_users_on_two_nodes_through_nginx(cluster: Cluster, transport: str) -> None:
    """Clients that nginx routes to different nodes chat in one room: each gets every
    message once, in order; the nodes log the real client addresses."""
    nodes = await addresses_by_node(cluster)
    (a_addr, *_), (b_addr, *_) = nodes["node0"], nodes["node1"]
    alice = await Member(cluster, "alice", a_addr, transport).start("r")
    bob = await Member(cluster, "bob", b_addr, transport).start("r")
    try:
        sends = [alice.client.send("r", f"a{i}") if i % 2 else bob.client.send("r", f"b{i}")
                 for i in range(30)]
        await asyncio.gather(*sends)
        for member in (alice, bob):
            got = await member.take(30)
            assert [m["seq"] for m in got] == list(range(1, 31))
        assert f"addr={a_addr}" in cluster.node_log(0)
        assert f"addr={b_addr}" in cluster.node_log(1)
        for member in (alice, bob):  # history and members agree from both nodes
            history = await member.client.history("r", limit=200)
            assert [m["seq"] for m in history["messages"]] == list(range(1, 31))
            assert (await member.client.request("join", {"room": "r"}))["members"] == [
                "alice", "bob"]
    finally:
        await alice.close()
        await bob.close()


async def test_a_browser_on_the_proxy_origin_is_let_in(cluster: Cluster) -> None:
    """A page served through nginx on a non-default port connects from that
    origin (port included: nginx passes X-Forwarded-Host), and no other."""
    async with aiohttp.ClientSession() as http:
        for origin, status in ((cluster.url, 200), ("http://evil.example", 400)):
            async with http.get(cluster.url + "/socket.io/?EIO=4&transport=polling",
                                headers={"Origin": origin}) as response:
                assert response.status == status, (origin, await response.text())


async def test_polling_sessions_stay_sticky_under_load(cluster: Cluster) -> None:
    """Many long-polling clients from many addresses sending at once: no session is
    ever routed to the wrong node (which would answer 400 and drop it)."""
    members = [await Member(cluster, f"p{i}", address, "polling").start("busy")
               for i, address in enumerate(ADDRESSES[:16])]
    drops: list[str] = []
    for member in members:
        member.client.on_state = lambda state, m=member: (
            drops.append(m.client.name) if state == "disconnected" else None)
    try:
        await asyncio.gather(*(m.client.send("busy", f"{m.client.name}-{j}")
                               for j in range(10) for m in members))
        for member in members:
            got = await member.take(160)
            assert [m["seq"] for m in got] == list(range(1, 161))
        assert drops == []
    finally:
        for member in members:
            await member.close()


async def test_cutting_a_slow_poller_disturbs_no_one_on_its_upstream_connections(
        tmp_path: Path, redis_url: str) -> None:
    """Through nginx (upstream keep-alive: requests of different clients take
    turns on the same connections to a node), 16 long-polling members and one
    that stops polling share a room on one node; 80 messages are more than the
    silent one's backlog may hold (--max-backlog-packets 50), so it is cut.
    The cut ends only its own session: no other member is disconnected or
    misses a message (the server once aborted the TCP connection of the cut
    session's first request, which by then carried other clients' polls)."""
    async with running_cluster(tmp_path, redis_url, "--max-backlog-packets", "50") as cluster:
        address = (await addresses_by_node(cluster))["node0"][0]
        members = [await Member(cluster, f"p{i}", address, "polling").start("r")
                   for i in range(16)]
        drops: list[str] = []
        for member in members:
            member.client.on_state = lambda state, m=member: (
                drops.append(m.client.name) if state == "disconnected" else None)
        silent = await RawClient.open(cluster.url, "polling", "msgpack",
                                      session=session_from(address))
        try:
            assert (await silent.connect({"name": "silent"}))["type"] == 0  # CONNECT
            assert (await silent.call("join", {"room": "r"}))["ok"] is True
            # from here on it never polls again
            for i in range(80):
                await members[i % 16].client.send("r", f"m{i}")
            for member in members:
                got = await member.take(80)
                assert [m["seq"] for m in got] == list(range(1, 81))
            status, packets = await asyncio.wait_for(silent.poll(), TIMEOUT)
            assert status == 400 or packets == ["1"], (status, packets)  # it was cut
            assert "reason=slow_consumer" in cluster.node_log(0)
            assert drops == []
        finally:
            await silent.close()
            for member in members:
                await member.close()


RECOVERY_TIMEOUT = 20.0  # seconds for a client of a killed node to be back and caught up


async def alice_and_bob(cluster: Cluster, transport: str) -> tuple[Member, Member]:
    """alice routed to node0 and bob to node1, both in room r."""
    nodes = await addresses_by_node(cluster)
    alice = await Member(cluster, "alice", nodes["node0"][0], transport).start("r")
    bob = await Member(cluster, "bob", nodes["node1"][0], transport).start("r")
    return alice, bob


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_killed_node_clients_recover_on_a_survivor(cluster: Cluster,
                                                         transport: str) -> None:
    """When a node dies, its clients reconnect through nginx to the other node and
    get what was sent meanwhile, once, in order."""
    alice, bob = await alice_and_bob(cluster, transport)
    try:
        await bob.client.send("r", "m1")
        assert [m["text"] for m in await alice.take(1)] == ["m1"]
        await cluster.kill_node(0)
        for text in ("m2", "m3", "m4"):
            await bob.client.send("r", text)
        # (a reconnect through nginx to the survivor and a rejoin first: on a
        # loaded machine that has taken longer than one event's TIMEOUT)
        got = await alice.take(3, timeout=RECOVERY_TIMEOUT)
        assert [m["text"] for m in got] == ["m2", "m3", "m4"]
        assert await node_of(cluster, alice.address) == "node1"
        await alice.client.send("r", "back")
        assert [m["text"] for m in await bob.take(5)][-1] == "back"
    finally:
        await alice.close()
        await bob.close()


@pytest.fixture
async def throwaway_redis(tmp_path: Path) -> AsyncIterator[ThrowawayRedis]:
    redis = await ThrowawayRedis(tmp_path).start()
    yield redis
    await redis.stop()


async def node_health(cluster: Cluster, i: int) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{cluster.node_ports[i]}/healthz") as response:
            return response.status


async def until_health(cluster: Cluster, status: int) -> None:
    """Poll both nodes' /healthz (a load balancer's view) until both answer ``status``."""
    async with asyncio.timeout(15):
        while [await node_health(cluster, i) for i in (0, 1)] != [status, status]:
            await asyncio.sleep(0.2)  # the probe interval of this pretend load balancer


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_redis_restart_through_nginx(throwaway_redis: ThrowawayRedis, tmp_path: Path,
                                           transport: str) -> None:
    """With Redis down the nodes say 503 and keep storing; once it is back fan-out
    resumes and a client on the other node fills the gap: all once, in order."""
    async with postgres_schema() as store:
        running = Cluster(nodes=2, port=0, store=store, redis=throwaway_redis.url,
                          workdir=tmp_path / "nginx", node_args=UNLIMITED_FLAGS)
        cluster = await running.start()
        try:
            alice, bob = await alice_and_bob(cluster, transport)
            try:
                await bob.client.send("r", "m1")
                assert [m["text"] for m in await alice.take(1)] == ["m1"]
                await throwaway_redis.stop()
                await until_health(cluster, 503)
                for text in ("m2", "m3"):
                    await bob.client.send("r", text)
                await throwaway_redis.start()
                await until_health(cluster, 200)
                await bob.client.send("r", "m4")
                got = await alice.take(3)
                assert [m["text"] for m in got] == ["m2", "m3", "m4"]
                assert [m["seq"] for m in got] == [2, 3, 4]
            finally:
                await alice.close()
                await bob.close()
        finally:
            await running.stop()


async def test_files_go_up_and_come_down_through_nginx(cluster: Cluster, tmp_path: Path
                                                       ) -> None:
    """A 20 MB upload in 8 MB requests passes nginx (its uploads location takes
    any body and streams it), is stored in the directory the nodes share, and a
    member on the other node downloads it through nginx."""
    nodes = await addresses_by_node(cluster)
    alice = await Member(cluster, "alice", nodes["node0"][0], "websocket").start("f")
    bob = await Member(cluster, "bob", nodes["node1"][0], "websocket").start("f")
    try:
        data = uuid.uuid4().bytes * (20 * 1024 * 1024 // 16)
        (tmp_path / "big.bin").write_bytes(data)
        sent = await alice.client.send_file("f", tmp_path / "big.bin", "twenty megabytes")
        (got,) = await bob.take(1)
        assert got["attachments"] == sent["attachments"]
        saved = await bob.client.download("f", got["attachments"][0]["id"], tmp_path / "got")
        assert saved.read_bytes() == data
    finally:
        await alice.close()
        await bob.close()
