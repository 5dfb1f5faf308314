"""Writes coalesced per turn of the event loop.

Each session written to during a turn is flushed once at its end, so the
frames a busy turn writes to one connection (a batch of stored messages,
their acks, a room's traffic) cost one system call rather than one each:
under load the loop spends its time in Python, not in the kernel. Order is
kept: every frame of a session goes through its own buffer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    sid: str

    def flush(self) -> None: ...

    def abort(self) -> None: ...


class Outbox:
    def __init__(self) -> None:
        self._dirty: list[Flushable] = []

    def add(self, writer: Flushable) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.append(writer)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for writer in dirty:
            try:
                writer.flush()
            except Exception:  # one broken connection must not stall the others
                log.exception("eio_sid=%s: write failed; dropping the connection", writer.sid)
                writer.abort()
