"""PostgreSQL message store (asyncpg): for several nodes sharing one history.

URL: ``postgresql://user:password@host:port/database``, optionally with
``?schema=NAME`` to keep Roomcast's tables in their own schema (created when
missing). Other query parameters go to asyncpg/PostgreSQL as usual.

Seq numbers: each room has a row in ``rooms`` holding its latest seq. A batch
of appends (see :mod:`app.store.batching`) locks the rows of the rooms it
touches, in name order (so two nodes never deadlock), checks client ids,
inserts its messages and moves the heads, all in one transaction. Several
nodes appending to one room therefore take turns on that row: seq stays
gap-free, and a retried send that raced its original on another node finds
it once the first transaction commits.

The schema is created or migrated at start-up under an advisory lock, so
nodes starting together do not race. Limits: while PostgreSQL is
unreachable, appends and reads fail with ``unavailable``; the pool
reconnects by itself once it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..chat.errors import ChatError, ErrorCode
from ..chat.models import Entry, Message, Page, RoomName, now_ms
from . import MessageStore, page_bounds
from .batching import AppendQueue, QueuedWrites
from .search import SearchPage, decode_cursor, encode_cursor
from .stream import (COLUMNS, BatchWriter, ClientKey, Key, Reactors, ReactorsWanted, Request,
                     Result, client_key, entry, reactors_of_version_3, reactors_wanted, row,
                     split, targets)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
MIGRATION_LOCK = 0x526F6F6D  # pg_advisory_xact_lock key ("Room")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS roomcast_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    room text PRIMARY KEY,
    head bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room      text   NOT NULL,
    seq       bigint NOT NULL,
    sender    text   NOT NULL,
    text      text   NOT NULL,
    ts        bigint NOT NULL,
    client_id text,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (room, sender, client_id) WHERE client_id IS NOT NULL;
"""
_MIGRATE_2 = """
-- version 2: one row per entry of a room's stream (app.store.stream): messages,
-- as they stand now, and the changes made to them
ALTER TABLE messages ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'message';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS target bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_to bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS deleted integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reactions text;
CREATE INDEX IF NOT EXISTS messages_only ON messages (room, seq) WHERE kind = 'message';
"""
_MIGRATE_3 = """
-- version 3: search; each message's words as it stands (none for changes and
-- deleted messages), with no stemming or accent folding ('simple'), and its
-- room as one more lexeme ('@' and the name, which no word can be), so that
-- the index finds a word in a room without going through the other rooms'
ALTER TABLE messages ADD COLUMN IF NOT EXISTS words tsvector GENERATED ALWAYS AS (
    CASE WHEN kind = 'message' AND deleted = 0 THEN to_tsvector('simple', text)
        || array_to_tsvector(ARRAY['@' || room]) END) STORED;
CREATE INDEX IF NOT EXISTS messages_words ON messages USING gin (words);
"""
_MIGRATE_4 = """
-- version 4: one row per person who reacts with an emoji to a message (before,
-- every name was in the message row); at: the seq of the change that added it
CREATE TABLE IF NOT EXISTS reactions (
    room  text   NOT NULL,
    seq   bigint NOT NULL,
    emoji text   NOT NULL,
    name  text   NOT NULL,
    at    bigint NOT NULL,
    PRIMARY KEY (room, seq, emoji, name)
);
CREATE INDEX IF NOT EXISTS reactions_order ON reactions (room, seq, emoji, at);
"""
_INSERT = f"INSERT INTO messages ({COLUMNS}) VALUES " \
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

OUTAGES = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
           asyncpg.exceptions.OperatorInterventionError,
           asyncpg.exceptions.CannotConnectNowError, OSError, TimeoutError)


def split_url(url: str) -> tuple[str, str | None]:
    """The DSN for asyncpg and our ``schema`` parameter, taken out of the query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    if schema is not None and not schema.replace("_", "").isalnum():
        raise ValueError(f"schema must be letters, digits and _, not {schema!r}")
    return urlunsplit(parts._replace(scheme="postgresql", query=rest)), schema


class PostgresStore(QueuedWrites):
    def __init__(self, dsn: str, schema: str | None) -> None:
        self._dsn = dsn
        self._schema = schema
        self._pool: asyncpg.Pool | None = None
        self._appends = AppendQueue(self._write, lambda exc: isinstance(exc, OUTAGES),
                                    "postgres")

    async def start(self) -> None:
        settings = {"search_path": self._schema} if self._schema else {}
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=10,
                                               server_settings=settings)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self._schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await self._migrate(conn)
        self._appends.start()
        log.info("postgres store ready (schema %s)", self._schema or "public")

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        await conn.execute(_SCHEMA)
        version = await conn.fetchval("SELECT max(version) FROM roomcast_schema")
        if version is not None and version > SCHEMA_VERSION:
            raise RuntimeError(f"the database has schema version {version}; this Roomcast "
                               f"knows up to {SCHEMA_VERSION}")
        if version is None or version < 2:
            await conn.execute(_MIGRATE_2)
        if version is None or version < 3:
            await conn.execute(_MIGRATE_3)
        if version is None or version < 4:
            await conn.execute(_MIGRATE_4)
            for room, seq, reactions in await conn.fetch(
                    "SELECT room, seq, reactions FROM messages"
                    " WHERE kind = 'message' AND reactions IS NOT NULL"):
                short, rows = reactors_of_version_3(room, seq, reactions)
                await conn.execute("UPDATE messages SET reactions = $3 WHERE room = $1"
                                   " AND seq = $2", room, seq, short)
                await conn.executemany("INSERT INTO reactions VALUES ($1, $2, $3, $4, $5)",
                                       rows)
        if version is None or version < SCHEMA_VERSION:
            await conn.execute("INSERT INTO roomcast_schema VALUES ($1)", SCHEMA_VERSION)

    # -- writes ---------------------------------------------------------------

    async def _write(self, batch: list[Request]) -> list[Result | ChatError]:
        assert self._pool is not None
        rooms = sorted({r.room for r in batch})
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO rooms (room, head) SELECT unnest($1::text[]), 0"
                               " ON CONFLICT DO NOTHING", rooms)
            heads = {RoomName(room): int(head) for room, head in await conn.fetch(
                "SELECT room, head FROM rooms WHERE room = ANY($1::text[])"
                " ORDER BY room FOR UPDATE", rooms)}
            writer = BatchWriter(heads, await self._stored(conn, batch),
                                 await self._messages_at(conn, targets(batch)), now_ms(),
                                 await self._reactors(conn, reactors_wanted(batch)))
            results = [writer.apply(r) for r in batch]
            new = writer.new_entries
            if new:
                await conn.executemany(_INSERT, [row(e) for e in new])
                await conn.execute(
                    "UPDATE rooms SET head = v.head FROM unnest($1::text[], $2::bigint[])"
                    " AS v(room, head) WHERE rooms.room = v.room",
                    list(heads), list(heads.values()))
            changed = writer.changed_messages
            if changed:
                await conn.executemany(
                    "UPDATE messages SET text = $3, edited = $4, deleted = $5, reactions = $6"
                    " WHERE room = $1 AND seq = $2",
                    [(r[0], r[1], r[4], r[9], r[10], r[11]) for r in map(row, changed)])
            gone, added, cleared = writer.reactor_rows
            if gone:
                await conn.execute(
                    "DELETE FROM reactions r USING unnest($1::text[], $2::bigint[], $3::text[],"
                    " $4::text[]) AS w(room, seq, emoji, name) WHERE (r.room, r.seq, r.emoji,"
                    " r.name) = (w.room, w.seq, w.emoji, w.name)", *map(list, zip(*gone)))
            if added:
                await conn.executemany("INSERT INTO reactions VALUES ($1, $2, $3, $4, $5)",
                                       added)
            if cleared:
                await conn.execute(
                    "DELETE FROM reactions r USING unnest($1::text[], $2::bigint[])"
                    " AS w(room, seq) WHERE (r.room, r.seq) = (w.room, w.seq)",
                    *map(list, zip(*cleared)))
        return results

    async def _reactors(self, conn: asyncpg.Connection, wanted: ReactorsWanted) -> Reactors:
        """The reactor rows the batch's reactions need (a batch of sends has none)."""
        if not wanted.first:
            return Reactors()
        keys = list(wanted.first)
        first = await conn.fetch(
            "SELECT w.room, w.seq, w.emoji, ARRAY(SELECT name FROM reactions r"
            " WHERE (r.room, r.seq, r.emoji) = (w.room, w.seq, w.emoji) ORDER BY at"
            " LIMIT w.n) FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[])"
            " AS w(room, seq, emoji, n)", *map(list, zip(*keys)), list(wanted.first.values()))
        present = await conn.fetch(
            "SELECT room, seq, emoji, name FROM reactions JOIN unnest($1::text[],"
            " $2::bigint[], $3::text[], $4::text[]) AS w(room, seq, emoji, name)"
            " USING (room, seq, emoji, name)", *map(list, zip(*wanted.senders)))
        return Reactors({(RoomName(r[0]), r[1], r[2]): list(r[3]) for r in first},
                        {(RoomName(r[0]), r[1], r[2], r[3]) for r in present})

    async def _stored(self, conn: asyncpg.Connection, batch: list[Request]
                      ) -> dict[ClientKey, Entry]:
        """Entries already stored under the batch's client ids."""
        wanted = [client_key(r) for r in batch if r.client_id is not None]
        if not wanted:
            return {}
        found = await conn.fetch(
            f"SELECT {COLUMNS} FROM messages m JOIN unnest($1::text[], $2::text[], $3::text[])"
            " AS w(room, sender, client_id) USING (room, sender, client_id)",
            *map(list, zip(*wanted)))
        entries = [entry(r) for r in found]
        return {(e.room, e.sender, e.client_id): e for e in entries}

    async def _messages_at(self, conn: asyncpg.Connection, keys: list[Key]
                           ) -> dict[Key, Message]:
        """The messages (not changes) at ``keys``."""
        if not keys:
            return {}
        found = await conn.fetch(
            f"SELECT {COLUMNS} FROM messages m JOIN unnest($1::text[], $2::bigint[])"
            " AS w(room, seq) USING (room, seq) WHERE m.kind = 'message'",
            [k[0] for k in keys], [k[1] for k in keys])
        messages = [entry(r) for r in found]
        return {(m.room, m.seq): m for m in messages if isinstance(m, Message)}

    # -- reads ----------------------------------------------------------------

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        page_bounds(before, after, limit)
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                if after is not None:  # the stream: messages and changes
                    rows = await conn.fetch(
                        f"SELECT {COLUMNS} FROM messages WHERE room = $1 AND seq > $2"
                        " ORDER BY seq LIMIT $3", room, after, limit + 1)
                else:  # messages as they stand
                    rows = await conn.fetch(
                        f"SELECT {COLUMNS} FROM messages WHERE room = $1 AND kind = 'message'"
                        " AND seq < $2 ORDER BY seq DESC LIMIT $3",
                        room, before if before is not None else 2**62, limit + 1)
                    rows.reverse()
                top = await conn.fetchval("SELECT head FROM rooms WHERE room = $1", room)
        except OUTAGES as exc:
            log.warning("postgres read failed: %s", exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        more = len(rows) > limit
        if more:
            rows = rows[:limit] if after is not None else rows[1:]
        messages, changes = split([entry(r) for r in rows])
        return Page(messages, more, top or 0, changes)

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20) -> SearchPage:
        assert self._pool is not None
        if not rooms or not terms:
            return SearchPage([], [], False)
        ts, room, seq = decode_cursor(cursor)
        query = " & ".join(f"{t}:*" for t in terms)  # words, so nothing to escape
        # room names are [A-Za-z0-9_.:-]: quoted as tsquery lexemes as they are
        places = " | ".join(f"'@{r}'" for r in rooms)
        try:
            rows = await self._pool.fetch(
                f"SELECT {COLUMNS} FROM messages WHERE room = ANY($1::text[])"
                " AND words @@ ($2::tsquery && to_tsquery('simple', $3))"
                " AND (ts, room, seq) < ($4, $5, $6)"
                " ORDER BY ts DESC, room DESC, seq DESC LIMIT $7",
                list(rooms), places, query, ts, room, seq, limit + 1)
        except OUTAGES as exc:
            log.warning("postgres search failed: %s", exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        messages = [m for m in map(entry, rows) if isinstance(m, Message)][:limit]
        return SearchPage(messages, [encode_cursor(m) for m in messages], len(rows) > limit)

    async def ping(self) -> None:
        if self._appends.closing or self._pool is None:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is closing")
        try:
            await self._pool.fetchval("SELECT 1")
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, f"postgres: {exc}") from exc

    async def close(self) -> None:
        if self._appends.closing:
            return
        await self._appends.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("postgres store closed")

    def abort(self) -> None:
        if self._pool is not None:
            log.warning("postgres store: dropping its connections")
            self._pool.terminate()


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    store = PostgresStore(*split_url(url))
    await store.start()
    return store
