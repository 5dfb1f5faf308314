"""History and recovery latency over ten million stored messages, on both stores.

    .venv/bin/python -m bench.history [--messages 10000000] [--rooms 1000]
                                      [--queries 1000] [--stores sqlite,postgresql]

Creates a fresh store (an SQLite file in a temporary directory; a fresh
schema on ``DATABASE_URL`` for PostgreSQL) through ``open_store``, so the
schema and indexes are the server's, then loads ``--messages`` messages
spread evenly over ``--rooms`` rooms in bulk, in the layout the store's own
writes give them (seqs 1..n per room, SQLite's search documents numbered in
write order and indexed in FTS5, PostgreSQL's room heads, ``words`` column and
GIN index): ``append`` would take hours at this size and the reads do not
care how the rows came. The store is then opened again and each read a
client makes on join and reconnect is timed ``--queries`` times through the
store interface, on random rooms; it prints median and p99 in milliseconds,
and each read's query plan (SQLite ``EXPLAIN QUERY PLAN``, PostgreSQL
``EXPLAIN (ANALYZE, BUFFERS)``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from app.core.models import RoomName
from app.store import MessageStore, open_store

from app.store.postgres import split_url
from app.store.sqlite import path_from_url

from .bulk import loaded
from .search import DATABASE_URL, Texts

TEXTS = 50_000  # distinct texts, drawn in turn (Zipf-like words, as bench.search)

Read = Callable[[int], Awaitable[int]]

# The reads' SQL, as the stores send it (app/store/sqlite.py, postgres.py: page()),
# for the plans; {p} is the parameter style.
PLANS = {
    "history: the latest page":
        "SELECT room, seq, sender, text FROM messages WHERE room = {p1} AND kind = 'message'"
        " AND seq < {p2} ORDER BY seq DESC LIMIT 51",
    "join with since (reading on)":
        "SELECT room, seq, sender, text FROM messages WHERE room = {p1} AND seq > {p2}"
        " ORDER BY seq LIMIT 201",
}


def reads(store: MessageStore, rooms: int, per_room: int) -> dict[str, Read]:
    rng = random.Random(7)
    room = [RoomName(f"room{rng.randrange(rooms)}") for _ in range(1000)]
    back = [rng.randrange(51, per_room) for _ in range(1000)]

    async def page(i: int, **where: int) -> int:
        return len((await store.page(room[i % 1000], limit=50, **where)).messages)

    return {
        "history: the latest page (join)": lambda i: page(i),
        "history: a page back, anywhere": lambda i: page(i, before=back[i % 1000]),
        "history: the first page": lambda i: page(i, before=52),
        "join with since: 20 missed": lambda i: page(i, after=per_room - 20),
        "join with since: 200 missed": lambda i: page(i, after=per_room - 200),
    }


async def timed(read: Read, queries: int) -> tuple[float, float]:
    await read(0)
    took = []
    for i in range(queries):
        started = time.perf_counter()
        await read(i + 1)
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))]


async def plans(kind: str, target: str, per_room: int) -> dict[str, str]:
    shown = {}
    if kind == "sqlite":
        conn = sqlite3.connect(target)
        try:
            for name, sql in PLANS.items():
                rows = conn.execute("EXPLAIN QUERY PLAN " + sql.format(p1="?", p2="?"),
                                    ("room7", per_room // 2)).fetchall()
                shown[name] = "; ".join(str(row[-1]) for row in rows)
        finally:
            conn.close()
        return shown
    url, _, schema = target.partition("#")
    pg = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        for name, sql in PLANS.items():
            rows = await pg.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) "
                                  + sql.format(p1="$1", p2="$2"), "room7", per_room // 2)
            shown[name] = "; ".join(r[0].strip() for r in rows)
    finally:
        await pg.close()
    return shown


async def measure(kind: str, args: argparse.Namespace, texts: list[str]) -> dict[str, object]:
    per_room = args.messages // args.rooms
    started = time.perf_counter()
    async with loaded(kind, args.database_url, texts, args.messages, args.rooms) as url:
        print(f"{kind}: loaded in {time.perf_counter() - started:.0f} s", flush=True)
        store = await open_store(url)
        try:
            results = {name: await timed(read, args.queries)
                       for name, read in reads(store, args.rooms, per_room).items()}
        finally:
            await store.close()
        if kind == "sqlite":
            target = str(path_from_url(url))
        else:
            dsn, schema = split_url(url)
            target = f"{dsn}#{schema}"
        return {"results": results, "plans": await plans(kind, target, per_room)}


async def main(args: argparse.Namespace) -> None:
    print(f"{args.messages:,} messages in {args.rooms:,} rooms; {args.queries} reads of each "
          "kind through the store interface, milliseconds")
    source = Texts(seed=1)
    texts = [source.text() for _ in range(TEXTS)]
    measured = {kind: await measure(kind, args, texts) for kind in args.stores.split(",")}
    kinds = list(measured)
    print()
    print(f"{'read':36}" + "".join(f"{k + ' median':>20}{'p99':>9}" for k in kinds))
    first = measured[kinds[0]]["results"]
    assert isinstance(first, dict)
    for name in first:
        line = f"{name:36}"
        for k in kinds:
            median, p99 = measured[k]["results"][name]  # type: ignore[index]
            line += f"{median:>20.2f}{p99:>9.2f}"
        print(line)
    for k in kinds:
        print(f"\n{k} query plans:")
        for name, plan in measured[k]["plans"].items():  # type: ignore[attr-defined]
            print(f"  {name}: {plan}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--rooms", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--database-url", default=DATABASE_URL)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
