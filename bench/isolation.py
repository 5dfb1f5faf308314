"""One person's searches against everyone else's joins, history and sends.

    .venv/bin/python -m bench.isolation [--messages 1000000] [--rooms 1000]
        [--users 30] [--seconds 30] [--stores sqlite,postgresql]

For each store: ``--messages`` messages in ``--rooms`` rooms (loaded in bulk,
:mod:`bench.bulk`), then ``python -m app`` on that store with its default
limits. ``--users`` people, a connection each (python-socketio over
WebSocket), each go round once every 1.2 s: ``join`` a random room (the ack
brings its latest messages and read marker), read a ``history`` page from
the middle of it, ``send`` a message and ``leave``. Each call is timed from
emit to ack. First ``--seconds`` with nobody else, then ``--seconds`` while
one attacker, one name on three connections each joined to 50 rooms,
searches ``b d f g h k l m`` in all of its rooms once a second on each
connection (eight one-letter prefixes, each starting words of the bench's
vocabulary: the most expensive query the protocol admits). Prints, per
store, each call's median and p99 in both phases and the difference of the
p99s, and how the attacker's searches were answered.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import socketio

from .app_server import roomcast
from .bulk import loaded
from .search import DATABASE_URL, Texts

NAMESPACE = "/chat"
ROUND = 1.2  # seconds between one user's rounds (leave is 1/s per connection)
# eight one-letter prefixes, each starting words of the bench's vocabulary (bench.search)
ATTACK = "b d f g h k l m"
TEXTS = 50_000


async def connect(url: str, name: str) -> socketio.AsyncClient:
    sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
    await sio.connect(url, auth={"name": name}, namespaces=[NAMESPACE],
                      transports=["websocket"], wait_timeout=30)
    return sio


async def call(sio: socketio.AsyncClient, event: str, data: dict[str, Any]) -> dict[str, Any]:
    ack: dict[str, Any] = await sio.call(event, data, namespace=NAMESPACE, timeout=30)
    return ack


class Timings:
    def __init__(self) -> None:
        self.took: defaultdict[str, list[float]] = defaultdict(list)
        self.failed: Counter[str] = Counter()

    async def timed(self, sio: socketio.AsyncClient, event: str, data: dict[str, Any]
                    ) -> dict[str, Any]:
        started = time.perf_counter()
        ack = await call(sio, event, data)
        self.took[event].append((time.perf_counter() - started) * 1000)
        if not ack.get("ok"):
            self.failed[f"{event}: {ack['error']['code']}"] += 1
        return ack


async def user(sio: socketio.AsyncClient, i: int, rooms: int, per_room: int, until: float,
               timings: Timings) -> None:
    rng = random.Random(i)
    await asyncio.sleep(rng.random() * ROUND)  # spread the rounds
    while time.monotonic() < until:
        started = time.monotonic()
        room = f"room{rng.randrange(rooms)}"
        await timings.timed(sio, "join", {"room": room})
        await timings.timed(sio, "history", {"room": room, "before": per_room // 2})
        await timings.timed(sio, "send", {"room": room, "text": f"round {started:.3f}"})
        await timings.timed(sio, "leave", {"room": room})
        await asyncio.sleep(max(0.0, ROUND - (time.monotonic() - started)))


async def attacker(sio: socketio.AsyncClient, until: float, answers: Counter[str],
                   took: list[float]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        ack = await call(sio, "search", {"query": ATTACK})
        took.append((time.monotonic() - started) * 1000)
        answers["ok" if ack["ok"] else ack["error"]["code"]] += 1
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def phase(url: str, users: list[socketio.AsyncClient], args: argparse.Namespace,
                attackers: list[socketio.AsyncClient]) -> tuple[Timings, Counter[str],
                                                                list[float]]:
    timings, answers, took = Timings(), Counter[str](), list[float]()
    until = time.monotonic() + args.seconds
    per_room = args.messages // args.rooms
    await asyncio.gather(
        *(user(sio, i, args.rooms, per_room, until, timings) for i, sio in enumerate(users)),
        *(attacker(sio, until, answers, took) for sio in attackers))
    return timings, answers, took


async def measure(kind: str, args: argparse.Namespace, texts: list[str]) -> None:
    started = time.perf_counter()
    async with loaded(kind, args.database_url, texts, args.messages, args.rooms) as store:
        print(f"{kind}: loaded in {time.perf_counter() - started:.0f} s", flush=True)
        async with roomcast(store=store) as (_, url):
            users = [await connect(url, f"user{i}") for i in range(args.users)]
            attackers = [await connect(url, "mallory") for _ in range(3)]
            try:
                for sio in attackers:  # 50 rooms each (the most a connection may join)
                    for r in range(50):
                        await call(sio, "join", {"room": f"room{r}"})
                quiet, _, _ = await phase(url, users, args, [])
                attacked, answers, took = await phase(url, users, args, attackers)
            finally:
                for sio in users + attackers:
                    await sio.disconnect()
    print(f"\n{kind}, {args.messages:,} messages in {args.rooms:,} rooms, {args.users} users,"
          f" {args.seconds:g} s a phase (ms from emit to ack)")
    print(f"{'call':10}{'calls':>8}{'median':>9}{'p99':>9}{'attacked calls':>16}{'median':>9}"
          f"{'p99':>9}{'p99 +':>9}")
    for event in ("join", "history", "send", "leave"):
        a, b = quiet.took[event], attacked.took[event]
        print(f"{event:10}{len(a):>8}{statistics.median(a):>9.1f}{p99(a):>9.1f}{len(b):>16}"
              f"{statistics.median(b):>9.1f}{p99(b):>9.1f}{p99(b) - p99(a):>+9.1f}")
    print(f"refused: quiet {dict(quiet.failed) or 'none'};"
          f" attacked {dict(attacked.failed) or 'none'}")
    print(f"the attacker's {sum(answers.values())} searches: {dict(answers)}; answered in"
          f" median {statistics.median(took):.1f} ms, p99 {p99(took):.1f} ms", flush=True)


async def main(args: argparse.Namespace) -> None:
    source = Texts(seed=1)
    texts = [source.text() for _ in range(TEXTS)]
    for kind in args.stores.split(","):
        await measure(kind, args, texts)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=DATABASE_URL)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
