"""SQLite message store: the zero-set-up default for a single node.

Design: the stdlib ``sqlite3`` driver runs on two dedicated threads, one
writer and one reader, so disk I/O never blocks the event loop. Appends go
through :class:`~app.store.batching.AppendQueue`: everything queued so far is
written in one transaction on the writer thread (group commit), in call
order, which also makes seq assignment atomic. (aiosqlite would cost a
thread hop per statement; here a whole batch is one hop.)

Durability: WAL journal with ``synchronous=FULL``: an acknowledged message
survives a process crash and a power loss.

Search: the writer numbers each message (``doc``) and holds the new ones
back from the full-text index until _INDEX_AFTER of them are waiting, then
writes them with that batch. An FTS5 table costs about seven pages a
transaction however few rows it takes (a new segment, its structure and
averages records), against four for the message itself, so indexing with
every commit was most of what a one-message batch wrote and fsynced. Search
still finds every acknowledged message: what waits is written before a
search reads, before an edit, delete or purge changes the index, and at
close; after a crash, at start (the messages numbered past the index's last).
A writer that finds the file written by another process since its last
transaction (``PRAGMA data_version``) reads the last number again and takes
what it holds back as it now stands.

Limits: one writer at a time. Several processes may open the same file
(``busy_timeout`` makes them take turns), but for several nodes use
PostgreSQL. ``seq`` never restarts as long as the file is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..core.emoji import canonical
from ..core.errors import ChatError, ErrorCode
from ..core.models import (UNREAD_COUNTED, Action, Entry, Message, Page, Reading, RoomName,
                           now_ms)
from ..core.policy import ACTIONS, NO_STANDING, RoomSettings, Standing
from . import MessageStore, page_bounds
from .batching import AppendQueue, QueuedWrites, Write, Written
from .markers import RECEIPTS_LISTED, YOUR_ROOMS_LISTED, Mark, MarkerKey, UseClock, fold
from .lanes import Lanes
from .turn_reads import TurnReads
from .search import SEARCH_TIMEOUT, SearchPage, indexed, query_tokens
from .stream import (COLUMNS, BatchWriter, ClientKey, Key, Reactors, ReactorsWanted, Request,
                     StandingKey, client_key, entry, misspelled, reactions_respelled,
                     reactors_of_version_3, reactors_wanted, retexted, row, split,
                     standing_keys, targets)

_PLACES = "(" + ", ".join("?" * 14) + ")"  # COLUMNS and doc
_QUALIFIED = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
# the last seq of room ``k.room`` (its newest message's, or what retention purged
# up to): SQLite answers each MAX from the end of the primary key
_HEAD_OF_K = ("max(COALESCE((SELECT MAX(m.seq) FROM messages AS m WHERE m.room = k.room), 0),"
              " COALESCE((SELECT p.upto FROM purged AS p WHERE p.room = k.room), 0))")

log = logging.getLogger(__name__)

SCHEMA_VERSION = 12
_ACTION_KINDS = ", ".join(f"'{kind}'" for kind in ACTIONS)

# One row per entry of a room's stream (app.store.stream): messages, as they
# stand now, and the changes made to them; messages_only pages back through
# the messages alone. One row per person who reacts with an emoji to a
# message (version 4; before, every name was in the message row). Per person
# (version 5, app.store.markers): read markers, mentions, and the participants
# of direct conversations. Per consumer and room (version 7): how far a bot's
# named cursor (or a webhook) has handled the room's stream. Records (version
# 8): the few configured things the chat keeps, as JSON (webhooks). Governance
# (version 9, app.core.policy): each governed room's settings, and each
# person's standing in it (role, ban, mute, last send in slow mode); the
# actions themselves are entries of the stream. Per room, how far retention
# has removed its stream (purged). A message's attachments (version 11), as JSON.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    sender    TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    client_id TEXT,
    kind      TEXT    NOT NULL DEFAULT 'message',
    target    INTEGER,
    reply_to  INTEGER,
    edited    INTEGER,
    deleted   INTEGER NOT NULL DEFAULT 0,
    reactions TEXT,
    doc       INTEGER,
    attachments TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (room, sender, client_id) WHERE client_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS reactions (
    room  TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    emoji TEXT    NOT NULL,
    name  TEXT    NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (room, seq, emoji, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reactions_order ON reactions (room, seq, emoji, at);
CREATE TABLE IF NOT EXISTS markers (
    name TEXT    NOT NULL,
    room TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    at   INTEGER NOT NULL,
    PRIMARY KEY (name, room)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS markers_recent ON markers (name, at);
CREATE INDEX IF NOT EXISTS markers_room ON markers (room, seq);
CREATE TABLE IF NOT EXISTS mentions (
    name TEXT    NOT NULL,
    room TEXT    NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (name, room, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mentions_message ON mentions (room, seq);
CREATE TABLE IF NOT EXISTS directs (
    room TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (room, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    owner TEXT    NOT NULL,
    room  TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (owner, room)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS room_settings (
    room TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS purged (
    room TEXT    NOT NULL PRIMARY KEY,
    upto INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS standings (
    room   TEXT NOT NULL,
    name   TEXT NOT NULL,
    role   TEXT,
    banned INTEGER,
    muted  INTEGER,
    sent   INTEGER,
    PRIMARY KEY (room, name)
) WITHOUT ROWID;
"""
# Search (app.store.search): each message's index tokens as it stands, under
# the message's doc number (given in write order, so newest first is
# descending rowid, which FTS5 walks without sorting); a deleted message has
# no row (version 12: messages_doc finds the messages the writer held back
# from the index when it stopped, which a Roomcast before it would not look
# for). The tokens are cut by app.store.search and only split on spaces
# here: the ascii tokenizer takes every non-ASCII character as part of a
# token, so no Unicode table of SQLite's decides what a word is.
_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_only ON messages (room, seq) WHERE kind = 'message';
CREATE INDEX IF NOT EXISTS messages_actions ON messages (room, seq)
    WHERE kind IN (%s);
CREATE INDEX IF NOT EXISTS messages_doc ON messages (doc) WHERE doc IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    words, room UNINDEXED, seq UNINDEXED, tokenize = 'ascii');
""" % _ACTION_KINDS
# version 5 -> 6: the index's tokens carry their room (app.store.search)
_MIGRATE_5 = """
DROP TABLE IF EXISTS messages_fts;
"""
# version 2 -> 3: search (the messages stored before are numbered and indexed)
_MIGRATE_2 = """
ALTER TABLE messages ADD COLUMN doc INTEGER;
"""
_NUMBER = """
UPDATE messages SET doc = numbered.doc FROM (
    SELECT room, seq, ROW_NUMBER() OVER (ORDER BY ts, room, seq) AS doc
    FROM messages WHERE kind = 'message') AS numbered
WHERE messages.room = numbered.room AND messages.seq = numbered.seq;
"""
# version 1 -> 2: the changes joined the stream
_MIGRATE_1 = """
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';
ALTER TABLE messages ADD COLUMN target INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited INTEGER;
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reactions TEXT;
"""
SEARCH_LANES = 2  # searches running at once (each on a connection and a thread of its own)
_ROWS_PER_INSERT = 1000  # 14 parameters a row; SQLite allows 32,766 per statement
# messages waiting for the search index before a batch writes them into it: a
# batch's wait at most (128 short messages into FTS5: 0.7 ms p50 here), and
# a crash's work at the next start
_INDEX_AFTER = 128


def path_from_url(url: str) -> Path:
    """``sqlite:///data/x.db`` is relative to the working directory;
    ``sqlite:////var/lib/x.db`` is absolute."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"bad SQLite URL {url!r}: use sqlite:///relative/path.db "
                         "or sqlite:////absolute/path.db")
    return Path(parts.path[1:])


def _unavailable(what: str, exc: sqlite3.Error) -> ChatError:
    log.warning("sqlite %s failed: %s", what, exc)
    return ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class SqliteStore(QueuedWrites):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._reads = TurnReads(self._reader_thread)  # a turn's reads: one job on the thread
        # searches: connections of their own, so that none waits behind
        # another's search (nor delays a join's or a history page's read)
        self._searches = Lanes(SEARCH_LANES, "sqlite-search")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._appends = AppendQueue(self._write, lambda exc: isinstance(exc, sqlite3.Error),
                                    "sqlite")
        self._used = UseClock()
        # the last document number given: the writer thread's alone (only its
        # batches number documents), read once, forgotten on rollback
        self._last_doc: int | None = None
        # messages numbered and stored but not yet in the search index, as
        # (doc, words, room, seq): the writer thread's alone; the first
        # _indexing of them are written in the transaction under way
        self._unindexed: list[tuple[int, str, RoomName, int]] = []
        self._indexing = 0
        # the file's data_version as the writer last saw it: another changes
        # it only if another connection (another process) wrote meanwhile
        self._data_version: int | None = None
        # how many waited when the transaction under way had seen it (None
        # before): what a rollback keeps
        self._waiting: int | None = None

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = await self._on(self._writer_thread, self._open_writer)
        self._read_conn = await self._on(self._reader_thread, _connect, self._path)
        await self._searches.open(lambda: _connect(self._path))
        self._appends.start()
        log.info("sqlite store at %s", self._path.resolve())

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self._path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self._path} has schema version {version}; this Roomcast "
                               f"knows up to {SCHEMA_VERSION}")
        if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
            # a new file: pages freed by retention go back to the file system
            # (PRAGMA incremental_vacuum after each purge); an older file reuses
            # them. (The journal mode has written the file's header already: the
            # setting takes effect with a VACUUM, instant on an empty file.)
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
        numbering = {1: _MIGRATE_1 + _MIGRATE_2, 2: _MIGRATE_2}.get(version, "")
        reindexing = _MIGRATE_5 if 0 < version < 6 else ""
        conn.executescript(f"BEGIN; {numbering} {reindexing} {_SCHEMA} {_INDEXES}"
                           f" {_NUMBER if numbering else ''}")
        try:
            self._recover_index(conn)  # (after version 5: every message)
            if version < 4:
                self._move_reactors(conn)
            if 0 < version < 10:
                self._respell_reactions(conn)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
            if "attachments" not in columns:  # version 10 and before
                conn.execute("ALTER TABLE messages ADD COLUMN attachments TEXT")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn

    @staticmethod
    def _move_reactors(conn: sqlite3.Connection) -> None:
        """Version 3 -> 4: the names in message rows go to their own rows."""
        for room, seq, reactions in conn.execute(
                "SELECT room, seq, reactions FROM messages"
                " WHERE kind = 'message' AND reactions IS NOT NULL").fetchall():
            short, rows = reactors_of_version_3(room, seq, reactions)
            conn.execute("UPDATE messages SET reactions = ? WHERE room = ? AND seq = ?",
                         (short, room, seq))
            conn.executemany("INSERT INTO reactions VALUES (?, ?, ?, ?, ?)", rows)

    @staticmethod
    def _respell_reactions(conn: sqlite3.Connection) -> None:
        """Version 9 -> 10: every emoji spelled canonically (``❤`` is ``❤️``),
        in messages' reactions and in the changes that made them."""
        for room, seq, reactions in conn.execute(
                "SELECT room, seq, reactions FROM messages"
                " WHERE kind = 'message' AND reactions IS NOT NULL").fetchall():
            if not misspelled(reactions):
                continue
            reactors = conn.execute("SELECT emoji, name, at FROM reactions"
                                    " WHERE room = ? AND seq = ?", (room, seq)).fetchall()
            short, rows = reactions_respelled(room, seq, reactions, reactors)
            conn.execute("UPDATE messages SET reactions = ? WHERE room = ? AND seq = ?",
                         (short, room, seq))
            conn.execute("DELETE FROM reactions WHERE room = ? AND seq = ?", (room, seq))
            conn.executemany("INSERT INTO reactions VALUES (?, ?, ?, ?, ?)", rows)
        for (emoji,) in conn.execute("SELECT DISTINCT text FROM messages"
                                     " WHERE kind IN ('react', 'unreact')").fetchall():
            if canonical(emoji) != emoji:
                conn.execute("UPDATE messages SET text = ? WHERE kind IN ('react', 'unreact')"
                             " AND text = ?", (canonical(emoji), emoji))

    async def _on(self, thread: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)

    # -- writes ---------------------------------------------------------------

    async def _write(self, batch: list[Write]) -> list[Written | ChatError]:
        results: list[Written | ChatError] = await self._on(
            self._writer_thread, self._write_batch, batch)
        return results

    def _write_batch(self, batch: list[Write]) -> list[Written | ChatError]:
        """One transaction in a handful of statements, however long the batch:
        the sqlite3 module releases the GIL around every step of a statement
        and must win it back from the busy event loop after each (up to the
        5 ms switch interval), so a statement per message (or a row per step)
        made a batch of 100 take hundreds of milliseconds under load."""
        conn = self._write_conn
        assert conn is not None
        with self._writing(conn):
            stream = [r for r in batch if not isinstance(r, Mark)]
            marks = [r for r in batch if isinstance(r, Mark)]
            rooms = sorted({r.room for r in batch})
            settings, heads, stored, markers, version = self._batch_reads(
                conn, rooms, [r for r in stream if r.client_id is not None],
                sorted({(m.name, m.room) for m in marks}))
            self._seen(conn, version)
            writer = BatchWriter(heads, stored,
                                 self._messages_at(conn, targets(stream)), now_ms(),
                                 self._reactors(conn, reactors_wanted(stream)), settings,
                                 self._standings(conn, standing_keys(stream, set(settings))))
            results: list[Written | ChatError] = [
                writer.apply(r) for r in stream]
            if stream:
                self._write_stream(conn, writer)
            if marks:
                readings = iter(self._write_marks(conn, marks, writer.heads, markers))
                streamed = iter(results)
                results = [next(readings) if isinstance(r, Mark) else next(streamed)
                           for r in batch]
            if len(self._unindexed) >= _INDEX_AFTER:
                self._index_waiting(conn)
        return results

    @contextlib.contextmanager
    def _writing(self, conn: sqlite3.Connection) -> Iterator[None]:
        """A transaction of the writer's, whose first read tells :meth:`_seen`
        the file's data_version: the messages it wrote into the search index
        wait no more once it commits; a rollback forgets what it numbered."""
        self._waiting = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            self._last_doc = None  # (read again)
            if self._waiting is not None:
                del self._unindexed[self._waiting:]
            self._indexing = 0
            conn.execute("ROLLBACK")
            raise
        del self._unindexed[:self._indexing]
        self._indexing = 0

    def _seen(self, conn: sqlite3.Connection, version: int) -> None:
        """The file's data_version, read first in a :meth:`_writing` (in a
        statement that reads anyway: each gives up the GIL): if another process
        wrote since this writer last did, the last number is read again and
        what waits for the index re-read; before it, nothing is numbered."""
        if version != self._data_version:  # (or the first time)
            self._last_doc = None
            self._reread_waiting(conn)
            self._data_version = version
        self._waiting = len(self._unindexed)

    @staticmethod
    def _version_now(conn: sqlite3.Connection) -> int:
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        return int(version)

    def _reread_waiting(self, conn: sqlite3.Connection) -> None:
        """Another process wrote to the file since this writer last did: the
        messages waiting for the index are taken as they stand now (it may
        have edited, deleted or purged them; whatever of them it indexed is
        written again, the same)."""
        if not self._unindexed:
            return
        now = self._messages_at(conn, [(room, seq) for _, _, room, seq in self._unindexed])
        self._unindexed = [(doc, indexed(room, m.text), room, seq)
                           for doc, _, room, seq in self._unindexed
                           if (m := now.get((room, seq))) is not None and not m.deleted]

    def _index_waiting(self, conn: sqlite3.Connection) -> None:
        """Write the messages waiting for the search index into it, in the
        transaction under way (a :meth:`_writing`)."""
        assert self._waiting is not None  # (seen: nothing another process indexed is stale)
        rows = self._unindexed[self._indexing:]
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start:start + _ROWS_PER_INSERT]
            conn.execute("INSERT OR REPLACE INTO messages_fts (rowid, words, room, seq) VALUES "
                         + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                         [v for r in chunk for v in r])
        self._indexing = len(self._unindexed)

    def _index_now(self) -> None:
        """Everything waiting into the search index, in a transaction of its own."""
        conn = self._write_conn
        assert conn is not None
        if self._unindexed:
            with self._writing(conn):
                self._seen(conn, self._version_now(conn))
                self._index_waiting(conn)

    @staticmethod
    def _recover_index(conn: sqlite3.Connection) -> None:
        """The messages numbered past the search index's last, into it: after a
        crash, those the writer held back; after the index was made anew
        (version 5 -> 6), every message. A deleted one never goes in."""
        last = conn.execute("SELECT rowid FROM messages_fts ORDER BY rowid DESC LIMIT 1"
                            ).fetchone()
        rows = conn.execute("SELECT doc, room, seq, text FROM messages WHERE doc > ?"
                            " AND kind = 'message' AND NOT deleted ORDER BY doc",
                            (last[0] if last else 0,))
        indexed_now = 0
        while chunk := rows.fetchmany(_ROWS_PER_INSERT):
            indexed_now += len(chunk)
            conn.executemany("INSERT INTO messages_fts (rowid, words, room, seq)"
                             " VALUES (?, ?, ?, ?)",
                             [(doc, indexed(room, text), room, seq)
                              for doc, room, seq, text in chunk])
        if indexed_now:
            log.info("sqlite store: %d stored messages indexed for search", indexed_now)

    def _write_stream(self, conn: sqlite3.Connection, writer: BatchWriter) -> None:
        """Write what ``writer`` made of the batch's appends and changes."""
        new = writer.new_entries
        assert self._waiting is not None  # (seen: the last number is the file's)
        if self._last_doc is None:
            last = conn.execute("SELECT doc FROM messages WHERE doc IS NOT NULL"
                                " ORDER BY doc DESC LIMIT 1").fetchone()
            self._last_doc = last[0] if last else 0
        doc = self._last_doc
        rows = []
        for e in new:
            if isinstance(e, Message):
                doc += 1
                if not e.deleted:
                    self._unindexed.append((doc, indexed(e.room, e.text), e.room, e.seq))
            rows.append((*row(e), doc if isinstance(e, Message) else None))
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start:start + _ROWS_PER_INSERT]
            conn.execute(f"INSERT INTO messages ({COLUMNS}, doc) VALUES "
                         + ", ".join([_PLACES] * len(chunk)), [v for r in chunk for v in r])
        self._last_doc = doc
        changed = writer.changed_messages
        if changed:
            conn.executemany(
                "UPDATE messages SET text = ?, edited = ?, deleted = ?, reactions = ?,"
                " attachments = ? WHERE room = ? AND seq = ?",
                [(r[4], r[9], r[10], r[11], r[12], r[0], r[1]) for r in map(row, changed)])
            texts = retexted(new)
            retexts = [m for m in changed if (m.room, m.seq) in texts]
            if retexts:
                self._index_waiting(conn)  # (an edited message may be one of them)
                self._reindex(conn, retexts)
        gone, added, cleared = writer.reactor_rows
        conn.executemany("DELETE FROM reactions WHERE room = ? AND seq = ? AND emoji = ?"
                         " AND name = ?", gone)
        conn.executemany("INSERT INTO reactions VALUES (?, ?, ?, ?, ?)", added)
        conn.executemany("DELETE FROM reactions WHERE room = ? AND seq = ?", cleared)
        mentions, unmentioned = writer.mention_rows
        conn.executemany("INSERT OR IGNORE INTO mentions VALUES (?, ?, ?)", mentions)
        conn.executemany("DELETE FROM mentions WHERE room = ? AND seq = ?", unmentioned)
        conn.executemany("INSERT OR REPLACE INTO room_settings VALUES (?, ?)",
                         [(room, json.dumps(settings.as_dict()))
                          for room, settings in writer.changed_settings.items()])
        standings = writer.changed_standings
        conn.executemany("DELETE FROM standings WHERE room = ? AND name = ?",
                         [key for key, st in standings.items() if st.empty])
        conn.executemany("INSERT OR REPLACE INTO standings VALUES (?, ?, ?, ?, ?, ?)",
                         [(*key, st.role, st.banned, st.muted, st.sent)
                          for key, st in standings.items() if not st.empty])

    def _write_marks(self, conn: sqlite3.Connection, marks: list[Mark],
                     heads: dict[RoomName, int], markers: dict[MarkerKey, int]
                     ) -> list[Reading]:
        """``marks`` applied to the stored ``markers`` of their keys (read by
        :meth:`_batch_reads`), in two statements however many: the rows
        written, then every mark's unread counts read."""
        seqs = fold(marks, markers, heads)
        used = {(m.name, m.room): self._used() for m in marks}  # the last use of each
        conn.execute(
            "INSERT INTO markers VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(used))
            + " ON CONFLICT (name, room) DO UPDATE SET seq = excluded.seq, at = excluded.at",
            [v for key, at in used.items() for v in (*key, markers[key], at)])
        counts = _unread(conn, [(m.name, m.room, seq) for m, seq in zip(marks, seqs)])
        return [Reading(m.room, seq, *count, heads.get(m.room, 0))
                for m, seq, count in zip(marks, seqs, counts)]

    @staticmethod
    def _reindex(conn: sqlite3.Connection, messages: list[Message]) -> None:
        """Search finds ``messages`` (edited or deleted) as they stand now."""
        for m in messages:
            (doc,) = conn.execute("SELECT doc FROM messages WHERE room = ? AND seq = ?",
                                  (m.room, m.seq)).fetchone()
            conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (doc,))
            if not m.deleted:
                conn.execute("INSERT INTO messages_fts (rowid, words, room, seq)"
                             " VALUES (?, ?, ?, ?)",
                             (doc, indexed(m.room, m.text), m.room, m.seq))

    @staticmethod
    def _reactors(conn: sqlite3.Connection, wanted: ReactorsWanted) -> Reactors:
        """The reactor rows the batch's reactions need (a batch of sends has none)."""
        first = {key: [name for (name,) in conn.execute(
                     "SELECT name FROM reactions WHERE room = ? AND seq = ? AND emoji = ?"
                     " ORDER BY at LIMIT ?", (*key, n))]
                 for key, n in wanted.first.items()}
        present = {r for r in wanted.senders if conn.execute(
            "SELECT 1 FROM reactions WHERE room = ? AND seq = ? AND emoji = ? AND name = ?",
            r).fetchone()}
        return Reactors(first, present)

    @staticmethod
    def _settings(conn: sqlite3.Connection, rooms: list[RoomName]
                  ) -> dict[RoomName, RoomSettings]:
        """The settings of those of ``rooms`` that are governed."""
        return {RoomName(room): RoomSettings.from_dict(json.loads(body))
                for room, body in conn.execute(
                    "SELECT room, body FROM room_settings WHERE room IN ("
                    + ", ".join("?" * len(rooms)) + ")", rooms)} if rooms else {}

    @staticmethod
    def _standings(conn: sqlite3.Connection, keys: list[StandingKey]
                   ) -> dict[StandingKey, Standing]:
        if not keys:
            return {}
        return {(RoomName(room), name): Standing(role, banned, muted, sent)
                for room, name, role, banned, muted, sent in conn.execute(
                    "WITH k(room, name) AS (VALUES " + ", ".join(["(?, ?)"] * len(keys)) + ")"
                    " SELECT s.room, s.name, s.role, s.banned, s.muted, s.sent FROM k"
                    " CROSS JOIN standings AS s ON s.room = k.room AND s.name = k.name",
                    [v for key in keys for v in key])}

    @staticmethod
    def _batch_reads(conn: sqlite3.Connection, rooms: list[RoomName], keyed: list[Request],
                     marked: list[MarkerKey]
                     ) -> tuple[dict[RoomName, RoomSettings], dict[RoomName, int],
                                dict[ClientKey, Entry], dict[MarkerKey, int], int]:
        """What every batch reads first, as one row of one statement: the
        settings of those of ``rooms`` that are governed (:meth:`_settings`),
        each room's last seq (:meth:`_heads`), the entries already stored
        under the batch's client ids (a retried send's), the read markers of
        ``marked`` that exist, and the file's data_version (:meth:`_seen`).
        One statement, not five: each gives up the GIL and must win it back
        from the loop."""
        if not rooms:
            return {}, {}, {}, {}, SqliteStore._version_now(conn)
        ctes = ["k(room) AS (VALUES " + ", ".join(["(?)"] * len(rooms)) + ")"]
        params: list[object] = list(rooms)
        stored = markers = "'[]'"
        if keyed:
            ctes.append("c(room, sender, client_id) AS (VALUES "
                        + ", ".join(["(?, ?, ?)"] * len(keyed)) + ")")
            params += [v for r in keyed for v in client_key(r)]
            stored = (f"(SELECT json_group_array(json_array({_QUALIFIED})) FROM c CROSS JOIN"
                      " messages AS m ON m.room = c.room AND m.sender = c.sender"
                      " AND m.client_id = c.client_id)")
        if marked:
            ctes.append("r(name, room) AS (VALUES " + ", ".join(["(?, ?)"] * len(marked)) + ")")
            params += [v for key in marked for v in key]
            markers = ("(SELECT json_group_array(json_array(r.name, r.room, m.seq)) FROM r"
                       " CROSS JOIN markers AS m ON m.name = r.name AND m.room = r.room)")
        (version, settings, heads, found, marks) = conn.execute(
            "WITH " + ", ".join(ctes) + " SELECT"
            " (SELECT data_version FROM pragma_data_version()),"
            " (SELECT json_group_object(s.room, json(s.body)) FROM room_settings AS s"
            "  WHERE s.room IN (SELECT room FROM k)),"
            f" (SELECT json_group_object(k.room, {_HEAD_OF_K}) FROM k), {stored}, {markers}",
            params).fetchone()
        entries = [entry(r) for r in json.loads(found)]
        return ({RoomName(room): RoomSettings.from_dict(body)
                 for room, body in json.loads(settings).items()},
                {RoomName(room): int(top) for room, top in json.loads(heads).items() if top},
                {(e.room, e.sender, e.client_id): e for e in entries},
                {(name, RoomName(room)): int(seq) for name, room, seq in json.loads(marks)},
                int(version))

    @staticmethod
    def _heads(conn: sqlite3.Connection, rooms: list[RoomName]) -> dict[RoomName, int]:
        """The last seq of each room, as one row (one step). Each room's MAX is a
        subquery of its own, which SQLite answers from the end of the primary
        key; ``MAX(seq) ... GROUP BY room`` read every row of the rooms, so a
        batch cost grew with their history (4 ms per batch at 20,000 messages
        a room)."""
        if not rooms:
            return {}
        (heads,) = conn.execute(
            "WITH k(room) AS (VALUES " + ", ".join(["(?)"] * len(rooms)) + ")"
            f" SELECT json_group_object(k.room, {_HEAD_OF_K}) FROM k", rooms).fetchone()
        return {RoomName(room): int(top) for room, top in json.loads(heads).items() if top}

    @staticmethod
    def _messages_at(conn: sqlite3.Connection, keys: list[Key]) -> dict[Key, Message]:
        """The messages (not changes) at ``keys``, as one row."""
        if not keys:
            return {}
        (rows,) = conn.execute(
            "WITH k(room, seq) AS (VALUES " + ", ".join(["(?, ?)"] * len(keys)) + ")"
            f" SELECT json_group_array(json_array({_QUALIFIED})) FROM k CROSS JOIN messages"
            " AS m ON m.room = k.room AND m.seq = k.seq AND m.kind = 'message'",
            [v for key in keys for v in key]).fetchone()
        found = [entry(r) for r in json.loads(rows)]
        return {(m.room, m.seq): m for m in found if isinstance(m, Message)}

    # -- reads ----------------------------------------------------------------

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        page_bounds(before, after, limit)
        page: Page = await self._read(self._read_page, room, before, after, limit)
        return page

    def _read_page(self, room: RoomName, before: int | None, after: int | None,
                   limit: int) -> Page:
        conn = self._read_conn
        assert conn is not None
        conn.execute("BEGIN")  # one snapshot for the page and the room's top
        try:
            found = conn.execute("SELECT upto FROM purged WHERE room = ?", (room,)).fetchone()
            purged = found[0] if found else 0
            if after is not None:  # the stream: messages and changes
                rows = conn.execute(
                    f"SELECT {COLUMNS} FROM messages WHERE room = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?", (room, max(after, purged), limit + 1)).fetchall()
            else:  # messages as they stand
                rows = conn.execute(
                    f"SELECT {COLUMNS} FROM messages WHERE room = ? AND kind = 'message'"
                    " AND seq < ? ORDER BY seq DESC LIMIT ?",
                    (room, before if before is not None else 2**62, limit + 1)).fetchall()
                rows.reverse()
            (top,) = conn.execute("SELECT max(COALESCE(MAX(seq), 0), ?) FROM messages"
                                  " WHERE room = ?", (purged, room)).fetchone()
        finally:
            conn.execute("COMMIT")
        more = len(rows) > limit
        if more:
            rows = rows[:limit] if after is not None else rows[1:]
        messages, changes = split([entry(r) for r in rows])
        return Page(messages, more, top, changes, purged)

    async def standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        found: tuple[RoomSettings | None, Standing] = await self._read(
            self._standing, room, name)
        return found

    def _standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        conn = self._read_conn
        assert conn is not None
        settings = self._settings(conn, [room]).get(room)
        if settings is None:
            return None, NO_STANDING
        return settings, self._standings(conn, [(room, name)]).get((room, name), NO_STANDING)

    async def rules(self, name: str, rooms: Sequence[RoomName]
                    ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        found: dict[RoomName, tuple[RoomSettings, Standing]] = await self._read(
            self._rules, name, list(rooms))
        return found

    def _rules(self, name: str, rooms: list[RoomName]
               ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        conn = self._read_conn
        assert conn is not None
        settings = self._settings(conn, sorted(set(rooms)))
        standings = self._standings(conn, [(room, name) for room in settings])
        return {room: (s, standings.get((room, name), NO_STANDING))
                for room, s in settings.items()}

    async def standings(self, room: RoomName, limit: int = 1000
                        ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        found: tuple[RoomSettings | None, dict[str, Standing]] = await self._read(
            self._people, room, limit)
        return found

    def _people(self, room: RoomName, limit: int
                ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        conn = self._read_conn
        assert conn is not None
        return self._settings(conn, [room]).get(room), {
            name: Standing(role, banned, muted, sent)
            for name, role, banned, muted, sent in conn.execute(
                "SELECT name, role, banned, muted, sent FROM standings WHERE room = ?"
                " ORDER BY name LIMIT ?", (room, limit))}

    async def actions(self, room: RoomName, *, before: int | None = None,
                      limit: int = 50) -> list[Action]:
        found: list[Action] = await self._read(self._actions, room, before, limit)
        return found

    async def governed(self) -> dict[RoomName, RoomSettings]:
        found: dict[RoomName, RoomSettings] = await self._read(self._governed)
        return found

    def _governed(self) -> dict[RoomName, RoomSettings]:
        assert self._read_conn is not None
        return {RoomName(room): RoomSettings.from_dict(json.loads(body)) for room, body
                in self._read_conn.execute("SELECT room, body FROM room_settings")}

    async def purge(self, room: RoomName, before: int, limit: int) -> int:
        removed: int = await self._written(self._purge, room, before, limit)
        return removed

    def _purge(self, room: RoomName, before: int, limit: int) -> int:
        conn = self._write_conn
        assert conn is not None
        with self._writing(conn):
            self._seen(conn, self._version_now(conn))
            self._index_waiting(conn)  # (what it removes from the index must be there)
            found = conn.execute("SELECT upto FROM purged WHERE room = ?", (room,)).fetchone()
            upto = cut = found[0] if found else 0
            rows = conn.execute("SELECT seq, ts, doc FROM messages WHERE room = ? AND seq > ?"
                                " ORDER BY seq LIMIT ?", (room, upto, limit)).fetchall()
            for seq, ts, _ in rows:
                if seq != cut + 1 or ts >= before:
                    break
                cut = seq
            if cut > upto:
                docs = [(doc,) for seq, _, doc in rows if seq <= cut and doc is not None]
                conn.executemany("DELETE FROM messages_fts WHERE rowid = ?", docs)
                span = (room, upto, cut)
                conn.execute("DELETE FROM reactions WHERE room = ? AND seq > ? AND seq <= ?",
                             span)
                conn.execute("DELETE FROM mentions WHERE room = ? AND seq > ? AND seq <= ?",
                             span)
                conn.execute("DELETE FROM messages WHERE room = ? AND seq > ? AND seq <= ?"
                             f" AND kind NOT IN ({_ACTION_KINDS})", span)
                conn.execute("INSERT OR REPLACE INTO purged VALUES (?, ?)", (room, cut))
        if cut > upto:
            # (new files: their freed pages back; run to its end by sqlite3_exec:
            # the statement frees one page per step, and execute() steps once)
            conn.executescript("PRAGMA incremental_vacuum;")
        return cut - upto

    def _actions(self, room: RoomName, before: int | None, limit: int) -> list[Action]:
        assert self._read_conn is not None
        rows = self._read_conn.execute(
            f"SELECT {COLUMNS} FROM messages WHERE room = ? AND kind IN ({_ACTION_KINDS})"
            " AND seq < ? ORDER BY seq DESC LIMIT ?",
            (room, before if before is not None else 2**62, limit)).fetchall()
        return [a for a in map(entry, rows) if isinstance(a, Action)]

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20,
                     timeout: float = SEARCH_TIMEOUT) -> SearchPage:
        before = _doc_cursor(cursor)
        if not rooms or not terms:
            return SearchPage([], [], False)
        if self._unindexed:  # (an acknowledged message is found)
            await self._written(self._index_now)
        found: SearchPage = await self._searches.run(
            "search", lambda conn: _search(conn, list(rooms), terms, before, limit), timeout)
        return found

    async def readings(self, name: str, rooms: Sequence[RoomName] | None = None
                       ) -> list[Reading]:
        readings: list[Reading] = await self._read(self._readings, name,
                                                   None if rooms is None else list(rooms))
        return readings

    def _readings(self, name: str, rooms: list[RoomName] | None) -> list[Reading]:
        conn = self._read_conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            if rooms is None:
                found = conn.execute("SELECT room, seq FROM markers WHERE name = ?"
                                     " ORDER BY at DESC LIMIT ?",
                                     (name, YOUR_ROOMS_LISTED)).fetchall()
            else:
                found = conn.execute(
                    f"SELECT room, seq FROM markers WHERE name = ? AND room IN"
                    f" ({', '.join('?' * len(rooms))})", (name, *rooms)).fetchall()
            heads = self._heads(conn, sorted({room for room, _ in found}))
            counts = _unread(conn, [(name, room, seq) for room, seq in found])
            return [Reading(RoomName(room), seq, *count, heads.get(RoomName(room), 0))
                    for (room, seq), count in zip(found, counts)]
        finally:
            conn.execute("COMMIT")

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = await self._read(self._receipts, room)
        return found

    def _receipts(self, room: RoomName) -> list[tuple[str, int]]:
        assert self._read_conn is not None
        return [(name, seq) for name, seq in self._read_conn.execute(
            "SELECT name, seq FROM markers WHERE room = ? ORDER BY seq DESC, at DESC LIMIT ?",
            (room, RECEIPTS_LISTED))]

    async def open_direct(self, room: RoomName, names: Sequence[str]) -> None:
        await self._written(self._open_direct, room, list(names))

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        found: int | None = await self._read(self._cursor, owner, room)
        return found

    def _cursor(self, owner: str, room: RoomName) -> int | None:
        assert self._read_conn is not None
        row = self._read_conn.execute("SELECT seq FROM cursors WHERE owner = ? AND room = ?",
                                      (owner, room)).fetchone()
        return None if row is None else int(row[0])

    async def advance(self, owner: str, room: RoomName, seq: int) -> int:
        now: int = await self._written(self._advance, owner, room, seq)
        return now

    def _advance(self, owner: str, room: RoomName, seq: int) -> int:
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            head = self._heads(conn, [room]).get(room, 0)
            (now,) = conn.execute(
                "INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT (owner, room)"
                " DO UPDATE SET seq = max(seq, excluded.seq) RETURNING seq",
                (owner, room, min(seq, head))).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(now)

    async def heads(self) -> dict[RoomName, int]:
        found: dict[RoomName, int] = await self._read(self._all_heads)
        return found

    def _all_heads(self) -> dict[RoomName, int]:
        """Each room's latest seq, the rooms found one index step at a time (a
        skip scan: the cost grows with the rooms, not with their history)."""
        assert self._read_conn is not None
        heads = {RoomName(room): int(head) for room, head in self._read_conn.execute(
            "WITH RECURSIVE r(room) AS (SELECT MIN(room) FROM messages UNION ALL"
            " SELECT (SELECT MIN(room) FROM messages WHERE room > r.room) FROM r"
            " WHERE r.room IS NOT NULL)"
            " SELECT room, (SELECT MAX(seq) FROM messages m WHERE m.room = r.room)"
            " FROM r WHERE room IS NOT NULL")}
        for room, upto in self._read_conn.execute("SELECT room, upto FROM purged"):
            heads[RoomName(room)] = max(heads.get(RoomName(room), 0), int(upto))
        return heads

    async def cursors(self, owner: str) -> dict[RoomName, int]:
        found: dict[RoomName, int] = await self._read(self._cursors, owner)
        return found

    def _cursors(self, owner: str) -> dict[RoomName, int]:
        assert self._read_conn is not None
        return {RoomName(room): int(seq) for room, seq in self._read_conn.execute(
            "SELECT room, seq FROM cursors WHERE owner = ?", (owner,))}

    async def set_cursors(self, owner: str, positions: Mapping[RoomName, int]) -> None:
        await self._written(self._set_cursors, owner, dict(positions))

    def _set_cursors(self, owner: str, positions: dict[RoomName, int]) -> None:
        conn = self._write_conn
        assert conn is not None
        rooms = sorted(positions)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for at in range(0, len(rooms), _ROWS_PER_INSERT):
                chunk = rooms[at:at + _ROWS_PER_INSERT]
                heads = self._heads(conn, chunk)
                conn.executemany(
                    "INSERT INTO cursors VALUES (?, ?, ?) ON CONFLICT (owner, room)"
                    " DO UPDATE SET seq = max(seq, excluded.seq)",
                    [(owner, room, min(positions[room], heads.get(room, 0)))
                     for room in chunk])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def drop_cursors(self, owner: str) -> None:
        await self._written(self._execute, "DELETE FROM cursors WHERE owner = ?", (owner,))

    async def put_record(self, kind: str, key: str, body: dict[str, Any]) -> None:
        await self._written(self._execute, "INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                            (kind, key, json.dumps(body)))

    async def records(self, kind: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = await self._read(self._records, kind)
        return found

    async def record(self, kind: str, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._read(self._record, kind, key)
        return found

    def _record(self, kind: str, key: str) -> dict[str, Any] | None:
        assert self._read_conn is not None
        row = self._read_conn.execute("SELECT body FROM records WHERE kind = ? AND key = ?",
                                      (kind, key)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def _records(self, kind: str) -> dict[str, dict[str, Any]]:
        assert self._read_conn is not None
        return {key: json.loads(body) for key, body in self._read_conn.execute(
            "SELECT key, body FROM records WHERE kind = ?", (kind,))}

    async def drop_record(self, kind: str, key: str) -> bool:
        dropped: int = await self._written(self._execute, "DELETE FROM records WHERE kind = ?"
                                           " AND key = ?", (kind, key))
        return dropped > 0

    async def drop_records(self, kind: str) -> int:
        dropped: int = await self._written(self._execute, "DELETE FROM records WHERE kind = ?",
                                           (kind,))
        return dropped

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        """One statement on the writer, in a transaction of its own; rows changed."""
        assert self._write_conn is not None
        return int(self._write_conn.execute(sql, args).rowcount)

    async def _written(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the writer thread; a failure is ``unavailable``."""
        return await self._guarded(self._writer_thread, "write", fn, *args)

    def _open_direct(self, room: RoomName, names: list[str]) -> None:
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO directs VALUES (?, ?)",
                             [(room, name) for name in names])
            head = self._heads(conn, [room]).get(room, 0)
            conn.executemany("INSERT INTO markers VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             [(name, room, head, self._used()) for name in names])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def participants(self, rooms: Sequence[RoomName]) -> dict[RoomName, frozenset[str]]:
        found: dict[RoomName, frozenset[str]] = await self._read(self._participants,
                                                                 list(rooms))
        return found

    def _participants(self, rooms: list[RoomName]) -> dict[RoomName, frozenset[str]]:
        assert self._read_conn is not None
        people: dict[RoomName, set[str]] = {}
        for room, name in self._read_conn.execute(
                f"SELECT room, name FROM directs WHERE room IN ({', '.join('?' * len(rooms))})",
                rooms):
            people.setdefault(RoomName(room), set()).add(name)
        return {room: frozenset(names) for room, names in people.items()}

    async def _read(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the reader thread, with the other reads of this turn
        (:mod:`app.store.turn_reads`); a failure is ``unavailable``."""
        try:
            return await self._reads.call(fn, *args)
        except sqlite3.Error as exc:
            raise _unavailable("read", exc) from exc

    async def _guarded(self, thread: ThreadPoolExecutor, what: str, fn: Any, *args: Any
                       ) -> Any:
        try:
            return await self._on(thread, fn, *args)
        except sqlite3.Error as exc:
            raise _unavailable(what, exc) from exc

    async def ping(self) -> None:
        if self._appends.closing:
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is closing")
        try:
            await self._on(self._reader_thread, self._ping)
        except sqlite3.Error as exc:
            raise ChatError(ErrorCode.UNAVAILABLE, f"sqlite: {exc}") from exc

    def _ping(self) -> None:
        assert self._read_conn is not None
        self._read_conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall()

    async def close(self) -> None:
        if self._appends.closing:
            return
        await self._appends.close()  # writes what was queued
        if self._write_conn is not None:
            await self._written(self._index_now)  # (or the next start does it)
        await self._searches.close()
        for thread, conn in ((self._writer_thread, self._write_conn),
                             (self._reader_thread, self._read_conn)):
            if conn is not None:
                await self._on(thread, conn.close)
            thread.shutdown(wait=True)
        log.info("sqlite store closed")

    def abort(self) -> None:
        self._searches.abort()
        for conn in (self._write_conn, self._read_conn):
            if conn is not None:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
                    conn.interrupt()  # safe from any thread: the statement running fails


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    store = SqliteStore(path_from_url(url))
    await store.start()
    return store


def _unread(conn: sqlite3.Connection, keys: list[tuple[str, str, int]]) -> list[tuple[int, int]]:
    """For each (name, room, after) of ``keys``: the messages after ``after``
    in ``room`` that others sent and are not deleted, and the mentions of
    ``name`` among them, each up to UNREAD_COUNTED. One statement however
    many keys (each statement gives up the GIL and must win it back)."""
    if not keys:
        return []
    (rows,) = conn.execute(
        "WITH k(name, room, after) AS (VALUES " + ", ".join(["(?, ?, ?)"] * len(keys)) + ")"
        " SELECT json_group_array(json_array(k.name, k.room, k.after,"
        " (SELECT count(*) FROM (SELECT 1 FROM messages AS m WHERE m.room = k.room"
        "  AND m.kind = 'message' AND m.seq > k.after AND m.sender != k.name"
        "  AND NOT m.deleted LIMIT ?)),"
        " (SELECT count(*) FROM (SELECT 1 FROM mentions AS n WHERE n.name = k.name"
        "  AND n.room = k.room AND n.seq > k.after LIMIT ?)))) FROM k",
        [*(v for key in keys for v in key), UNREAD_COUNTED, UNREAD_COUNTED]).fetchone()
    counted = {(name, room, after): (unread, mentions)
               for name, room, after, unread, mentions in json.loads(rows)}
    return [counted[key] for key in keys]


def _search(conn: sqlite3.Connection, rooms: list[RoomName], terms: list[str], before: int,
            limit: int) -> SearchPage:
    """A page of search results (on a search lane's connection)."""
    rows = conn.execute(
        f"SELECT {_QUALIFIED}, f.rowid FROM messages_fts AS f"
        " JOIN messages AS m ON m.room = f.room AND m.seq = f.seq"
        f" WHERE messages_fts MATCH ? AND f.room IN ({', '.join('?' * len(rooms))})"
        " AND f.rowid < ? ORDER BY f.rowid DESC LIMIT ?",
        [_match(rooms, terms), *rooms, before, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    messages = [m for m in (entry(r[:-1]) for r in rows) if isinstance(m, Message)]
    return SearchPage(messages, [f"d{r[-1]}" for r in rows], more)


def _doc_cursor(cursor: str | None) -> int:
    """The doc number a cursor from :meth:`SqliteStore.search` stands for."""
    if cursor is None:
        return 2**62
    if cursor[:1] == "d" and cursor[1:].isdigit() and len(cursor) < 20:
        return int(cursor[1:])
    raise ChatError(ErrorCode.BAD_REQUEST, "cursor is not one this server gave")


def _match(rooms: list[RoomName], terms: list[str]) -> str:
    """The FTS5 query for messages of ``rooms`` with every term: in each room,
    a prefix query per term (tokens are letters and digits: nothing to quote)."""
    return " OR ".join("(" + " AND ".join(f'"{token}"*' for token in query_tokens(room, terms))
                       + ")" for room in rooms)
