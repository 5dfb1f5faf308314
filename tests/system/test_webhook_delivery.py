"""The webhook guarantee under faults, with real processes: two Roomcast nodes
on Redis and PostgreSQL, and a receiver process (tests/receiver.py) killed
and started again 20 times while 2,000 messages and changes flow; the node
delivering the webhook is SIGKILLed once. The receiver ends with every event
once (by its id) and each room's events in order."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from app.api.keys import entry, new_key

from ..conftest import TIMEOUT
from ..processes import Process, start_server
from ..services import REDIS_URL, free_port, postgres_schema

ROOT = Path(__file__).resolve().parent.parent.parent
API = "/api/v1"
ROOMS = [f"load-{i}" for i in range(4)]
MESSAGES = 1600
EDITS = 400  # one message in four is edited: 2,000 entries in all
RECEIVER_KILLS = 20
FLOW_TIMEOUT = 120.0  # seconds for the whole flow to be delivered


class Nodes:
    """The two nodes, started (and started again) with the same flags."""

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        self.processes: dict[str, Process] = {}
        self.urls: dict[str, str] = {}
        self.started = asyncio.Event()  # a node started since the last kill

    async def start(self, name: str) -> None:
        process, port = await start_server(ROOT, *self.flags, "--node-id", name)
        self.processes[name], self.urls[name] = process, f"http://127.0.0.1:{port}"
        self.started.set()

    async def kill(self, name: str) -> None:
        self.urls.pop(name)
        self.started.clear()
        await self.processes.pop(name).stop(signal.SIGKILL)

    async def stop(self) -> None:
        for process in self.processes.values():
            await process.stop()


async def call(http: aiohttp.ClientSession, nodes: Nodes, key: str, method: str, path: str,
               body: Any = None, *, key_header: str | None = None) -> dict[str, Any]:
    """Through any live node, again on another until one answers (a retry is
    safe: the Idempotency-Key makes it one write)."""
    headers = {"Authorization": f"Bearer {key}",
               **({"Idempotency-Key": key_header} if key_header else {})}
    async with asyncio.timeout(FLOW_TIMEOUT):
        attempt = 0
        while True:
            urls = list(nodes.urls.values())
            url = urls[attempt % len(urls)] if urls else None
            attempt += 1
            if url is None:  # (none up: one is starting again)
                await nodes.started.wait()
                continue
            try:
                async with http.request(method, url + API + path, json=body,
                                        headers=headers) as reply:
                    answer: dict[str, Any] = await reply.json()
                    if reply.status < 500:
                        assert answer["ok"], answer
                        return answer
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass


async def test_every_event_reaches_a_receiver_killed_20_times_once_and_in_order(
        tmp_path: Path) -> None:
    key = new_key()
    async with postgres_schema() as store, aiohttp.ClientSession() as http:
        nodes = Nodes(["--store", store, "--redis", REDIS_URL,
                       "--redis-prefix", f"test-{uuid.uuid4().hex[:8]}",
                       "--api-keys", entry("ops", "admin", "*", key),
                       "--api-rate", "100000", "--api-burst", "100000",
                       "--webhook-retry-min", "0.05", "--webhook-retry-max", "0.3",
                       "--webhook-networks", "127.0.0.0/8",
                       "--webhook-lease", "2", "--webhook-rescan", "1"])
        receiver: Process | None = None
        try:
            await nodes.start("node0")
            await nodes.start("node1")
            port, log = free_port(), tmp_path / "taken.log"
            hook = (await call(http, nodes, key, "POST", "/webhooks", {
                "url": f"http://127.0.0.1:{port}/hook", "rooms": ["load-*"]}))["webhook"]

            async def receive() -> Process:
                started = await Process.start("-m", "tests.receiver", str(port),
                                              hook["secret"], str(log), cwd=ROOT)
                assert await started.line(20.0) == "receiving"
                return started

            async def produce() -> None:
                for i in range(MESSAGES):
                    room = ROOMS[i % len(ROOMS)]
                    sent = await call(http, nodes, key, "POST", f"/rooms/{room}/messages",
                                      {"text": f"m{i}"}, key_header=f"m{i}")
                    if (i // len(ROOMS)) % 4 == 0:  # one in four of each room's
                        seq = sent["message"]["seq"]
                        await call(http, nodes, key, "PATCH", f"/rooms/{room}/messages/{seq}",
                                   {"text": f"m{i} edited"}, key_header=f"e{i}")

            async def delivering() -> str:
                """The node that holds the webhook's lease: the one that logged
                taking it (no node has lost one yet)."""
                said = {asyncio.ensure_future(process.stderr_match(
                    f"webhook {hook['id']}: delivered by this node")): name
                    for name, process in nodes.processes.items()}
                done, waiting = await asyncio.wait(said, timeout=TIMEOUT,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                assert done, "no node took the webhook's lease"
                holder = said[done.pop()]
                async with http.get(f"{nodes.urls[holder]}{API}/webhooks/{hook['id']}",
                                    headers={"Authorization": f"Bearer {key}"}) as reply:
                    assert (await reply.json())["webhook"]["delivering"]  # (and says so)
                return holder

            taken = 0
            producing = asyncio.create_task(produce())
            receiver = await receive()
            node_killed = False
            for kill in range(RECEIVER_KILLS):
                async with asyncio.timeout(FLOW_TIMEOUT):  # some progress, then a kill
                    while taken < (kill + 1) * 80:
                        taken = int((await receiver.line(FLOW_TIMEOUT)).split()[1])
                if not node_killed and taken >= 800:
                    name = await delivering()
                    await nodes.kill(name)  # SIGKILL, mid-delivery
                    await nodes.start(name)
                    node_killed = True
                await receiver.stop(signal.SIGKILL)
                receiver = await receive()
            await producing
            async with asyncio.timeout(FLOW_TIMEOUT):
                while taken < MESSAGES + EDITS:
                    taken = int((await receiver.line(FLOW_TIMEOUT)).split()[1])
            assert node_killed

            lines = log.read_text().splitlines()
            ids = [line.split()[0] for line in lines]
            assert len(ids) == len(set(ids)) == MESSAGES + EDITS  # each once
            for room in ROOMS:  # each room's, in order, without a gap
                seqs = [int(i.rpartition(":")[2]) for i in ids if i.startswith(room + ":")]
                assert seqs == list(range(1, (MESSAGES + EDITS) // len(ROOMS) + 1)), room
            assert sum(line.endswith(" change") for line in lines) == EDITS
        finally:
            if receiver is not None:
                await receiver.stop(signal.SIGKILL)
            await nodes.stop()
