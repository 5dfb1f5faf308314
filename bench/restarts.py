"""Rolling restarts: two nodes behind the bundled nginx (app.tools.cluster) on
Redis and PostgreSQL, a few hundred ChatClients in rooms (half on WebSocket,
half on long-polling, from many loopback addresses so that nginx's hash
spreads them over the nodes), each sending a message every ``--every``
seconds; then each node in turn is restarted (SIGTERM: it drains; then
started again on its port under its id, once its clients are back).

    .venv/bin/python -m bench.restarts [--clients 200] [--rooms 10] [--leavers 3]

A few clients of the node being restarted ("leavers") do not come back: they
stand for people who really went away during the deploy. Prints, per
restart, when the node's clients lost their connection (a histogram over
the drain window, from the SIGTERM) and how long each took to be back in its
room with everything it missed (p50, p99, max); at the end, the presence
events every client saw: for people who merely moved (there should be none)
and for the leavers (one leave each per member, no join), and whether every
member received every acknowledged message of its room once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from app.tools.cluster import Cluster
from client import ChatClient

from .bulk import fresh_postgres
from .search import DATABASE_URL
from .webhooks import percentile

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 102)]  # source addresses nginx hashes
BUCKET = 0.5  # seconds per histogram bar


@dataclass
class Person:
    name: str
    room: str
    client: ChatClient | None = None
    node: str = ""  # where nginx first sent it
    transport: str = ""
    joined_at: int = 0  # the room's seq when it joined
    received: list[tuple[int, str | None]] = field(default_factory=list)  # (seq, client_id)
    presence: list[tuple[str, str]] = field(default_factory=list)  # (user, event)
    watched_from: int = 0  # presence events before this index: the start's joins
    dropped: list[float] = field(default_factory=list)  # monotonic times
    ready: list[float] = field(default_factory=list)
    leaving: bool = False  # stays away after its next drop
    left: bool = False


def told(event: dict[str, Any]) -> list[tuple[str, str]]:
    """(user, "join" | "leave") of each name a presence event tells of: one, in
    a small room's; a tick's arrivals and departures, in a large room's."""
    if "user" in event:
        return [(event["user"], event["event"])]
    return [(name, "join") for name in event.get("joined", ())] + [
        (name, "leave") for name in event.get("left", ())]


async def connect(person: Person, url: str, index: int, sessions: list[Any]) -> None:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        local_addr=(ADDRESSES[index % len(ADDRESSES)], 0)))
    sessions.append(http)

    def state(what: str) -> None:
        now = time.monotonic()
        if what == "disconnected":
            person.dropped.append(now)
            if person.leaving and not person.left:
                person.left = True
                asyncio.get_running_loop().create_task(client.close())
        elif what == "ready":
            person.ready.append(now)

    person.transport = "websocket" if index % 2 else "polling"
    client = ChatClient(url, person.name, transports=[person.transport],
                        http_session=http, request_timeout=10,
                        on_message=lambda m: person.received.append((m["seq"],
                                                                     m.get("client_id"))),
                        on_presence=lambda p: person.presence.extend(told(p)),
                        on_state=state)
    person.client = client
    await client.connect()
    ack = await client.join(person.room)
    person.joined_at = ack["seq"]
    async with http.get(url + "/healthz") as reply:
        person.node = (await reply.json())["node"]


async def keep_sending(person: Person, every: float, acked: dict[str, int],
                       stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set() and not person.left:
        assert person.client is not None
        client_id = f"{person.name}-{i}"
        with contextlib.suppress(Exception):  # (refused or cut: the next one goes on)
            sent = await person.client.send(person.room, f"m {i}", client_id=client_id)
            acked[client_id] = sent["seq"]
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def restart(cluster: Cluster, i: int, people: list[Person], leavers: int,
                  grace: float) -> dict[str, Any]:
    node = f"node{i}"
    mine = [p for p in people if p.node == node and not p.left]
    for person in mine[:leavers]:
        person.leaving = True
    movers = [p for p in mine if not p.leaving]
    before = {p.name: len(p.ready) for p in movers}
    sigterm = time.monotonic()
    code = await cluster.stop_node(i)
    stopped = time.monotonic() - sigterm
    deadline = time.monotonic() + 60
    while any(len(p.ready) <= before[p.name] for p in movers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    back = [p.ready[before[p.name]] - p.dropped[-1] for p in movers
            if len(p.ready) > before[p.name]]
    drops = {t: Counter(int((p.dropped[-1] - sigterm) / BUCKET) for p in mine
                        if p.transport == t and p.dropped and p.dropped[-1] >= sigterm)
             for t in ("websocket", "polling")}
    await cluster.start_node(i)
    await asyncio.sleep(grace + 10)  # the leavers' grace ends; their leave is told
    last = max((b for counts in drops.values() for b in counts), default=0)
    return {"node": node, "clients": len(mine), "exit": code, "stopped_s": round(stopped, 1),
            **{f"drops_{t}": [counts.get(b, 0) for b in range(last + 1)]
               for t, counts in drops.items()},
            "back_p50_s": round(statistics.median(back), 2) if back else None,
            "back_p99_s": round(percentile(back, 0.99), 2) if back else None,
            "back_max_s": round(max(back, default=float("nan")), 2),
            "not_back": len(movers) - len(back)}


def verdict(people: list[Person], acked: dict[str, int]) -> dict[str, Any]:
    leavers = {p.name for p in people if p.leaving}
    seen = {p.name: p.presence[p.watched_from:] for p in people}  # from the first restart
    moved_events = sum(1 for p in people for user, _ in seen[p.name]
                       if user not in leavers and user != p.name)
    leaves = Counter((p.name, user) for p in people for user, event in seen[p.name]
                     if user in leavers and event == "leave")
    joins = sum(1 for p in people for user, event in seen[p.name]
                if user in leavers and event == "join")
    by_room: dict[str, dict[int, str]] = {}
    owner = {p.name: p for p in people}
    for client_id, seq in acked.items():
        by_room.setdefault(owner[client_id.rsplit("-", 1)[0]].room, {})[seq] = client_id
    wrong = 0
    for p in people:
        if p.leaving:
            continue
        seqs = [seq for seq, _ in p.received]
        expected = sorted(s for s in by_room.get(p.room, {}) if s > p.joined_at)
        mine = [s for s in seqs if s in by_room.get(p.room, {})]
        if seqs != sorted(set(seqs)) or mine != expected:
            wrong += 1
    watching = {(p.name, q.name) for p in people for q in people
                if q.name in leavers and q.room == p.room and p.name != q.name
                and not p.leaving}
    return {"acknowledged": len(acked), "members_missing_or_repeating": wrong,
            "presence_events_for_movers": moved_events,
            "leaver_leaves_seen_once": sum(1 for key in watching if leaves[key] == 1),
            "leaver_leaves_expected": len(watching),
            "leaver_leaves_repeated": sum(1 for n in leaves.values() if n > 1),
            "leaver_joins": joins}


async def run(args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    async with fresh_postgres(DATABASE_URL) as (store, _):
        with tempfile.TemporaryDirectory() as workdir:
            cluster = Cluster(nodes=2, port=0, store=store, redis=REDIS_URL,
                              workdir=Path(workdir),
                              node_args=["--redis-prefix", prefix,
                                         "--presence-grace", str(args.grace),
                                         "--drain-window", str(args.drain_window),
                                         "--shutdown-timeout", str(args.drain_window + 10),
                                         "--max-connections-per-address", "100000"])
            await cluster.start()
            sessions: list[Any] = []
            people = [Person(f"p{i:03}", f"room{i % args.rooms}") for i in range(args.clients)]
            acked: dict[str, int] = {}
            stop = asyncio.Event()
            senders: list[asyncio.Task[None]] = []
            try:
                for start in range(0, len(people), 20):
                    await asyncio.gather(*(connect(p, cluster.url, start + j, sessions)
                                           for j, p in enumerate(people[start:start + 20])))
                print(f"{len(people)} clients: " + ", ".join(
                    f"{n} on {node}" for node, n in sorted(Counter(p.node for p in people)
                                                           .items())), flush=True)
                senders = [asyncio.create_task(keep_sending(p, args.every, acked, stop))
                           for p in people]
                await asyncio.sleep(3)
                for person in people:
                    person.watched_from = len(person.presence)
                for i in range(2):
                    print(await restart(cluster, i, people, args.leavers, args.grace),
                          flush=True)
                stop.set()
                await asyncio.gather(*senders)
                await asyncio.sleep(3)  # the last messages arrive
                print(verdict(people, acked), flush=True)
            finally:
                stop.set()
                for task in senders:
                    task.cancel()
                for person in people:
                    if person.client is not None:
                        with contextlib.suppress(Exception):
                            await person.client.close()
                for http in sessions:
                    await http.close()
                await cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--leavers", type=int, default=3, help="per restarted node")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between one "
                        "client's messages")
    parser.add_argument("--grace", type=float, default=15.0)
    parser.add_argument("--drain-window", type=float, default=5.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
