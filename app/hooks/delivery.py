"""One webhook's deliveries, on the node that holds its lease.

The webhook's cursor in each room (the store's, owner ``webhook:<id>``) is
the seq up to which its receiver has acknowledged (answered 2xx) every event
it wants. A room is *dirty* when it has entries past the cursor: a notice
said so (with the seq it reached), or a scan of every room's head found it.
Dirty rooms wait in the order they became dirty.

One request at a time per webhook: a delivery takes the dirty rooms in that
order, reads each one's stream after its cursor (from the node's
:class:`~app.hooks.tail.Tail` when it holds it, else from the store) up to
``--webhook-batch`` entries in all, and posts the events the webhook wants
in one request: each room's in order, rooms one after the other. Once the
receiver acknowledges, each room's cursor moves past what was read (in
memory at once; in the store by a writer of its own, all rooms in one call,
at most once a second). So a room's events go out in order, and an event is
sent again only if its acknowledgement was not recorded (a crash within that
second): the receiver drops that repeat by its id. A busy webhook's deliveries are at
least ``--webhook-linger`` apart (unless the last one was full: a backlog
goes as fast as the receiver takes it), so they grow rather than multiply.

A failure (no 2xx within ``--webhook-timeout``, or no connection) pauses the
webhook for an exponential back-off with jitter, then the same delivery is
tried again. One failing for longer than ``--webhook-give-up`` is kept as
dead letters (one per room: its seq range; the entries stay in the stream),
and the rooms go on after it. Nothing here waits on the chat: a slow
receiver delays only its own webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import aiohttp

from ..core.errors import ChatError
from ..core.models import Entry, Page, RoomName, now_ms
from ..settings import Settings
from ..store import MessageStore
from .addresses import literal_refused, networks
from .tail import Tail
from .webhook import Webhook, backoff, body, encode, gone_event, sign

log = logging.getLogger("app.hooks")

STORE_RETRY = 1.0  # seconds before a delivery whose store read failed is tried again
ADMITTED_CACHE = 10_000  # rooms remembered as admitted (or not) by the webhook
SAVE_EVERY = 1.0  # seconds at least between two writes of a webhook's cursors
MAX_DEAD_LETTERS = 1000  # kept per webhook; past it, a given-up delivery is only logged
REPLY_READ = 64 * 1024  # bytes of a receiver's reply read (and ignored)
USER_AGENT = "Roomcast-Webhooks/1"

Ids = list[tuple[RoomName, int]]  # a delivery's events: room and seq of each


def dead_letters(hook_id: str) -> str:
    """The store's record kind of a webhook's dead letters."""
    return f"dead:{hook_id}"


def in_order(page: Page) -> list[Entry]:
    """A read of the stream's entries, messages and changes, by seq."""
    entries: list[Entry] = [*page.messages, *page.changes]
    entries.sort(key=lambda e: e.seq)
    return entries


async def post(session: aiohttp.ClientSession, hook: Webhook, events: list[bytes],
               settings: Settings) -> str | None:
    """Send one delivery (events encoded); None if the receiver acknowledged
    it, else why not (an address webhooks may not reach, too: the session's
    resolver checks the addresses of a name, this the URL's own address)."""
    if (refused := literal_refused(hook.url, networks(settings))) is not None:
        return refused
    timeout = settings.webhook_timeout
    payload = body(hook, events)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "Roomcast-Webhook": hook.id,
               "Roomcast-Signature": sign(hook.secret, int(time.time()), payload)}
    try:
        async with session.post(hook.url, data=payload, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
            await reply.content.read(REPLY_READ)
            return None if 200 <= reply.status < 300 else f"HTTP {reply.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Deliverer:
    def __init__(self, hook: Webhook, store: MessageStore, tail: Tail,
                 session: aiohttp.ClientSession, settings: Settings) -> None:
        self.hook = hook
        self.store = store
        self.tail = tail
        self.session = session
        self.settings = settings
        # room -> the seq it has entries up to (at least), in the order the rooms
        # became dirty; a room delivered and dirty again goes to the back
        self.dirty: dict[RoomName, int] = {}
        self.admitted: dict[RoomName, bool] = {}  # room -> the webhook's patterns admit it
        self.wake = asyncio.Event()
        self.failures = 0  # in a row
        self.last_post = 0.0  # monotonic, when the last delivery started
        self.full = False  # the last delivery read all it may: there is a backlog
        self.rng = random.Random()
        self.task: asyncio.Task[None] | None = None
        self.scanned = False  # since the last look at every room
        self.delivered = 0  # events acknowledged (this node, this hold)
        self.last_error: str | None = None
        self.given_up = 0  # events kept in dead letters
        # where each room stands (acknowledged up to), and the positions not yet
        # written to the store: one writer task keeps the store's cursors up to
        # date, in bulk, off the delivery path
        self.positions: dict[RoomName, int] = {}
        self.unsaved: dict[RoomName, int] = {}
        self.to_save = asyncio.Event()
        self.saver: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"webhook {self.hook.id}")
        self.saver = asyncio.create_task(self._save(), name=f"webhook {self.hook.id} cursors")

    async def stop(self, *, save: bool = True) -> None:
        """Stop delivering; write the positions not saved yet, unless the
        webhook is gone (its cursors were dropped with it)."""
        for task in (self.task, self.saver):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if save:
            with contextlib.suppress(ChatError):  # (if not: those events are delivered again)
                await self._save_once()

    # -- what to deliver ---------------------------------------------------------------

    def notice(self, heads: dict[RoomName, int]) -> None:
        """These rooms have entries up to these seqs."""
        for room, head in heads.items():
            if head > self.positions.get(room, 0) and self._admits(room):
                self.dirty[room] = max(head, self.dirty.get(room, 0))
                self.wake.set()

    def _admits(self, room: RoomName) -> bool:
        admitted = self.admitted.get(room)
        if admitted is None:
            if len(self.admitted) >= ADMITTED_CACHE:
                self.admitted.clear()
            admitted = self.admitted[room] = self.hook.admits(room)
        return admitted

    def rescan(self) -> None:
        """Look at every room again soon (notices may have been lost)."""
        self.scanned = False
        self.wake.set()

    async def scan(self) -> None:
        """Mark dirty every room of the webhook's with entries past its cursor."""
        heads = await self.store.heads()
        cursors = {**await self.store.cursors(self.hook.owner), **self.positions}
        self.notice({room: head for room, head in heads.items()
                     if head > cursors.get(room, 0)})

    async def _run(self) -> None:
        while True:
            if not self.scanned:
                try:
                    await self.scan()
                    self.scanned = True
                except ChatError as exc:
                    log.warning("webhook %s: the scan failed (%s)", self.hook.id, exc)
            if not self.dirty:
                try:
                    await asyncio.wait_for(self.wake.wait(), self.settings.webhook_rescan)
                except TimeoutError:
                    self.scanned = False  # look at every room again
                    continue
            self.wake.clear()
            linger = self.last_post + self.settings.webhook_linger - time.monotonic()
            if linger > 0 and not self.full:  # (busy: let the next delivery gather more)
                await asyncio.sleep(linger)
            try:
                await self._delivery()
            except Exception as exc:  # the store, most likely: again in a while
                log.log(logging.WARNING if isinstance(exc, ChatError) else logging.ERROR,
                        "webhook %s: %s", self.hook.id, exc,
                        exc_info=not isinstance(exc, ChatError))
                await asyncio.sleep(STORE_RETRY)

    async def _position(self, room: RoomName) -> int:
        position = self.positions.get(room)
        if position is None:
            position = self.positions[room] = await self.store.cursor(self.hook.owner,
                                                                      room) or 0
        return position

    async def _read(self, room: RoomName, after: int, limit: int
                    ) -> tuple[list[Entry], dict[str, Any] | None]:
        """Up to ``limit`` entries after ``after``, and what retention removed
        of the ones after it (``{"from", "to", "why"}``), if anything."""
        entries = self.tail.read(room, after, limit)
        if entries is not None:  # (the tail holds the next one: nothing removed)
            return entries, None
        page = await self.store.page(room, after=after, limit=limit)
        entries = in_order(page)
        for entry in entries:
            self.tail.add(entry)  # (the next webhook to read them finds them here)
        return entries, page.gone(after)

    async def _delivery(self) -> None:
        """One delivery: the dirty rooms' next entries, posted until acknowledged."""
        room_budget = self.settings.webhook_batch
        reached: dict[RoomName, int] = {}  # room -> the last seq read
        events: list[bytes] = []
        ids: Ids = []
        for room, target in list(self.dirty.items()):
            if room_budget <= 0:
                break
            position = await self._position(room)
            entries, gone = await self._read(room, position, room_budget) \
                if position < target else ([], None)
            if gone is not None:  # removed before this webhook delivered them: said so
                events.append(encode(gone_event(room, gone)))
                ids.append((room, gone["to"]))
                reached[room] = gone["to"]
            if not entries:  # (the notice's entries were delivered already)
                if not gone and self.dirty.get(room) == target:
                    del self.dirty[room]
                continue
            room_budget -= len(entries)
            reached[room] = entries[-1].seq
            for entry in entries:
                if self.hook.wants(entry):
                    events.append(self.tail.encoded(self.hook, entry))
                    ids.append((room, entry.seq))
        self.full = room_budget <= 0  # (a backlog: the next delivery does not linger)
        if events:
            await self._deliver(events, ids)
        for room, seq in reached.items():
            self._acknowledged(room, seq)
            target = self.dirty.pop(room, 0)
            if target > seq:
                self.dirty[room] = target  # more to come: to the back of the line

    async def _deliver(self, events: list[bytes], ids: Ids) -> None:
        """Post until acknowledged, or until given up (dead letters)."""
        first_try, attempts = time.monotonic(), 0
        while True:
            self.last_post = time.monotonic()
            attempts += 1
            error = await post(self.session, self.hook, events, self.settings)
            if error is None:
                self.failures = 0
                self.delivered += len(events)
                return
            self.failures += 1
            self.last_error = error
            if time.monotonic() - first_try >= self.settings.webhook_give_up:
                await self._give_up(ids, attempts, error)
                return
            wait = backoff(self.failures, self.settings.webhook_retry_min,
                           self.settings.webhook_retry_max, self.rng)
            log.info("webhook %s: %s; retrying in %.1f s", self.hook.id, error, wait)
            await asyncio.sleep(wait)

    async def _give_up(self, ids: Ids, attempts: int, error: str) -> None:
        ranges: dict[RoomName, list[int]] = {}
        for room, seq in ids:
            ranges.setdefault(room, []).append(seq)
        kind = dead_letters(self.hook.id)
        kept = len(await self.store.records(kind))
        for room, seqs in ranges.items():
            first, last = seqs[0], seqs[-1]
            log.warning("webhook %s gave up delivering %s:%d-%d after %d attempts (%s)",
                        self.hook.id, room, first, last, attempts, error)
            if kept >= MAX_DEAD_LETTERS:
                log.warning("webhook %s has %d dead letters: this one is not kept",
                            self.hook.id, MAX_DEAD_LETTERS)
                continue
            await self.store.put_record(kind, f"{room}:{first}-{last}", {
                "room": room, "first": first, "last": last, "events": len(seqs),
                "attempts": attempts, "error": error, "at": now_ms()})
            kept += 1
            self.given_up += len(seqs)

    # -- where each room stands --------------------------------------------------------

    def _acknowledged(self, room: RoomName, seq: int) -> None:
        self.positions[room] = self.unsaved[room] = seq
        self.to_save.set()

    async def _save(self) -> None:
        """Write acknowledged positions to the store, all rooms in one call, at
        most every :data:`SAVE_EVERY` seconds (each write is a commit on the
        store's writer, which the chat's sends share)."""
        while True:
            await self.to_save.wait()
            self.to_save.clear()
            try:
                await self._save_once()
            except ChatError as exc:
                log.warning("webhook %s: its cursors were not saved (%s)", self.hook.id, exc)
            await asyncio.sleep(SAVE_EVERY)

    async def _save_once(self) -> None:
        saving, self.unsaved = self.unsaved, {}
        if not saving:
            return
        try:
            await self.store.set_cursors(self.hook.owner, saving)
        except BaseException:
            for room, seq in saving.items():  # to save next time (never back)
                self.unsaved[room] = max(seq, self.unsaved.get(room, 0))
            self.to_save.set()
            raise
