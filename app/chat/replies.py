"""Replies that carry stored messages, held to a size and to each connection's budget.

A ``join``, ``history`` or ``search`` reply may carry up to
``max_reply_bytes`` of messages (as encoded on the wire), and what a
connection receives in such replies is metered by its ``reply_bytes``
bucket. The most a reply may cost is taken *before* the store is read
(pipelined requests cannot all pass before the first is charged); what the
reply did not use is given back once it is cut (:func:`app.chat.paging.fit`).

A page the joins of one turn share (:mod:`app.store.shared`: a reconnect
storm's hundreds of joins of a room) is put in its wire form, and measured,
once for them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any

from ..core.models import Entry, Page
from ..metrics import Metrics
from ..settings import Settings
from .connections import Connection, Connections
from .paging import fit, wire_size

Ack = dict[str, Any]


class Replies:
    def __init__(self, settings: Settings, metrics: Metrics, connections: Connections) -> None:
        self.budget = settings.max_reply_bytes
        self.metrics = metrics
        self.connections = connections
        self.wire_size = wire_size(settings.serializer)
        # the pages read this turn, by identity: each with its entries in seq
        # order, in their wire form, and their sizes (shared: not to be changed)
        self._streams: dict[int, tuple[Page, list[tuple[dict[str, Any], int]]]] = {}

    def reserve(self, conn: Connection) -> None:
        """Take the most a reply may cost (``rate_limited`` if the budget lacks it)."""
        self.connections.limit(conn, "reply_bytes", "messages read", self.budget)

    @contextmanager
    def cutting(self, conn: Connection) -> Iterator[list[int]]:
        """Yield a one-item list for the bytes the reply used; on leaving, what
        was reserved and not used goes back to ``conn``'s budget."""
        used = [0]
        try:
            yield used
        finally:
            self.connections.bucket(conn, "reply_bytes").charge(used[0] - self.budget)

    def fit(self, conn: Connection, entries: list[dict[str, Any]], used: list[int], *,
            keep_newest: bool) -> tuple[list[dict[str, Any]], bool]:
        """``entries`` cut to the reply's size; whether some were cut."""
        kept, used[0], cut = fit([(entry, self.wire_size(entry)) for entry in entries],
                                 self.budget, keep_newest=keep_newest)
        return kept, cut

    async def read(self, conn: Connection, page: Awaitable[Page], *, keep_newest: bool
                   ) -> tuple[Page, Ack, bool]:
        """Await a reserved page; return it, its ``messages`` and, reading on,
        ``changes`` (in seq order) cut together to ``max_reply_bytes``, and
        whether more lie beyond them."""
        with self.cutting(conn) as used:
            with self.metrics.store_seconds.labels("page").time():
                read = await page
            kept, used[0], cut = fit(self._stream(read), self.budget, keep_newest=keep_newest)
        entries: Ack = {"messages": [e for e in kept if "kind" not in e]}
        if not keep_newest:  # reading on: the stream, changes too
            entries["changes"] = [e for e in kept if "kind" in e]
        return read, entries, read.more or cut

    def _stream(self, page: Page) -> list[tuple[dict[str, Any], int]]:
        """``page``'s messages and changes in seq order, each in its wire form
        with its size there: worked out once a turn for a page read once."""
        held = self._streams.get(id(page))
        if held is not None and held[0] is page:
            return held[1]
        if not self._streams:  # (forgotten at the start of the next turn)
            asyncio.get_running_loop().call_soon(self._streams.clear)
        stream: list[Entry] = sorted([*page.messages, *page.changes], key=lambda e: e.seq)
        sized = [(wire, self.wire_size(wire)) for wire in (e.as_dict() for e in stream)]
        self._streams[id(page)] = (page, sized)
        return sized
