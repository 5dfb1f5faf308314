"""What a search may cost: no more than its own rooms' index entries, never
past its deadline, and never the connections that joins, history and sends
read and write on (SQLite and PostgreSQL each in their own way)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import RoomName
from app.store import postgres
from app.store.postgres import PostgresStore
from app.store.search import query_tokens, terms
from app.store.sqlite import SqliteStore

from ...conftest import until
from ...services import postgres_schema

WAIT = 10.0  # seconds any single step here may take before the test fails
SMALL, LARGE = RoomName("small"), RoomName("large")


async def fill(store: SqliteStore | PostgresStore, room: RoomName, count: int) -> None:
    """``count`` messages in ``room`` whose every word starts with "a"."""
    await asyncio.gather(*(store.append(room, "filler", f"a{i} ab{i % 97} abc{i % 13}", None)
                           for i in range(count)))


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "chat.db")
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def postgres_store() -> AsyncIterator[PostgresStore]:
    async with postgres_schema() as url:
        store = PostgresStore(*postgres.split_url(url))
        await store.start()
        yield store
        await store.close()


def prefix_terms(conn: sqlite3.Connection, room: RoomName, word: str) -> int:
    """How many index terms a prefix query for ``word`` in ``room`` merges."""
    (prefix,) = query_tokens(room, [word])
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab("
                 "main, messages_fts, row)")
    (count,) = conn.execute("SELECT count(*) FROM temp.vocab WHERE term >= ? AND term < ?",
                            (prefix, prefix + "\U0010ffff")).fetchone()
    return int(count)


async def test_a_sqlite_prefix_search_reads_its_own_rooms_entries_only(
        sqlite_store: SqliteStore, tmp_path: Path) -> None:
    """A one-letter term in a room of ten messages merges the index terms of
    that room's words only, however many words starting with that letter the
    store's other rooms hold (before: every such word of every room)."""
    await fill(sqlite_store, SMALL, 10)
    # (a search first writes the messages the index holds back: then it is whole)
    assert len((await sqlite_store.search([SMALL], terms("a"))).messages) == 10
    with contextlib.closing(sqlite3.connect(tmp_path / "chat.db")) as conn:
        alone = prefix_terms(conn, SMALL, "a")
        await fill(sqlite_store, LARGE, 3000)
        assert len((await sqlite_store.search([LARGE], terms("a"), limit=5)).messages) == 5
        assert prefix_terms(conn, SMALL, "a") == alone == 10 + 10 + 10
        assert prefix_terms(conn, LARGE, "a") > 3000
    page = await sqlite_store.search([SMALL], terms("a"))
    assert len(page.messages) == 10


def pool(store: PostgresStore) -> asyncpg.Pool:
    assert store._pool is not None
    return store._pool


async def buffers(conn: asyncpg.Connection, rooms: list[RoomName], words: list[str]) -> int:
    """The buffers PostgreSQL touches to answer the store's search query."""
    plan = await conn.fetchval(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + postgres.SEARCH,
        rooms, postgres.tsquery(rooms, words), 2**62, "", 0, 21)
    top = json.loads(plan)[0]["Plan"]
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])


async def test_a_postgres_prefix_search_reads_its_own_rooms_entries_only(
        postgres_store: PostgresStore) -> None:
    """On PostgreSQL too: the buffers a one-letter search of a small room
    touches do not grow with the other rooms' matching words."""
    await fill(postgres_store, SMALL, 10)
    async with pool(postgres_store).acquire() as conn:
        await conn.execute("ANALYZE messages")
        alone = await buffers(conn, [SMALL], ["a"])
        await fill(postgres_store, LARGE, 5000)
        await conn.execute("ANALYZE messages")
        assert await buffers(conn, [SMALL], ["a"]) <= alone + 4
        assert await buffers(conn, [LARGE], ["a"]) > alone + 20
    assert len((await postgres_store.search([SMALL], ["a"])).messages) == 10


ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


async def test_a_sqlite_search_is_stopped_at_its_deadline_and_holds_up_no_read(
        sqlite_store: SqliteStore) -> None:
    """A read on the search lanes that would never end is answered unavailable
    at its deadline and stopped inside SQLite (its lane is free again, its
    statement interrupted); while both lanes are busy, history pages and sends
    are answered as usual."""
    lanes = sqlite_store._searches
    endless = [asyncio.ensure_future(lanes.run(
        "search", lambda c: c.execute(ENDLESS).fetchone(), timeout=1.0)) for _ in range(2)]
    await sqlite_store.append(SMALL, "alice", "still here", None)
    assert (await sqlite_store.page(SMALL)).messages[0].text == "still here"
    for task in endless:
        with pytest.raises(ChatError) as refused:
            await asyncio.wait_for(task, WAIT)
        assert refused.value.code is ErrorCode.UNAVAILABLE
    await until(lambda: lanes.free == 2, WAIT)
    assert (lanes.interrupted, lanes.stopped) == (2, 2)
    assert len((await sqlite_store.search([SMALL], ["still"])).messages) == 1


async def test_a_postgres_search_is_stopped_at_its_deadline_and_holds_up_no_read(
        postgres_store: PostgresStore) -> None:
    """On PostgreSQL a search statement still running at its deadline is
    cancelled by the server (statement_timeout): it is answered unavailable
    and no backend runs it on; while the search pool is busy, sends and
    history pages are answered from the main pool as usual."""
    endless = [asyncio.ensure_future(postgres_store.searching(
        lambda c: c.fetchval("SELECT pg_sleep(60)"), "search", 1.0)) for _ in range(2)]
    await postgres_store.append(SMALL, "alice", "still here", None)
    assert (await postgres_store.page(SMALL)).messages[0].text == "still here"
    for task in endless:
        with pytest.raises(ChatError) as refused:
            await asyncio.wait_for(task, WAIT)
        assert refused.value.code is ErrorCode.UNAVAILABLE
    async with pool(postgres_store).acquire() as conn:
        running = await conn.fetchval("SELECT count(*) FROM pg_stat_activity"
                                      " WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
    assert running == 0
    assert len((await postgres_store.search([SMALL], ["still"])).messages) == 1
