"""One webhook's deliveries, on the node that holds its lease.

The webhook's cursor in each room (the store's, owner ``webhook:<id>``) is
the seq up to which its receiver has acknowledged (answered 2xx) every event
it wants. A room is *dirty* when it may have entries past the cursor: a
notice said so, or a scan of every room's head found it. Up to
``--webhook-concurrency`` dirty rooms are delivered at once, each by one task
that reads the stream after the cursor (``--webhook-batch`` entries), posts
the events the webhook wants in one request, and moves the cursor past them
once the receiver acknowledges (in memory at once; in the store by a writer
of its own, all rooms in one call, as fast as the store takes them). So a
room's events go out in order, one request at a time, and an event is sent
again only if its acknowledgement was not recorded (a crash before the
writer saved it): the receiver drops that repeat by its id.

A failure (no 2xx within ``--webhook-timeout``, or no connection) pauses the
whole webhook, not one room (it is the receiver that is unwell), for an
exponential back-off with jitter. A request failing for longer than
``--webhook-give-up`` is kept as a dead letter (its room and seq range; the
entries stay in the stream), and the room goes on after it. Nothing here
waits on the chat: a slow receiver delays only its own webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from typing import Any

import aiohttp

from ..core.errors import ChatError
from ..core.models import Entry, Page, RoomName, now_ms
from ..settings import Settings
from ..store import MessageStore
from .webhook import Webhook, backoff, body, sign

log = logging.getLogger("app.hooks")

STORE_RETRY = 1.0  # seconds before a room whose store read failed is tried again
MAX_DEAD_LETTERS = 1000  # kept per webhook; past it, a given-up delivery is only logged
REPLY_READ = 64 * 1024  # bytes of a receiver's reply read (and ignored)
USER_AGENT = "Roomcast-Webhooks/1"


def dead_letters(hook_id: str) -> str:
    """The store's record kind of a webhook's dead letters."""
    return f"dead:{hook_id}"


def in_order(page: Page) -> list[Entry]:
    """A read of the stream's entries, messages and changes, by seq."""
    entries: list[Entry] = [*page.messages, *page.changes]
    entries.sort(key=lambda e: e.seq)
    return entries


async def post(session: aiohttp.ClientSession, hook: Webhook, room: RoomName,
               events: list[dict[str, Any]], timeout: float) -> str | None:
    """Send one delivery; None if the receiver acknowledged it, else why not."""
    payload = body(hook, room, events)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "Roomcast-Webhook": hook.id,
               "Roomcast-Delivery": f"{events[0]['id']}-{events[-1]['id'].rpartition(':')[2]}",
               "Roomcast-Signature": sign(hook.secret, int(time.time()), payload)}
    try:
        async with session.post(hook.url, data=payload, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
            await reply.content.read(REPLY_READ)
            return None if 200 <= reply.status < 300 else f"HTTP {reply.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Deliverer:
    def __init__(self, hook: Webhook, store: MessageStore, session: aiohttp.ClientSession,
                 settings: Settings) -> None:
        self.hook = hook
        self.store = store
        self.session = session
        self.settings = settings
        # in the order they became dirty: the longest waiting starts first (a busy
        # room, dirty again as soon as delivered, goes to the back)
        self.dirty: dict[RoomName, None] = {}
        self.wake = asyncio.Event()
        self.rooms: dict[RoomName, asyncio.Task[None]] = {}  # being delivered
        self.failures = 0  # in a row
        self.resume_at = 0.0  # monotonic; no request before it
        self.resumed = asyncio.Event()
        self.resumed.set()
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

    async def stop(self) -> None:
        tasks = [t for t in (self.task, *self.rooms.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.saver is not None:
            self.saver.cancel()
            await asyncio.gather(self.saver, return_exceptions=True)
        with contextlib.suppress(ChatError):  # (if not: those events are delivered again)
            await self._save_once()

    async def _save(self) -> None:
        """Write acknowledged positions to the store, all rooms in one call, as
        often as the store takes them (one write in flight at a time)."""
        while True:
            await self.to_save.wait()
            self.to_save.clear()
            try:
                await self._save_once()
            except ChatError as exc:
                log.warning("webhook %s: its cursors were not saved (%s)", self.hook.id, exc)
                await asyncio.sleep(STORE_RETRY)

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

    def _acknowledged(self, room: RoomName, seq: int) -> None:
        self.positions[room] = self.unsaved[room] = seq
        self.to_save.set()

    def notice(self, rooms: list[RoomName]) -> None:
        """These rooms have new entries."""
        wanted = [room for room in rooms if self.hook.admits(room)]
        if wanted:
            self.dirty.update(dict.fromkeys(wanted))
            self.wake.set()

    def rescan(self) -> None:
        """Look at every room again soon (notices may have been lost)."""
        self.scanned = False
        self.wake.set()

    async def scan(self) -> None:
        """Mark dirty every room of the webhook's with entries past its cursor."""
        heads = await self.store.heads()
        cursors = {**await self.store.cursors(self.hook.owner), **self.positions}
        self.notice([room for room, head in heads.items() if head > cursors.get(room, 0)])

    async def _run(self) -> None:
        while True:
            if not self.scanned:
                try:
                    await self.scan()
                    self.scanned = True
                except ChatError as exc:
                    log.warning("webhook %s: the scan failed (%s)", self.hook.id, exc)
            try:
                await asyncio.wait_for(self.wake.wait(), self.settings.webhook_rescan)
            except TimeoutError:
                self.scanned = False  # look at every room again
                continue
            self.wake.clear()
            for room in [r for r in self.dirty if r not in self.rooms]:
                if len(self.rooms) >= self.settings.webhook_concurrency:
                    break
                task = asyncio.create_task(self._room(room), name=f"webhook {self.hook.id} {room}")
                self.rooms[room] = task
                task.add_done_callback(functools.partial(self._room_done, room))

    def _room_done(self, room: RoomName, _: object) -> None:
        self.rooms.pop(room, None)
        self.wake.set()  # another dirty room may start

    async def _room(self, room: RoomName) -> None:
        try:
            position = self.positions.get(room)
            if position is None:
                position = await self.store.cursor(self.hook.owner, room) or 0
            while True:
                self.dirty.pop(room, None)  # a notice from now on marks it again
                page = await self.store.page(room, after=position,
                                             limit=self.settings.webhook_batch)
                entries = in_order(page)
                if not entries:
                    return
                events = [self.hook.event(e) for e in entries if self.hook.wants(e)]
                if events:
                    await self._deliver(room, events)
                position = entries[-1].seq
                self._acknowledged(room, position)
                if not page.more:
                    return
        except Exception as exc:  # the store, most likely: try the room again in a while
            log.log(logging.WARNING if isinstance(exc, ChatError) else logging.ERROR,
                    "webhook %s room %s: %s", self.hook.id, room, exc,
                    exc_info=not isinstance(exc, ChatError))
            await asyncio.sleep(STORE_RETRY)
            self.dirty[room] = None

    async def _deliver(self, room: RoomName, events: list[dict[str, Any]]) -> None:
        """Post until acknowledged, or until given up (a dead letter)."""
        first_try, attempts = time.monotonic(), 0
        while True:
            await self._resumed()
            attempts += 1
            error = await post(self.session, self.hook, room, events,
                               self.settings.webhook_timeout)
            if error is None:
                self.failures = 0
                self.resume_at = 0.0
                self.resumed.set()
                self.delivered += len(events)
                return
            self._failed(error)
            if time.monotonic() - first_try >= self.settings.webhook_give_up:
                await self._give_up(room, events, attempts, error)
                return

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        wait = backoff(self.failures, self.settings.webhook_retry_min,
                       self.settings.webhook_retry_max, self.rng)
        log.info("webhook %s: %s; retrying in %.1f s", self.hook.id, error, wait)
        self.resume_at = max(self.resume_at, time.monotonic() + wait)
        if self.resumed.is_set():
            self.resumed = asyncio.Event()

    async def _resumed(self) -> None:
        """Wait out the webhook's back-off (or until another request succeeds)."""
        while (wait := self.resume_at - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self.resumed.wait(), wait)
            except TimeoutError:
                pass

    async def _give_up(self, room: RoomName, events: list[dict[str, Any]], attempts: int,
                       error: str) -> None:
        first, last = (int(e["id"].rpartition(":")[2]) for e in (events[0], events[-1]))
        letter = {"room": room, "first": first, "last": last, "events": len(events),
                  "attempts": attempts, "error": error, "at": now_ms()}
        kind = dead_letters(self.hook.id)
        log.warning("webhook %s gave up delivering %s:%d-%d after %d attempts (%s)",
                    self.hook.id, room, first, last, attempts, error)
        if len(await self.store.records(kind)) >= MAX_DEAD_LETTERS:
            log.warning("webhook %s has %d dead letters: this one is not kept",
                        self.hook.id, MAX_DEAD_LETTERS)
            return
        await self.store.put_record(kind, f"{room}:{first}-{last}", letter)
        self.given_up += len(events)
