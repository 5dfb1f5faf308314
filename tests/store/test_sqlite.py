"""What only the SQLite store has to get right: the work of a write."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from app.chat.models import RoomName
from app.store.sqlite import SqliteStore

HISTORY = 20_000  # messages already in the long room


def fill(path: Path, room: str, messages: int) -> None:
    """``messages`` plain messages in ``room``, written straight to the file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executemany(
            "INSERT INTO messages (room, seq, sender, text, ts) VALUES (?, ?, 'old', 'hi', 1)",
            [(room, seq) for seq in range(1, messages + 1)])
        conn.commit()


async def test_a_send_costs_the_same_however_long_the_rooms_history(tmp_path: Path) -> None:
    """Appending to a room of 20,000 messages runs about as many SQLite
    instructions as appending to a room of 10: a send's latency and the
    store's CPU do not grow with a room's history. (Counted by SQLite's
    progress handler, not timed: the count is the same on any machine.)"""
    path = tmp_path / "chat.db"
    store = SqliteStore(path)
    await store.start()
    try:
        fill(path, "long", HISTORY)
        fill(path, "short", 10)
        conn = store._write_conn
        assert conn is not None
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # go on

        conn.set_progress_handler(count, 100)  # called every 100 VM instructions
        work = {}
        for room in ("short", "long"):
            steps[0] = 0
            message, created = await store.append(RoomName(room), "alice", "new", "c1")
            assert created and message.seq == {"short": 11, "long": HISTORY + 1}[room]
            work[room] = steps[0]
        conn.set_progress_handler(None, 0)
    finally:
        await store.close()
    assert work["long"] < 2 * work["short"] + 10, work
