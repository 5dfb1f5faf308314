"""A large history loaded in bulk, in the layout the stores' own writes leave.

``append`` takes minutes per million messages (each batch a transaction,
each message indexed for search); the reads the benches time do not care how
the rows came. So the rows are written here directly: seqs 1..n per room
(messages spread evenly over the rooms, in turns), SQLite's search documents
numbered in write order and indexed in FTS5, PostgreSQL's room heads,
``words`` column and GIN index, each message's index tokens cut by
:mod:`app.store.search` as the stores cut them. The schema itself is the
store's: :func:`loaded` opens the store once (creating it), closes it,
loads, and yields its URL.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from app.store import open_store
from app.store.search import index_words, room_key

CHUNK = 200_000  # rows per bulk insert
START_TS = 1_700_000_000_000  # ms: the first message's time (one ms apart)


Row = tuple[str, int, str, str, int, str]  # room, seq, sender, text, ts, index tokens


def rows(texts: list[str], messages: int, rooms: int) -> Iterator[Row]:
    """(room, seq, sender, text, ts, tokens) in write order."""
    words = [index_words(text) for text in texts]
    keys = [room_key(f"room{r}") for r in range(rooms)]
    for n in range(messages // rooms * rooms):
        seq, room = divmod(n, rooms)
        key = keys[room]
        t = n % len(texts)
        yield (f"room{room}", seq + 1, f"user{n % 500}", texts[t], START_TS + n,
               " ".join(key + w for w in words[t]))


def load_sqlite(path: Path, texts: list[str], messages: int, rooms: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        chunk: list[Row] = []
        done = 0

        def flush() -> None:
            with conn:
                conn.executemany("INSERT INTO messages (room, seq, sender, text, ts, doc)"
                                 " VALUES (?, ?, ?, ?, ?, ?)",
                                 [(r[0], r[1], r[2], r[3], r[4], done + i + 1)
                                  for i, r in enumerate(chunk)])
                conn.executemany("INSERT INTO messages_fts (rowid, words, room, seq)"
                                 " VALUES (?, ?, ?, ?)",
                                 [(done + i + 1, r[5], r[0], r[1]) for i, r in enumerate(chunk)])

        for row in rows(texts, messages, rooms):
            chunk.append(row)
            if len(chunk) == CHUNK:
                flush()
                done += len(chunk)
                chunk = []
                print(f"  {done:,} rows", flush=True)
        flush()
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def load_postgres(url: str, schema: str, texts: list[str], messages: int,
                        rooms: int) -> None:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("DROP INDEX messages_words")  # built once at the end, as it stands
        await conn.execute("CREATE UNLOGGED TABLE loading (room text, seq bigint, sender text,"
                           " text text, ts bigint, w text)")
        source = rows(texts, messages, rooms)
        done = 0
        while chunk := [row for _, row in zip(range(CHUNK), source)]:
            await conn.copy_records_to_table("loading", records=chunk)
            await conn.execute("INSERT INTO messages (room, seq, sender, text, ts, words)"
                               " SELECT room, seq, sender, text, ts,"
                               " array_to_tsvector(string_to_array(w, ' ')) FROM loading")
            await conn.execute("TRUNCATE loading")
            done += len(chunk)
            print(f"  {done:,} rows", flush=True)
        await conn.execute("INSERT INTO rooms (room, head) SELECT 'room' || r, $1::bigint"
                           " FROM generate_series(0, $2 - 1) AS r"
                           " ON CONFLICT (room) DO UPDATE SET head = excluded.head",
                           messages // rooms, rooms)
        print("  building the search index", flush=True)
        await conn.execute("CREATE INDEX messages_words ON messages USING gin (words)")
        await conn.execute("DROP TABLE loading")
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()


@asynccontextmanager
async def loaded(kind: str, database_url: str, texts: list[str], messages: int,
                 rooms: int) -> AsyncIterator[str]:
    """A fresh store of ``kind`` (an SQLite file in a temporary directory, or a
    schema of its own on ``database_url``, dropped afterwards) holding
    ``messages`` messages in ``rooms`` rooms; yields its URL."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as workdir:
            url = f"sqlite:///{workdir}/bench.db"
            await (await open_store(url)).close()
            load_sqlite(Path(workdir) / "bench.db", texts, messages, rooms)
            yield url
        return
    async with fresh_postgres(database_url) as (url, schema):
        await load_postgres(database_url, schema, texts, messages, rooms)
        yield url


@asynccontextmanager
async def fresh_postgres(database_url: str) -> AsyncIterator[tuple[str, str]]:
    """A schema of its own on ``database_url`` with Roomcast's tables, dropped
    afterwards: yields its store URL and its name."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}schema={schema}"
    try:
        await (await open_store(url)).close()
        yield url, schema
    finally:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
