"""The chat as services: every feature, built once per node, for every interface.

:class:`Chat` builds each service with the collaborators it needs (the
store, presence, settings, metrics and a :class:`~app.chat.wire.Wire` to
reach connections) and holds them; the Socket.IO namespace
(:mod:`app.chat.namespace`) only parses, calls one of them and acknowledges,
and any other interface calls the same ones, so it gets the same
validation, limits, ordering and fan-out.

==================  ===========================  ========================================
service             module                       owns
==================  ===========================  ========================================
``connections``     :mod:`app.chat.connections`  who is connected as whom; rate budgets
``rooms``           :mod:`app.chat.rooms`        membership (join, leave, presence)
``messages``        :mod:`app.chat.messages`     send, history, changes, typing
``reads``           :mod:`app.chat.reads`        read markers, receipts, the rooms list
``directs``         :mod:`app.chat.conversations` opening direct conversations
``search``          :mod:`app.chat.searching`    search, bounded apart
``recovery``        :mod:`app.chat.recovery`     catch-up after fan-out lost events
``cursors``         :mod:`app.chat.cursors`      consumers' positions, kept by the server
``governance``      :mod:`app.chat.governance`   owners, roles, bans, mutes, room settings
``retention``       :mod:`app.chat.retention`    removing what rooms keep no longer
``attachments``     :mod:`app.chat.attachments`  uploads, the files messages carry, links
==================  ===========================  ========================================
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..files import FileStorage
from ..metrics import Metrics
from ..presence import Presence
from ..settings import Settings
from ..store import MessageStore
from ..tracing import Tracing
from .attachments import Attachments
from .connections import Connection, Connections
from .conversations import Directs
from .cursors import Cursors
from .governance import Governance
from .messages import Messages
from .reads import Reads
from .recovery import Recovery
from .replies import Replies
from .retention import Retention
from .rooms import Rooms
from .searching import Search
from .wire import Wire

log = logging.getLogger("app.chat")

# Why a connection ended, when it dropped rather than said goodbye or was ended
# by the server for a reason of its own: its presence lingers (--presence-grace)
DROPPED = frozenset({"transport close", "transport error", "ping timeout",
                     "server_shutdown", "slow_consumer"})


class Chat:
    def __init__(self, settings: Settings, store: MessageStore, presence: Presence,
                 files: FileStorage, metrics: Metrics, wire: Wire) -> None:
        self.settings = settings
        self.metrics = metrics
        self.wire = wire
        self.store = store  # the backends every service shares
        self.presence = presence
        self.connections = Connections(settings, metrics, wire)
        self.replies = Replies(settings, metrics, self.connections)
        self.attachments = Attachments(settings, store, files, self.connections)
        self.messages = Messages(settings, store, metrics, self.connections, self.replies,
                                 self.attachments, wire)
        self.rooms = Rooms(settings, store, presence, self.connections, self.replies, wire,
                           self.messages.watchers)
        self.reads = Reads(settings, store, presence, self.connections, wire)
        self.directs = Directs(settings, store, self.connections, wire)
        self.search = Search(settings, store, metrics, self.connections, self.replies)
        self.governance = Governance(settings, store, self.connections, self.rooms, wire,
                                     self.messages.watchers)
        self.recovery = Recovery(store, self.rooms, self.governance, wire)
        self.cursors = Cursors(store, self.connections)
        self.retention = Retention(settings, store, metrics)
        self.retention.files_gone = self.attachments.removed
        # work under way (handlers, disconnects): shutdown waits for it before
        # closing the backends, or its last store and presence calls would fail
        self.handling: set[asyncio.Task[Any]] = set()
        self.tracer: Tracing | None = None  # set by the app when tracing is on

    @property
    def draining(self) -> bool:
        """This node is shutting down (it takes on no new sends, joins, ...)."""
        return self.rooms.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.rooms.draining = value

    def working(self) -> asyncio.Task[Any] | None:
        """Count the current task as work under way (until :meth:`done`)."""
        task = asyncio.current_task()
        if task is not None:
            self.handling.add(task)
        return task

    def done(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self.handling.discard(task)

    async def wait_handlers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the work under way now to finish."""
        if self.handling:
            await asyncio.wait(list(self.handling), timeout=timeout)

    async def disconnected(self, conn: Connection, reason: str) -> None:
        """A connection ended: out of its rooms (each told, whatever fails)."""
        self.metrics.disconnected(reason)
        log.info("disconnect sid=%s name=%r transport=%s reason=%s", conn.sid, conn.name,
                 conn.transport, reason)
        await self.rooms.forget_all(conn, linger=reason in DROPPED)

    def start(self) -> None:
        self.rooms.start_housekeeping()
        self.retention.start()
        self.attachments.start()

    async def stop(self) -> None:
        """Stop the background work (housekeeping, catch-up, receipt rounds),
        telling what presence changes are gathered first."""
        try:
            await self.rooms.roster.flush()
        except Exception:
            log.exception("telling the last presence changes failed")
        await asyncio.gather(self.rooms.roster.stop(), self.rooms.stop_housekeeping(),
                             self.rooms.stop_lingering(), self.recovery.stop(),
                             self.reads.receipts.close(), self.governance.stop(),
                             self.retention.stop(), self.attachments.stop(),
                             return_exceptions=True)
