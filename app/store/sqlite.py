"""SQLite message store: the zero-set-up default for a single node.

Design: the stdlib ``sqlite3`` driver runs on two dedicated threads, one
writer and one reader, so disk I/O never blocks the event loop. Appends go
through :class:`~app.store.batching.AppendQueue`: everything queued so far is
written in one transaction on the writer thread (group commit), in call
order, which also makes seq assignment atomic. (aiosqlite would cost a
thread hop per statement; here a whole batch is one hop.)

Durability: WAL journal with ``synchronous=FULL``: an acknowledged message
survives a process crash and a power loss.

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
from typing import Any
from urllib.parse import urlsplit

from ..chat.errors import ChatError, ErrorCode
from ..chat.models import Message, Page, RoomName, now_ms
from . import MessageStore, page_bounds
from . import check_storable
from .batching import Append, AppendQueue, Result

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room      TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    sender    TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    client_id TEXT,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_client_id
    ON messages (room, sender, client_id) WHERE client_id IS NOT NULL;
"""
_COLUMNS = "room, seq, sender, text, ts, client_id"
_ROWS_PER_INSERT = 1000  # 6 parameters a row; SQLite allows 32,766 per statement


def path_from_url(url: str) -> Path:
    """``sqlite:///data/x.db`` is relative to the working directory;
    ``sqlite:////var/lib/x.db`` is absolute."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"bad SQLite URL {url!r}: use sqlite:///relative/path.db "
                         "or sqlite:////absolute/path.db")
    return Path(parts.path[1:])


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _message(row: tuple[Any, ...]) -> Message:
    return Message(RoomName(row[0]), row[1], row[2], row[3], row[4], row[5])


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._appends = AppendQueue(self._write, lambda exc: isinstance(exc, sqlite3.Error),
                                    "sqlite")

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = await self._on(self._writer_thread, self._open_writer)
        self._read_conn = await self._on(self._reader_thread, _connect, self._path)
        self._appends.start()
        log.info("sqlite store at %s", self._path.resolve())

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self._path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self._path} has schema version {version}; this Roomcast "
                               f"knows up to {SCHEMA_VERSION}")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn

    async def _on(self, thread: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)

    # -- writes ---------------------------------------------------------------

    async def append(self, room: RoomName, sender: str, text: str,
                     client_id: str | None) -> tuple[Message, bool]:
        check_storable(sender, text, client_id)
        return await self._appends.append(Append(room, sender, text, client_id))

    async def _write(self, batch: list[Append]) -> list[Result]:
        results: list[Result] = await self._on(self._writer_thread, self._write_batch, batch)
        return results

    def _write_batch(self, batch: list[Append]) -> list[Result]:
        """One transaction in a handful of statements, however long the batch:
        the sqlite3 module releases the GIL around every step of a statement
        and must win it back from the busy event loop after each (up to the
        5 ms switch interval), so a statement per message (or a row per step)
        made a batch of 100 take hundreds of milliseconds under load."""
        conn = self._write_conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            heads = self._heads(conn, sorted({a.room for a in batch}))
            stored = self._stored(conn, [a for a in batch if a.client_id is not None])
            results: list[Result] = []
            new: list[Message] = []
            ts = now_ms()
            for a in batch:
                key = (a.room, a.sender, a.client_id)
                if a.client_id is not None and key in stored:
                    results.append((stored[key], False))
                    continue
                heads[a.room] = seq = heads.get(a.room, 0) + 1
                message = Message(a.room, seq, a.sender, a.text, ts, a.client_id)
                if a.client_id is not None:
                    stored[key] = message  # a retry within the same batch
                new.append(message)
                results.append((message, True))
            for start in range(0, len(new), _ROWS_PER_INSERT):
                rows = new[start:start + _ROWS_PER_INSERT]
                conn.execute(f"INSERT INTO messages ({_COLUMNS}) VALUES "
                             + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(rows)),
                             [v for m in rows
                              for v in (m.room, m.seq, m.sender, m.text, m.ts, m.client_id)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _heads(conn: sqlite3.Connection, rooms: list[RoomName]) -> dict[RoomName, int]:
        """The last seq of each room, as one row (one step)."""
        (heads,) = conn.execute(
            "SELECT json_group_object(room, top) FROM (SELECT room, MAX(seq) AS top"
            f" FROM messages WHERE room IN ({', '.join('?' * len(rooms))}) GROUP BY room)",
            rooms).fetchone()
        return {RoomName(room): int(top) for room, top in json.loads(heads).items()}

    @staticmethod
    def _stored(conn: sqlite3.Connection,
                keyed: list[Append]) -> dict[tuple[str, str, str | None], Message]:
        """Messages already stored under the batch's client ids, as one row."""
        if not keyed:
            return {}
        (rows,) = conn.execute(
            "WITH k(room, sender, client_id) AS (VALUES "
            + ", ".join(["(?, ?, ?)"] * len(keyed)) + ")"
            " SELECT json_group_array(json_array(m.room, m.seq, m.sender, m.text, m.ts,"
            " m.client_id)) FROM k CROSS JOIN messages AS m ON m.room = k.room"
            " AND m.sender = k.sender AND m.client_id = k.client_id",
            [v for a in keyed for v in (a.room, a.sender, a.client_id)]).fetchone()
        return {(row[0], row[2], row[5]): _message(tuple(row)) for row in json.loads(rows)}

    # -- reads ----------------------------------------------------------------

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        page_bounds(before, after, limit)
        try:
            page: Page = await self._on(self._reader_thread, self._read_page,
                                        room, before, after, limit)
        except sqlite3.Error as exc:
            log.warning("sqlite read failed: %s", exc)
            raise ChatError(ErrorCode.UNAVAILABLE, "the message store is unavailable") from exc
        return page

    def _read_page(self, room: RoomName, before: int | None, after: int | None,
                   limit: int) -> Page:
        conn = self._read_conn
        assert conn is not None
        conn.execute("BEGIN")  # one snapshot for the page and the room's top
        try:
            if after is not None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq > ?"
                    " ORDER BY seq LIMIT ?", (room, after, limit + 1)).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq < ?"
                    " ORDER BY seq DESC LIMIT ?",
                    (room, before if before is not None else 2**62, limit + 1)).fetchall()
                rows.reverse()
            (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM messages"
                                  " WHERE room = ?", (room,)).fetchone()
        finally:
            conn.execute("COMMIT")
        more = len(rows) > limit
        if more:
            rows = rows[:limit] if after is not None else rows[1:]
        return Page([_message(r) for r in rows], more, top)

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
        for thread, conn in ((self._writer_thread, self._write_conn),
                             (self._reader_thread, self._read_conn)):
            if conn is not None:
                await self._on(thread, conn.close)
            thread.shutdown(wait=True)
        log.info("sqlite store closed")

    def status(self) -> str:
        return self._appends.status()

    def abort(self) -> None:
        for conn in (self._write_conn, self._read_conn):
            if conn is not None:
                with contextlib.suppress(sqlite3.ProgrammingError):  # closed already
                    conn.interrupt()  # safe from any thread: the statement running fails


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    store = SqliteStore(path_from_url(url))
    await store.start()
    return store
