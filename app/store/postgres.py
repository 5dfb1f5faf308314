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

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..core.emoji import canonical
from ..core.errors import ChatError, ErrorCode
from ..core.models import (UNREAD_COUNTED, Action, Entry, Message, Page, Reading, RoomName,
                           now_ms)
from ..core.policy import ACTIONS, NO_STANDING, RoomSettings, Standing
from . import MessageStore, page_bounds
from .batching import AppendQueue, QueuedWrites, Write, Written
from .markers import RECEIPTS_LISTED, YOUR_ROOMS_LISTED, Mark, MarkerKey, UseClock, fold
from .search import (SEARCH_TIMEOUT, SearchPage, decode_cursor, encode_cursor, indexed,
                     query_tokens, too_slow)
from .stream import (COLUMNS, BatchWriter, ClientKey, Key, Reactors, ReactorsWanted, Request,
                     StandingKey, client_key, entry, misspelled, reactions_respelled,
                     reactors_of_version_3, reactors_wanted, row, split, standing_keys, targets)

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 11
_ACTION_KINDS = ", ".join(f"'{kind}'" for kind in ACTIONS)
SEARCH_POOL = 2  # connections for searches (their own: see search)
MIGRATION_LOCK = 0x526F6F6D  # pg_advisory_xact_lock key ("Room")
PURGE_LOCK = 0x50757267  # with a room's hash: its purge ("Purg")
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
_MIGRATE_5 = """
-- version 5 (app.store.markers): per person, read markers (at: when the person
-- last entered or read the room, ms) and mentions; the participants of direct
-- conversations
CREATE TABLE IF NOT EXISTS markers (
    name text   NOT NULL,
    room text   NOT NULL,
    seq  bigint NOT NULL,
    at   bigint NOT NULL,
    PRIMARY KEY (name, room)
);
CREATE INDEX IF NOT EXISTS markers_recent ON markers (name, at);
CREATE INDEX IF NOT EXISTS markers_room ON markers (room, seq);
CREATE TABLE IF NOT EXISTS mentions (
    name text   NOT NULL,
    room text   NOT NULL,
    seq  bigint NOT NULL,
    PRIMARY KEY (name, room, seq)
);
CREATE INDEX IF NOT EXISTS mentions_message ON mentions (room, seq);
CREATE TABLE IF NOT EXISTS directs (
    room text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (room, name)
);
"""
_MIGRATE_6 = """
-- version 6: each message's index tokens (app.store.search) as it stands,
-- cut by Roomcast and not by PostgreSQL's text parser (which dropped some
-- words, "½" for one, and so matched every message for them); each token
-- carries its room, so that a prefix finds a room's words only
DROP INDEX IF EXISTS messages_words;
ALTER TABLE messages DROP COLUMN IF EXISTS words;
ALTER TABLE messages ADD COLUMN words tsvector;
"""
_MIGRATE_7 = """
-- version 7: how far each consumer (a bot's named cursor) has handled a room
CREATE TABLE IF NOT EXISTS cursors (
    owner text   NOT NULL,
    room  text   NOT NULL,
    seq   bigint NOT NULL,
    PRIMARY KEY (owner, room)
);
"""
_MIGRATE_8 = """
-- version 8: the few configured things the chat keeps, as JSON (webhooks)
CREATE TABLE IF NOT EXISTS records (
    kind text  NOT NULL,
    key  text  NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (kind, key)
);
"""
_MIGRATE_9 = f"""
-- version 9: governance (app.core.policy): a governed room's settings on its
-- row (locked with it by every batch), each person's standing in it; the
-- actions are entries of the stream, found for the audit log by their index
ALTER TABLE rooms ADD COLUMN IF NOT EXISTS settings jsonb;
CREATE TABLE IF NOT EXISTS standings (
    room   text   NOT NULL,
    name   text   NOT NULL,
    role   text,
    banned bigint,
    muted  bigint,
    sent   bigint,
    PRIMARY KEY (room, name)
);
CREATE INDEX IF NOT EXISTS messages_actions ON messages (room, seq)
    WHERE kind IN ({_ACTION_KINDS});
-- and retention: how far it has removed each room's stream
CREATE TABLE IF NOT EXISTS purged (
    room text   PRIMARY KEY,
    upto bigint NOT NULL
);
"""
_WORDS_INDEX = "CREATE INDEX IF NOT EXISTS messages_words ON messages USING gin (words)"
# The messages after each (name, room, seq) that others sent, not deleted, and
# the mentions of the name among them, each counted up to UNREAD_COUNTED.
_UNREAD = """
SELECT (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.room = w.room
            AND m.kind = 'message' AND m.seq > w.seq AND m.sender <> w.name
            AND m.deleted = 0 LIMIT $4) AS u),
       (SELECT count(*) FROM (SELECT 1 FROM mentions n WHERE n.name = w.name
            AND n.room = w.room AND n.seq > w.seq LIMIT $4) AS v)
FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS w(name, room, seq, i)
ORDER BY w.i
"""
# A batch's new entries and its rooms' new heads in one statement (one round
# trip: on a busy event loop each reply waits for the loop's next turn)
_INSERT = f"""
WITH moved AS (
    UPDATE rooms SET head = v.head FROM unnest($14::text[], $15::bigint[]) AS v(room, head)
    WHERE rooms.room = v.room)
INSERT INTO messages ({COLUMNS}, words)
SELECT {COLUMNS}, array_to_tsvector(string_to_array(w, ' '))
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
    $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::integer[],
    $12::text[], $13::text[], $16::text[]) AS u({COLUMNS}, w)
"""
_MIGRATE_11 = """
-- version 11: a message's attachments (app.core.models.Attachment), as JSON
ALTER TABLE messages ADD COLUMN IF NOT EXISTS attachments text;
"""
# A page of search results: the messages of rooms $1 matching tsquery $2,
# newest first, before the cursor's (ts, room, seq) $3-$5, up to $6
SEARCH = f"""
SELECT {COLUMNS} FROM messages WHERE room = ANY($1::text[])
    AND words @@ $2::tsquery AND (ts, room, seq) < ($3, $4, $5)
ORDER BY ts DESC, room DESC, seq DESC LIMIT $6
"""
_LOCK_ROOMS = "SELECT room, head, settings FROM rooms WHERE room = ANY($1::text[])" \
    " ORDER BY room FOR UPDATE"

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
        self._search_pool: asyncpg.Pool | None = None
        self._appends = AppendQueue(self._write, lambda exc: isinstance(exc, OUTAGES),
                                    "postgres")
        self._used = UseClock()

    async def start(self) -> None:
        settings = {"search_path": self._schema} if self._schema else {}
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=10,
                                               server_settings=settings)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self._schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await self._migrate(conn)
        # searches: a pool of their own, so that they never hold the connections
        # that sends, joins and history pages need
        self._search_pool = await asyncpg.create_pool(self._dsn, min_size=0,
                                                      max_size=SEARCH_POOL,
                                                      server_settings=settings)
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
        if version is None or version < 5:
            await conn.execute(_MIGRATE_5)
        if version is None or version < 6:
            await conn.execute(_MIGRATE_6)
            await self._index_all(conn)
            await conn.execute(_WORDS_INDEX)
        if version is None or version < 7:
            await conn.execute(_MIGRATE_7)
        if version is None or version < 8:
            await conn.execute(_MIGRATE_8)
        if version is None or version < 9:
            await conn.execute(_MIGRATE_9)
        if version is not None and version < 10:
            await self._respell_reactions(conn)
        if version is None or version < 11:
            await conn.execute(_MIGRATE_11)
        if version is None or version < SCHEMA_VERSION:
            await conn.execute("INSERT INTO roomcast_schema VALUES ($1)", SCHEMA_VERSION)

    @staticmethod
    async def _respell_reactions(conn: asyncpg.Connection) -> None:
        """Version 9 -> 10: every emoji spelled canonically (``❤`` is ``❤️``),
        in messages' reactions and in the changes that made them."""
        for room, seq, reactions in await conn.fetch(
                "SELECT room, seq, reactions FROM messages"
                " WHERE kind = 'message' AND reactions IS NOT NULL"):
            if not misspelled(reactions):
                continue
            reactors = await conn.fetch("SELECT emoji, name, at FROM reactions"
                                        " WHERE room = $1 AND seq = $2", room, seq)
            short, rows = reactions_respelled(room, seq, reactions,
                                              [tuple(r) for r in reactors])
            await conn.execute("UPDATE messages SET reactions = $3 WHERE room = $1"
                               " AND seq = $2", room, seq, short)
            await conn.execute("DELETE FROM reactions WHERE room = $1 AND seq = $2", room, seq)
            await conn.executemany("INSERT INTO reactions VALUES ($1, $2, $3, $4, $5)", rows)
        for (emoji,) in await conn.fetch("SELECT DISTINCT text FROM messages"
                                         " WHERE kind IN ('react', 'unreact')"):
            if canonical(emoji) != emoji:
                await conn.execute("UPDATE messages SET text = $1"
                                   " WHERE kind IN ('react', 'unreact') AND text = $2",
                                   canonical(emoji), emoji)

    @staticmethod
    async def _index_all(conn: asyncpg.Connection) -> None:
        """Version 5 -> 6: every message as it stands gets its index tokens."""
        log.info("postgres store: indexing the stored messages for search (once)")
        rows = conn.cursor("SELECT room, seq, text FROM messages"
                           " WHERE kind = 'message' AND deleted = 0", prefetch=5000)
        chunk: list[tuple[str, int, str]] = []
        async for room, seq, text in rows:
            chunk.append((room, seq, indexed(room, text)))
            if len(chunk) == 5000:
                await _set_words(conn, chunk)
                chunk = []
        await _set_words(conn, chunk)

    # -- writes ---------------------------------------------------------------

    async def _write(self, batch: list[Write]) -> list[Written | ChatError]:
        assert self._pool is not None
        stream = [r for r in batch if not isinstance(r, Mark)]
        marks = [r for r in batch if isinstance(r, Mark)]
        async with self._pool.acquire() as conn, conn.transaction():
            results: list[Written | ChatError] = []
            heads: dict[RoomName, int] = {}
            if stream:
                writer = await self._write_stream(conn, stream)
                results, heads = [writer.apply(r) for r in stream], writer.heads
                await self._write_rows(conn, writer)
            if marks:
                readings = iter(await self._write_marks(conn, marks, heads))
                streamed = iter(results)
                results = [next(readings) if isinstance(r, Mark) else next(streamed)
                           for r in batch]
        return results

    async def _write_stream(self, conn: asyncpg.Connection, stream: list[Request]
                            ) -> BatchWriter:
        """Lock the rooms ``stream`` writes to and load what it needs."""
        rooms = sorted({r.room for r in stream})
        locked = await conn.fetch(_LOCK_ROOMS, rooms)
        missing = sorted(set(rooms) - {room for room, _, _ in locked})
        if missing:  # a room's first message: created, then locked like the others
            await conn.execute("INSERT INTO rooms (room, head) SELECT unnest($1::text[]), 0"
                               " ON CONFLICT DO NOTHING", missing)
            locked += await conn.fetch(_LOCK_ROOMS, missing)
        heads = {RoomName(room): int(head) for room, head, _ in locked}
        # read under the rooms' locks: an action another node stored is seen
        settings = {RoomName(room): RoomSettings.from_dict(json.loads(body))
                    for room, _, body in locked if body is not None}
        return BatchWriter(heads, await self._stored(conn, stream),
                           await self._messages_at(conn, targets(stream)), now_ms(),
                           await self._reactors(conn, reactors_wanted(stream)), settings,
                           await self._standings(conn, standing_keys(stream, set(settings))))

    @staticmethod
    async def _standings(conn: asyncpg.Connection, keys: list[StandingKey]
                         ) -> dict[StandingKey, Standing]:
        if not keys:
            return {}
        return {(RoomName(room), name): Standing(role, banned, muted, sent)
                for room, name, role, banned, muted, sent in await conn.fetch(
                    "SELECT s.room, s.name, s.role, s.banned, s.muted, s.sent FROM standings s"
                    " JOIN unnest($1::text[], $2::text[]) AS w(room, name) USING (room, name)",
                    [k[0] for k in keys], [k[1] for k in keys])}

    async def _write_rows(self, conn: asyncpg.Connection, writer: BatchWriter) -> None:
        """Write what ``writer`` made of the batch's appends and changes."""
        new = writer.new_entries
        if new:
            await conn.execute(_INSERT, *map(list, zip(*map(row, new))),
                               list(writer.heads), list(writer.heads.values()),
                               [_words(e) for e in new])
        changed = writer.changed_messages
        if changed:
            await conn.executemany(
                "UPDATE messages SET text = $3, edited = $4, deleted = $5, reactions = $6,"
                " words = array_to_tsvector(string_to_array($7, ' ')), attachments = $8"
                " WHERE room = $1 AND seq = $2",
                [(r[0], r[1], r[4], r[9], r[10], r[11], _words(m), r[12])
                 for m, r in zip(changed, map(row, changed))])
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
        await self._write_governance(conn, writer)
        mentions, unmentioned = writer.mention_rows
        if mentions:
            await conn.execute(
                "INSERT INTO mentions SELECT * FROM unnest($1::text[], $2::text[],"
                " $3::bigint[]) ON CONFLICT DO NOTHING", *map(list, zip(*mentions)))
        if unmentioned:
            await conn.execute(
                "DELETE FROM mentions n USING unnest($1::text[], $2::bigint[])"
                " AS w(room, seq) WHERE (n.room, n.seq) = (w.room, w.seq)",
                *map(list, zip(*unmentioned)))

    @staticmethod
    async def _write_governance(conn: asyncpg.Connection, writer: BatchWriter) -> None:
        settings = writer.changed_settings
        if settings:
            await conn.execute(
                "UPDATE rooms SET settings = v.settings::jsonb FROM unnest($1::text[],"
                " $2::text[]) AS v(room, settings) WHERE rooms.room = v.room",
                list(settings), [json.dumps(s.as_dict()) for s in settings.values()])
        standings = writer.changed_standings
        gone = [key for key, st in standings.items() if st.empty]
        kept = [(*key, st.role, st.banned, st.muted, st.sent)
                for key, st in standings.items() if not st.empty]
        if gone:
            await conn.execute(
                "DELETE FROM standings s USING unnest($1::text[], $2::text[]) AS w(room, name)"
                " WHERE (s.room, s.name) = (w.room, w.name)", *map(list, zip(*gone)))
        if kept:
            await conn.execute(
                "INSERT INTO standings SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
                " $4::bigint[], $5::bigint[], $6::bigint[]) ON CONFLICT (room, name) DO UPDATE"
                " SET role = excluded.role, banned = excluded.banned, muted = excluded.muted,"
                " sent = excluded.sent", *map(list, zip(*kept)))

    async def _write_marks(self, conn: asyncpg.Connection, marks: list[Mark],
                           heads: dict[RoomName, int]) -> list[Reading]:
        """Move the batch's markers, locked in key order (two nodes moving one
        person's markers take turns, and never deadlock)."""
        keys = sorted({(m.name, m.room) for m in marks})
        names, rooms = [k[0] for k in keys], [k[1] for k in keys]
        unlocked = sorted({r for r in rooms if r not in heads})
        heads = {**heads, **{RoomName(room): int(head) for room, head in await conn.fetch(
            "SELECT room, head FROM rooms WHERE room = ANY($1::text[])", unlocked)}}
        markers: dict[MarkerKey, int] = {
            (name, RoomName(room)): seq for name, room, seq in await conn.fetch(
                "SELECT m.name, m.room, m.seq FROM markers m JOIN unnest($1::text[],"
                " $2::text[]) AS w(name, room) USING (name, room)"
                " ORDER BY m.name, m.room FOR UPDATE OF m", names, rooms)}
        seqs = fold(marks, markers, heads)
        used = {(m.name, m.room): self._used() for m in marks}  # the last use of each
        # a marker another node created meanwhile (no row to lock) is merged
        await conn.execute(
            "INSERT INTO markers SELECT * FROM unnest($1::text[], $2::text[],"
            " $3::bigint[], $4::bigint[]) ON CONFLICT (name, room) DO UPDATE"
            " SET seq = greatest(markers.seq, excluded.seq), at = excluded.at",
            names, rooms, [markers[k] for k in keys], [used[k] for k in keys])
        counts = await conn.fetch(_UNREAD, [m.name for m in marks], [m.room for m in marks],
                                  seqs, UNREAD_COUNTED)
        return [Reading(m.room, seq, unread, mentioned, heads.get(m.room, 0))
                for m, seq, (unread, mentioned) in zip(marks, seqs, counts)]

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
                top, purged = await conn.fetchrow(
                    "SELECT (SELECT head FROM rooms WHERE room = $1),"
                    " COALESCE((SELECT upto FROM purged WHERE room = $1), 0)", room)
                if after is not None:  # the stream: messages and changes
                    rows = await conn.fetch(
                        f"SELECT {COLUMNS} FROM messages WHERE room = $1 AND seq > $2"
                        " ORDER BY seq LIMIT $3", room, max(after, purged), limit + 1)
                else:  # messages as they stand
                    rows = await conn.fetch(
                        f"SELECT {COLUMNS} FROM messages WHERE room = $1 AND kind = 'message'"
                        " AND seq < $2 ORDER BY seq DESC LIMIT $3",
                        room, before if before is not None else 2**62, limit + 1)
                    rows.reverse()
        except OUTAGES as exc:
            log.warning("postgres read failed: %s", exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        more = len(rows) > limit
        if more:
            rows = rows[:limit] if after is not None else rows[1:]
        messages, changes = split([entry(r) for r in rows])
        return Page(messages, more, top or 0, changes, purged)

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20,
                     timeout: float = SEARCH_TIMEOUT) -> SearchPage:
        """On the search pool, each statement stopped by PostgreSQL at the
        deadline (``statement_timeout``), so none runs on unanswered."""
        assert self._search_pool is not None
        if not rooms or not terms:
            return SearchPage([], [], False)
        ts, room, seq = decode_cursor(cursor)
        rows = await self.searching(lambda conn: conn.fetch(
            SEARCH, list(rooms), tsquery(rooms, terms), ts, room, seq, limit + 1),
            "search", timeout)
        messages = [m for m in map(entry, rows) if isinstance(m, Message)][:limit]
        return SearchPage(messages, [encode_cursor(m) for m in messages], len(rows) > limit)

    async def searching(self, read: Callable[[asyncpg.Connection], Awaitable[T]], what: str,
                        timeout: float) -> T:
        """``read(conn)`` on a connection of the search pool, in a read-only
        transaction whose statements PostgreSQL stops at the deadline
        (``statement_timeout``, counted from the call: waiting for a
        connection counts); ``unavailable`` if it is not done by then."""
        assert self._search_pool is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with self._search_pool.acquire(timeout=timeout) as conn, \
                    conn.transaction(readonly=True):
                left = max(1, int((deadline - loop.time()) * 1000))
                await conn.execute(f"SET LOCAL statement_timeout = {left}")
                return await read(conn)
        except (asyncpg.exceptions.QueryCanceledError, TimeoutError):
            log.warning("%s stopped at its deadline of %g s", what, timeout)
            raise too_slow(what, timeout) from None
        except OUTAGES as exc:
            log.warning("postgres %s failed: %s", what, exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc

    async def readings(self, name: str, rooms: Sequence[RoomName] | None = None
                       ) -> list[Reading]:
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn, conn.transaction(
                    isolation="repeatable_read", readonly=True):
                if rooms is None:
                    found = await conn.fetch(
                        "SELECT m.room, m.seq, coalesce(r.head, 0) FROM markers m LEFT JOIN"
                        " rooms r USING (room) WHERE m.name = $1 ORDER BY m.at DESC LIMIT $2",
                        name, YOUR_ROOMS_LISTED)
                else:
                    found = await conn.fetch(
                        "SELECT m.room, m.seq, coalesce(r.head, 0) FROM markers m LEFT JOIN"
                        " rooms r USING (room) WHERE m.name = $1 AND m.room = ANY($2::text[])",
                        name, list(rooms))
                counts = await conn.fetch(_UNREAD, [name] * len(found),
                                          [f[0] for f in found], [f[1] for f in found],
                                          UNREAD_COUNTED)
        except OUTAGES as exc:
            log.warning("postgres read failed: %s", exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return [Reading(RoomName(room), seq, unread, mentioned, head)
                for (room, seq, head), (unread, mentioned) in zip(found, counts)]

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        assert self._pool is not None
        try:
            found = await self._pool.fetch(
                "SELECT name, seq FROM markers WHERE room = $1 ORDER BY seq DESC, at DESC"
                " LIMIT $2", room, RECEIPTS_LISTED)
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return [(name, seq) for name, seq in found]

    async def open_direct(self, room: RoomName, names: Sequence[str]) -> None:
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO directs SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
                    room, list(names))
                await conn.execute(
                    "INSERT INTO markers SELECT unnest($2::text[]), $1, coalesce((SELECT head"
                    " FROM rooms WHERE room = $1), 0), $3 ON CONFLICT DO NOTHING",
                    room, list(names), self._used())
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc

    async def participants(self, rooms: Sequence[RoomName]) -> dict[RoomName, frozenset[str]]:
        assert self._pool is not None
        try:
            found = await self._pool.fetch(
                "SELECT room, array_agg(name) FROM directs WHERE room = ANY($1::text[])"
                " GROUP BY room", list(rooms))
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return {RoomName(room): frozenset(names) for room, names in found}

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        assert self._pool is not None
        try:
            found = await self._pool.fetchval(
                "SELECT seq FROM cursors WHERE owner = $1 AND room = $2", owner, room)
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return None if found is None else int(found)

    async def advance(self, owner: str, room: RoomName, seq: int) -> int:
        assert self._pool is not None
        try:
            now = await self._pool.fetchval(
                "INSERT INTO cursors SELECT $1, $2, least($3::bigint, coalesce((SELECT head"
                " FROM rooms WHERE room = $2), 0)) ON CONFLICT (owner, room) DO UPDATE"
                " SET seq = greatest(cursors.seq, excluded.seq) RETURNING seq",
                owner, room, seq)
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return int(now)

    async def heads(self) -> dict[RoomName, int]:
        rows = await self._fetch("SELECT room, head FROM rooms WHERE head > 0")
        return {RoomName(room): int(head) for room, head in rows}

    async def cursors(self, owner: str) -> dict[RoomName, int]:
        rows = await self._fetch("SELECT room, seq FROM cursors WHERE owner = $1", owner)
        return {RoomName(room): int(seq) for room, seq in rows}

    async def set_cursors(self, owner: str, positions: Mapping[RoomName, int]) -> None:
        await self._fetch(
            "INSERT INTO cursors SELECT $1, p.room, least(p.seq, coalesce((SELECT head"
            " FROM rooms WHERE room = p.room), 0)) FROM unnest($2::text[], $3::bigint[])"
            " AS p(room, seq) ON CONFLICT (owner, room) DO UPDATE"
            " SET seq = greatest(cursors.seq, excluded.seq)",
            owner, list(positions), list(positions.values()))

    async def drop_cursors(self, owner: str) -> None:
        await self._fetch("DELETE FROM cursors WHERE owner = $1", owner)

    async def put_record(self, kind: str, key: str, body: dict[str, Any]) -> None:
        await self._fetch("INSERT INTO records VALUES ($1, $2, $3::jsonb) ON CONFLICT"
                          " (kind, key) DO UPDATE SET body = excluded.body",
                          kind, key, json.dumps(body))

    async def records(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = await self._fetch("SELECT key, body::text FROM records WHERE kind = $1", kind)
        return {key: json.loads(body) for key, body in rows}

    async def record(self, kind: str, key: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT body::text FROM records WHERE kind = $1 AND key = $2",
                                 kind, key)
        return dict(json.loads(rows[0][0])) if rows else None

    async def standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        rows = await self._fetch(
            "SELECT r.settings, s.role, s.banned, s.muted, s.sent FROM rooms r LEFT JOIN"
            " standings s ON s.room = r.room AND s.name = $2 WHERE r.room = $1", room, name)
        if not rows or rows[0][0] is None:
            return None, NO_STANDING
        body, role, banned, muted, sent = rows[0]
        return RoomSettings.from_dict(json.loads(body)), Standing(role, banned, muted, sent)

    async def rules(self, name: str, rooms: Sequence[RoomName]
                    ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        rows = await self._fetch(
            "SELECT r.room, r.settings, s.role, s.banned, s.muted, s.sent FROM rooms r"
            " LEFT JOIN standings s ON s.room = r.room AND s.name = $2"
            " WHERE r.room = ANY($1::text[]) AND r.settings IS NOT NULL", list(rooms), name)
        return {RoomName(room): (RoomSettings.from_dict(json.loads(body)),
                                 Standing(role, banned, muted, sent))
                for room, body, role, banned, muted, sent in rows}

    async def standings(self, room: RoomName, limit: int = 1000
                        ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        found = await self._fetch("SELECT settings FROM rooms WHERE room = $1", room)
        if not found or found[0][0] is None:
            return None, {}
        people = await self._fetch(
            "SELECT name, role, banned, muted, sent FROM standings WHERE room = $1"
            " ORDER BY name LIMIT $2", room, limit)
        return RoomSettings.from_dict(json.loads(found[0][0])), {
            name: Standing(role, banned, muted, sent)
            for name, role, banned, muted, sent in people}

    async def actions(self, room: RoomName, *, before: int | None = None,
                      limit: int = 50) -> list[Action]:
        rows = await self._fetch(
            f"SELECT {COLUMNS} FROM messages WHERE room = $1 AND kind IN ({_ACTION_KINDS})"
            " AND seq < $2 ORDER BY seq DESC LIMIT $3",
            room, before if before is not None else 2**62, limit)
        return [a for a in map(entry, rows) if isinstance(a, Action)]

    async def governed(self) -> dict[RoomName, RoomSettings]:
        return {RoomName(room): RoomSettings.from_dict(json.loads(body)) for room, body in
                await self._fetch("SELECT room, settings FROM rooms WHERE settings IS NOT NULL")}

    async def purge(self, room: RoomName, before: int, limit: int) -> int:
        """(Two nodes purging one room take turns: the second finds the first's
        work done, or skips the room this time.)"""
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                                           PURGE_LOCK, room):
                    return 0
                upto = cut = await conn.fetchval(
                    "SELECT COALESCE((SELECT upto FROM purged WHERE room = $1), 0)", room)
                for seq, ts in await conn.fetch(
                        "SELECT seq, ts FROM messages WHERE room = $1 AND seq > $2 ORDER BY seq"
                        " LIMIT $3", room, upto, limit):
                    if seq != cut + 1 or ts >= before:
                        break
                    cut = seq
                if cut == upto:
                    return 0
                for table, only in (("reactions", ""), ("mentions", ""),
                                    ("messages", f" AND kind NOT IN ({_ACTION_KINDS})")):
                    await conn.execute(f"DELETE FROM {table} WHERE room = $1 AND seq > $2"
                                       f" AND seq <= $3{only}", room, upto, cut)
                await conn.execute("INSERT INTO purged VALUES ($1, $2) ON CONFLICT (room)"
                                   " DO UPDATE SET upto = greatest(purged.upto, excluded.upto)",
                                   room, cut)
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return int(cut - upto)

    async def drop_record(self, kind: str, key: str) -> bool:
        rows = await self._fetch("DELETE FROM records WHERE kind = $1 AND key = $2"
                                 " RETURNING 1", kind, key)
        return bool(rows)

    async def drop_records(self, kind: str) -> int:
        rows = await self._fetch("DELETE FROM records WHERE kind = $1 RETURNING 1", kind)
        return len(rows)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """One statement's rows; an outage is ``unavailable``."""
        assert self._pool is not None
        try:
            rows: list[Any] = await self._pool.fetch(sql, *args)
        except OUTAGES as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return rows

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
        for pool in (self._search_pool, self._pool):
            if pool is not None:
                await pool.close()
        log.info("postgres store closed")

    def abort(self) -> None:
        if self._pool is not None:
            log.warning("postgres store: dropping its connections")
            self._pool.terminate()
        if self._search_pool is not None:
            self._search_pool.terminate()


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    store = PostgresStore(*split_url(url))
    await store.start()
    return store


def tsquery(rooms: Sequence[RoomName], terms: list[str]) -> str:
    """The ``tsquery`` for messages of ``rooms`` with every term: in each room,
    a prefix match per term (tokens are letters and digits: nothing to quote)."""
    return " | ".join("(" + " & ".join(f"'{token}':*" for token in query_tokens(room, terms))
                      + ")" for room in rooms)


def _words(e: Entry) -> str | None:
    """What the ``words`` column holds for ``e``: a message's tokens as it
    stands; none for a deleted message or a change."""
    return indexed(e.room, e.text) if isinstance(e, Message) and not e.deleted else None


async def _set_words(conn: asyncpg.Connection, rows: list[tuple[str, int, str]]) -> None:
    if rows:
        await conn.execute(
            "UPDATE messages m SET words = array_to_tsvector(string_to_array(w.words, ' '))"
            " FROM unnest($1::text[], $2::bigint[], $3::text[]) AS w(room, seq, words)"
            " WHERE (m.room, m.seq) = (w.room, w.seq)", *map(list, zip(*rows)))
