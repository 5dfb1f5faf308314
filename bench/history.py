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
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from app.chat.models import RoomName
from app.store import MessageStore, open_store

from .search import DATABASE_URL, Texts

CHUNK = 200_000  # rows per bulk insert
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


def load_sqlite(path: Path, texts: list[str], messages: int, rooms: int) -> None:
    """Rows in seq order per room and doc order overall, as appends leave them."""
    per_room = messages // rooms
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        doc = 0
        for start in range(0, per_room * rooms, CHUNK):
            rows = []
            for n in range(start, min(start + CHUNK, per_room * rooms)):
                seq, room = divmod(n, rooms)
                doc += 1
                rows.append((f"room{room}", seq + 1, f"user{n % 500}", texts[n % len(texts)],
                             1_700_000_000_000 + n, doc))
            with conn:
                conn.executemany("INSERT INTO messages (room, seq, sender, text, ts, doc)"
                                 " VALUES (?, ?, ?, ?, ?, ?)", rows)
            print(f"  {start + len(rows):,} rows", flush=True)
        with conn:
            conn.execute("INSERT INTO messages_fts (rowid, text, place, room, seq) SELECT doc,"
                         " text, 'r' || hex(room), room, seq FROM messages")
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def load_postgres(url: str, schema: str, texts: list[str], messages: int,
                        rooms: int) -> None:
    per_room = messages // rooms
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("DROP INDEX messages_words")  # built once at the end, as it stands
        await conn.execute("CREATE TEMP TABLE texts (i int PRIMARY KEY, t text)")
        await conn.copy_records_to_table("texts", records=list(enumerate(texts)))
        for start in range(0, per_room * rooms, CHUNK):
            end = min(start + CHUNK, per_room * rooms)
            await conn.execute(
                "INSERT INTO messages (room, seq, sender, text, ts)"
                " SELECT 'room' || (n % $3), n / $3 + 1, 'user' || (n % 500), t.t,"
                " 1700000000000 + n FROM generate_series($1::bigint, $2::bigint - 1) AS n"
                " JOIN texts AS t ON t.i = n % $4", start, end, rooms, len(texts))
            print(f"  {end:,} rows", flush=True)
        await conn.execute("INSERT INTO rooms (room, head) SELECT 'room' || r, $1::bigint"
                           " FROM generate_series(0, $2 - 1) AS r"
                           " ON CONFLICT (room) DO UPDATE SET head = excluded.head",
                           per_room, rooms)
        print("  building the search index", flush=True)
        await conn.execute("CREATE INDEX messages_words ON messages USING gin (words)")
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()


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
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as workdir:
            path = Path(workdir) / "bench.db"
            store = await open_store(f"sqlite:///{path}")
            await store.close()
            load_sqlite(path, texts, args.messages, args.rooms)
            print(f"sqlite: loaded in {time.perf_counter() - started:.0f} s", flush=True)
            store = await open_store(f"sqlite:///{path}")
            try:
                results = {name: await timed(read, args.queries)
                           for name, read in reads(store, args.rooms, per_room).items()}
            finally:
                await store.close()
            return {"results": results, "plans": await plans(kind, str(path), per_room)}
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in args.database_url else "?"
    url = f"{args.database_url}{separator}schema={schema}"
    try:
        store = await open_store(url)
        await store.close()
        await load_postgres(args.database_url, schema, texts, args.messages, args.rooms)
        print(f"postgresql: loaded in {time.perf_counter() - started:.0f} s", flush=True)
        store = await open_store(url)
        try:
            results = {name: await timed(read, args.queries)
                       for name, read in reads(store, args.rooms, per_room).items()}
        finally:
            await store.close()
        return {"results": results,
                "plans": await plans(kind, f"{args.database_url}#{schema}", per_room)}
    finally:
        conn = await asyncpg.connect(args.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


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
