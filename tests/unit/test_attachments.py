"""The attachments service's own rules, with plain calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from app.chat.attachments import UPLOAD_BURST, Attachments, Grant
from app.core.models import RoomName
from app.files.local import LocalFiles
from app.settings import Settings
from app.store.memory import MemoryStore


async def body(total: int, size: int) -> AsyncIterator[bytes]:
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


async def test_uploads_are_read_no_faster_than_the_nodes_rate(tmp_path: Path) -> None:
    """All uploads together are paced to --max-upload-rate after a burst: the
    reader pauses (the client's TCP window closes) for as long as the rate says."""
    now = [0.0]
    attachments = Attachments(Settings(upload_spool=str(tmp_path), max_upload_rate=1_000_000),
                              MemoryStore(), LocalFiles(tmp_path / "files"),
                              connections=None,  # type: ignore[arg-type]  # (not used here)
                              monotonic=lambda: now[0])
    paused: list[float] = []

    async def pause(seconds: float) -> None:  # the clock moves as a pause would
        paused.append(seconds)
        now[0] += seconds
    attachments.pause = pause
    total = UPLOAD_BURST + 4_000_000
    grant = Grant("a" * 22, RoomName("r"), "alice", "f", total, 10**10)
    (tmp_path / grant.id).touch()
    assert await attachments._append(grant, 0, body(total, 250_000)) == total
    assert abs(sum(paused) - 4.0) < 0.01  # the 4 MB past the burst, at 1 MB/s
    assert max(paused) <= 0.26  # a chunk's worth at a time, never all at once
