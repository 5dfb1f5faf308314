"""Replies that carry stored messages, held to a size and to each connection's budget.

A ``join``, ``history`` or ``search`` reply may carry up to
``max_reply_bytes`` of messages (as encoded on the wire), and what a
connection receives in such replies is metered by its ``reply_bytes``
bucket. The most a reply may cost is taken *before* the store is read
(pipelined requests cannot all pass before the first is charged); what the
reply did not use is given back once it is cut (:func:`app.chat.paging.fit`).
"""

from __future__ import annotations

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
        kept, used[0], cut = fit(entries, self.budget, self.wire_size, keep_newest=keep_newest)
        return kept, cut

    async def read(self, conn: Connection, page: Awaitable[Page], *, keep_newest: bool
                   ) -> tuple[Page, Ack, bool]:
        """Await a reserved page; return it, its ``messages`` and, reading on,
        ``changes`` (in seq order) cut together to ``max_reply_bytes``, and
        whether more lie beyond them."""
        with self.cutting(conn) as used:
            with self.metrics.store_seconds.labels("page").time():
                read = await page
            stream: list[Entry] = sorted([*read.messages, *read.changes], key=lambda e: e.seq)
            kept, cut = self.fit(conn, [e.as_dict() for e in stream], used,
                                 keep_newest=keep_newest)
        entries: Ack = {"messages": [e for e in kept if "kind" not in e]}
        if not keep_newest:  # reading on: the stream, changes too
            entries["changes"] = [e for e in kept if "kind" in e]
        return read, entries, read.more or cut
