"""Search: the messages of joined rooms with a query's words, bounded apart.

What a query matches and how the stores find it is
:mod:`app.store.search`. This service decides which rooms a connection may
search and bounds what searching may cost everyone else: the connection's
``search`` rate, one search running per name (over all its connections) and
``--max-searches`` per node (:class:`~app.core.limits.InFlight`), each
stopped at ``--search-timeout`` by the store, and the reply held to the
connection's reply budget like a history page.
"""

from __future__ import annotations

from typing import Any

from ..core.limits import InFlight
from ..core.models import RoomName
from ..metrics import Metrics
from ..settings import Settings
from ..store import MessageStore
from ..store.search import marked
from .connections import Connection, Connections
from .protocol import SearchRequest
from .replies import Replies

Ack = dict[str, Any]


class Search:
    def __init__(self, settings: Settings, store: MessageStore, metrics: Metrics,
                 connections: Connections, replies: Replies) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.connections = connections
        self.replies = replies
        self.running = InFlight("searches", per_node=settings.max_searches,
                                per_name=settings.max_searches_per_name)

    async def search(self, conn: Connection, req: SearchRequest) -> Ack:
        """Messages with the query's words, newest first, in one room the
        connection has joined or in all of them; each with its text cut into
        ``marked`` pieces (the matched words marked), bounded in bytes like a
        history reply; ``next`` goes on to older results."""
        if req.room is not None:
            self.connections.member(conn, req.room)
            rooms = [req.room]
        else:
            rooms = sorted(conn.rooms)
        self.connections.limit(conn, "search", "searches")
        with self.running.hold(conn.name):
            return await self._search(conn, req, rooms)

    async def _search(self, conn: Connection, req: SearchRequest, rooms: list[RoomName]
                      ) -> Ack:
        self.replies.reserve(conn)
        with self.replies.cutting(conn) as used:
            with self.metrics.store_seconds.labels("search").time():
                page = await self.store.search(rooms, req.terms, cursor=req.cursor,
                                               limit=req.limit,
                                               timeout=self.settings.search_timeout)
            results = [{"message": m.as_dict(), "marked": marked(m.text, req.terms)}
                       for m in page.messages]
            kept, cut = self.replies.fit(conn, results, used, keep_newest=False)
        more = page.more or cut
        return {"results": kept,
                "next": page.cursors[len(kept) - 1] if more and kept else None}
