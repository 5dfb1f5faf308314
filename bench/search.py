"""Search and history latency over a large history, on both stores.

    .venv/bin/python -m bench.search [--messages 1000000] [--rooms 1000]
                                     [--queries 200] [--stores sqlite,postgresql]

Fills a fresh store (an SQLite file in a temporary directory; a fresh schema
on ``DATABASE_URL`` for PostgreSQL) with ``--messages`` messages spread over
``--rooms`` rooms through the store's own ``append`` (batched as the server
writes them), each 4 to 14 words drawn from a 20,000-word vocabulary with
Zipf-like frequencies, as chat is. Then times each kind of read
``--queries`` times through the store interface (what a ``search``,
``history`` or ``join`` costs the server beyond parsing it) and prints the
median and p99 in milliseconds, with how many results a query found.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from app.core.models import RoomName
from app.store import MessageStore, open_store
from app.store.search import terms

VOCABULARY = 20_000
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "dre", "pla", "ston", "quen",
             "bar", "fel", "gru", "hin", "jor", "ix", "ul", "ome"]
FILL_CHUNK = 5_000  # appends called at once (the store batches them 500 to a transaction)
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words, key=lambda w: rng.random())  # rank order: the first is commonest


class Texts:
    """Message texts with Zipf-like word frequencies (word k about 1/k)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.cumulative = list(itertools.accumulate(1 / (k + 1) for k in range(VOCABULARY)))

    def word(self) -> str:
        at = bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])
        return self.words[min(at, VOCABULARY - 1)]

    def text(self) -> str:
        return " ".join(self.word() for _ in range(self.rng.randint(4, 14)))


@asynccontextmanager
async def fresh_store(kind: str, database_url: str) -> AsyncIterator[MessageStore]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as workdir:
            store = await open_store(f"sqlite:///{workdir}/bench.db")
            try:
                yield store
            finally:
                await store.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in database_url else "?"
    store = await open_store(f"{database_url}{separator}schema={schema}")
    try:
        yield store
    finally:
        await store.close()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


async def fill(store: MessageStore, texts: Texts, messages: int, rooms: int) -> float:
    """Append ``messages`` messages; returns messages per second."""
    started = time.perf_counter()
    for start in range(0, messages, FILL_CHUNK):
        count = min(FILL_CHUNK, messages - start)
        await asyncio.gather(*(
            store.append(RoomName(f"room{texts.rng.randrange(rooms)}"),
                         f"user{texts.rng.randrange(500)}", texts.text(), None)
            for _ in range(count)))
        done = start + count
        if done % 100_000 == 0 or done == messages:
            print(f"  {done:,} stored ({done / (time.perf_counter() - started):,.0f}/s)",
                  flush=True)
    return messages / (time.perf_counter() - started)


Read = Callable[[int], Awaitable[int]]  # the i-th query; returns how many it found


def reads(store: MessageStore, texts: Texts, rooms: int, messages: int) -> dict[str, Read]:
    rng = random.Random(7)
    room = [RoomName(f"room{rng.randrange(rooms)}") for _ in range(1000)]
    many = [[RoomName(f"room{r}") for r in rng.sample(range(rooms), min(50, rooms))]
            for _ in range(20)]
    common, rare = texts.words[:20], texts.words[5_000:15_000]
    per_room = messages // rooms

    async def search(rooms_: list[RoomName], query: str) -> int:
        return len((await store.search(rooms_, terms(query), limit=20)).messages)

    async def page(i: int, **where: int) -> int:
        return len((await store.page(room[i % 1000], limit=50, **where)).messages)

    return {
        "search: a common word, one room": lambda i: search([room[i % 1000]], common[i % 20]),
        "search: a rare word, one room": lambda i: search([room[i % 1000]], rare[i % 10_000]),
        "search: two words, one room": lambda i: search(
            [room[i % 1000]], f"{common[i % 20]} {common[(i + 7) % 20]}"),
        "search: a prefix, one room": lambda i: search([room[i % 1000]], common[i % 20][:2]),
        "search: a common word, 50 rooms": lambda i: search(many[i % 20], common[i % 20]),
        "search: a rare word, 50 rooms": lambda i: search(many[i % 20], rare[i % 10_000]),
        "history: the latest page": lambda i: page(i),
        "history: a page back from the middle": lambda i: page(i, before=per_room // 2),
        "join with since: 50 back from the end": lambda i: page(i, after=max(0, per_room - 50)),
    }


async def timed(read: Read, queries: int) -> tuple[float, float, float]:
    """Median and p99 latency (ms) and the median number found."""
    await read(0)  # warm
    took: list[float] = []
    found: list[int] = []
    for i in range(queries):
        started = time.perf_counter()
        found.append(await read(i + 1))
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return (statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))],
            statistics.median(found))


async def main(args: argparse.Namespace) -> None:
    print(f"{args.messages:,} messages in {args.rooms:,} rooms; {args.queries} queries of "
          "each kind; latency through the store interface, milliseconds")
    results: dict[str, dict[str, tuple[float, float, float]]] = {}
    for kind in args.stores.split(","):
        print(f"{kind}: filling", flush=True)
        texts = Texts(seed=1)
        async with fresh_store(kind, args.database_url) as store:
            rate = await fill(store, texts, args.messages, args.rooms)
            print(f"{kind}: {rate:,.0f} messages/s stored", flush=True)
            results[kind] = {name: await timed(read, args.queries)
                             for name, read in reads(store, texts, args.rooms,
                                                     args.messages).items()}
    kinds = list(results)
    print()
    print(f"{'read':40}" + "".join(f"{k + ' median':>18}{'p99':>9}{'found':>7}" for k in kinds))
    for name in results[kinds[0]]:
        print(f"{name:40}" + "".join(f"{results[k][name][0]:>18.2f}{results[k][name][1]:>9.2f}"
                                     f"{results[k][name][2]:>7.0f}" for k in kinds))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=DATABASE_URL)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
