"""What only the SQLite store has to get right: work that does not grow with history."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import RoomName, now_ms
from app.store import sqlite
from app.store.sqlite import SqliteStore

HISTORY = 20_000  # messages already in the long room


def fill(path: Path, room: str, messages: int) -> None:
    """``messages`` plain messages in ``room``, written straight to the file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            "INSERT INTO messages (room, seq, sender, text, ts) VALUES (?, ?, 'old', 'hi', 1)",
            [(room, seq) for seq in range(1, messages + 1)])
        conn.commit()


@contextlib.contextmanager
def counted(conn: sqlite3.Connection | None) -> Iterator[list[int]]:
    """The SQLite VM instructions ``conn`` runs meanwhile, in hundreds: a count
    of work that is the same on any machine (unlike a time)."""
    assert conn is not None
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    conn.set_progress_handler(count, 100)
    try:
        yield steps
    finally:
        conn.set_progress_handler(None, 0)


async def test_sends_and_room_listings_cost_the_same_however_long_the_history(
        tmp_path: Path) -> None:
    """Appending to a room of 20,000 messages, and listing where a person
    stands in it (unread counts, as a join's ack and the rooms list do), run
    about as many SQLite instructions as in a room of 10: a send's latency,
    a join's and the store's CPU do not grow with a room's history."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    try:
        fill(path, "long", HISTORY)
        fill(path, "short", 10)
        sends, listings = {}, {}
        for room in ("short", "long"):
            with counted(store._write_conn) as steps:
                message, created = await store.append(RoomName(room), "alice", "new", "c1")
            assert created and message.seq == {"short": 11, "long": HISTORY + 1}[room]
            sends[room] = steps[0]
            await store.mark("bob", RoomName(room), message.seq - 1)
            with counted(store._read_conn) as steps:
                (reading,) = await store.readings("bob", [RoomName(room)])
            assert (reading.unread, reading.latest) == (1, message.seq)
            listings[room] = steps[0]
    finally:
        await store.close()
    assert sends["long"] < 2 * sends["short"] + 10, sends
    assert listings["long"] < 2 * listings["short"] + 10, listings


def pages(path: Path) -> int:
    """The pages the file holds (its size, in pages)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


async def test_a_purge_gives_the_space_back_to_the_file_system(tmp_path: Path) -> None:
    """A new file is made with incremental auto-vacuum: what retention removes
    leaves the file, not only its free list."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    try:
        text = "a long enough message to take some room in the file " * 20
        for _ in range(10):
            await asyncio.gather(*(store.append(RoomName("big"), "ann", text, None)
                                   for _ in range(200)))
        full = pages(path)
        while await store.purge(RoomName("big"), now_ms() + 1, 500):
            pass
        assert (await store.page(RoomName("big"))).messages == []
        assert pages(path) < full / 4, (pages(path), full)
    finally:
        await store.close()


async def test_a_failed_batch_leaves_the_search_index_numbered_right(tmp_path: Path) -> None:
    """The writer keeps the search index's last document number in memory
    rather than asking FTS5 for it each batch: a batch that fails after its
    messages were numbered (here a trigger refuses its mention row, written
    after them) is rolled back whole, and what follows is numbered, stored and
    found as if it had never been."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    try:
        lobby = RoomName("lobby")
        await store.append(lobby, "ann", "needle one", None)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON mentions WHEN NEW.name ="
                         " 'mallory' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(ChatError) as failed:
            await store.append(lobby, "ann", "needle two", None, mentions=["mallory"])
        assert failed.value.code is ErrorCode.UNAVAILABLE
        await store.append(lobby, "ann", "needle three", None)
        await store.append(lobby, "ann", "needle four", None, mentions=["bob"])
        found = await store.search([lobby], ["needle"])
        assert [m.text for m in found.messages] == ["needle four", "needle three", "needle one"]
        assert [m.seq for m in (await store.page(lobby)).messages] == [1, 2, 3]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            docs = conn.execute("SELECT doc FROM messages ORDER BY seq").fetchall()
            indexed = conn.execute("SELECT rowid FROM messages_fts ORDER BY rowid").fetchall()
        assert len(set(docs)) == 3 and sorted(docs) == indexed
    finally:
        await store.close()


def index_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM messages_fts").fetchone()
    return int(count)


async def test_the_search_index_takes_messages_in_groups_and_finds_each_at_once(
        tmp_path: Path) -> None:
    """An FTS5 table writes a segment and two records with every transaction
    that touches it: the writer holds new messages back from it and writes
    them with the batch that makes _INDEX_AFTER of them. A search first
    writes what waits, so an acknowledged message is always found."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    try:
        lobby = RoomName("lobby")
        for i in range(sqlite._INDEX_AFTER - 1):
            await store.append(lobby, "ann", f"needle {i}", None)
        assert index_rows(path) == 0  # held back
        await store.append(lobby, "ann", f"needle {sqlite._INDEX_AFTER - 1}", None)
        assert index_rows(path) == sqlite._INDEX_AFTER  # the batch that made them enough
        await store.append(lobby, "ann", "needle last", None)
        assert index_rows(path) == sqlite._INDEX_AFTER
        found = await store.search([lobby], ["needle"], limit=2)
        assert [m.text for m in found.messages] == [
            "needle last", f"needle {sqlite._INDEX_AFTER - 1}"]
        assert index_rows(path) == sqlite._INDEX_AFTER + 1
    finally:
        await store.close()


CRASHING_WRITER = """
import asyncio, sys
from pathlib import Path
from app.core.models import RoomName
from app.store.sqlite import SqliteStore

async def main():
    store = SqliteStore(Path(sys.argv[1]))
    await store.start()
    lobby = RoomName("lobby")
    for text in ["needle one", "needle two", "needle gone", "needle three"]:
        await store.append(lobby, "ann", text, None)
    await store.alter(lobby, "ann", "edit", 2, "needle second", None)
    await store.alter(lobby, "ann", "delete", 3, None, None)
    await store.append(lobby, "ann", "needle four", None)
    print("acknowledged", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_messages_held_back_from_the_search_index_are_found_after_a_crash(
        tmp_path: Path) -> None:
    """A writer killed (SIGKILL) with acknowledged messages still held back
    from the index: the next start indexes them, deleted ones excepted, as
    they stand."""
    path = tmp_path / "chat.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, str(path), stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[3])
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"acknowledged\n"
        held = index_rows(path)
    finally:
        child.kill()
        await child.wait()
    # the edit wrote the four before it (the delete took one out); the last waited
    assert held == 3
    store = SqliteStore(path)
    await store.start()
    try:
        found = await store.search([RoomName("lobby")], ["needle"])
        assert [m.text for m in found.messages] == [
            "needle four", "needle three", "needle second", "needle one"]
        assert index_rows(path) == 4
    finally:
        await store.close()


async def test_two_processes_writing_one_file_number_and_index_every_message_once(
        tmp_path: Path) -> None:
    """Several processes may write one SQLite file in turn. A writer that
    holds messages back from the index, while another starts (and indexes
    them, as after a crash), edits one, deletes another and sends its own,
    numbers its next message past the other's and writes into the index
    what it held as it now stands."""
    path = tmp_path / "chat.db"
    first, second = SqliteStore(path), SqliteStore(path)
    await first.start()
    try:
        lobby = RoomName("lobby")
        for text in ["needle one", "needle two", "needle three"]:
            await first.append(lobby, "ann", text, None)
        await second.start()
        try:
            await second.alter(lobby, "ann", "edit", 1, "needle first", None)
            await second.alter(lobby, "ann", "delete", 2, None, None)
            await second.append(lobby, "bob", "needle from the second", None)
        finally:
            await second.close()
        await first.append(lobby, "ann", "needle four", None)
        found = await first.search([lobby], ["needle"])
        assert [m.text for m in found.messages] == [
            "needle four", "needle from the second", "needle three", "needle first"]
    finally:
        await first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        docs = [d for (d,) in conn.execute(
            "SELECT doc FROM messages WHERE kind = 'message' ORDER BY seq")]
        rows = conn.execute("SELECT rowid, words FROM messages_fts ORDER BY rowid").fetchall()
    assert len(set(docs)) == 5
    assert [doc for doc, _ in rows] == sorted(set(docs) - {docs[1]})


async def test_a_version_11_file_gains_the_index_that_finds_held_back_messages(
        tmp_path: Path) -> None:
    """A file as version 11 left it (every message in the search index, no
    index on ``doc``) opens as version 12, with it (so a Roomcast that knows
    only version 11, and would not look for held-back messages, refuses the
    file), and what it held is found."""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    lobby = RoomName("lobby")
    await store.append(lobby, "ann", "needle old", None)
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP INDEX messages_doc")
        conn.execute("PRAGMA user_version = 11")
        conn.commit()
    store = SqliteStore(path)
    await store.start()
    try:
        await store.append(lobby, "ann", "needle new", None)
        found = await store.search([lobby], ["needle"])
        assert [m.text for m in found.messages] == ["needle new", "needle old"]
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (12,)
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages_doc'"
                            ).fetchone() == (1,)
