"""The webhooks: configured through the API, kept in the store, each delivered
by one node.

Every node keeps the list of webhooks (read from the store at start, again
when any node changes it, and every ``--webhook-rescan``) and tells the
cluster, through the relay, which rooms have new entries (and up to which
seq): the chat calls :meth:`Webhooks.noticed` with each stored message and
change, which also keeps it in the node's :class:`~app.hooks.tail.Tail`,
and the rooms named in one turn of the loop (or while the last notice was
published) go out as one notice. Every node tries to
hold each webhook's lease; the node that holds it runs that webhook's
:class:`~app.hooks.delivery.Deliverer`, and stops it as soon as it cannot
renew the lease (another node then takes over, within ``--webhook-lease``,
from the cursors in the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from ..core.errors import ChatError, ErrorCode
from ..core.models import Entry, RoomName, now_ms
from ..settings import Settings
from ..store import MessageStore
from .addresses import GuardedResolver, literal_refused, networks
from .delivery import Deliverer, dead_letters, in_order, post
from .relay import LocalRelay, Relay
from .tail import Tail
from .webhook import Webhook, new_webhook

log = logging.getLogger("app.hooks")

KIND = "webhook"  # the store's record kind of a webhook
WANTED_CACHE = 10_000  # rooms remembered as wanted (or not) by some webhook
CONNECTIONS = 100  # open connections to receivers, all webhooks together


class Webhooks:
    def __init__(self, settings: Settings, store: MessageStore, relay: Relay) -> None:
        self.settings = settings
        self.store = store
        self.relay = relay
        self.hooks: dict[str, Webhook] = {}
        self.deliverers: dict[str, Deliverer] = {}  # the webhooks this node delivers
        self.wanted: dict[RoomName, bool] = {}  # room -> some webhook wants it
        self.pending: dict[RoomName, int] = {}  # rooms with new entries (up to), not yet told
        self.tail = Tail()  # the entries of wanted rooms this node stored
        self.gathering: asyncio.Handle | None = None
        self.publishing: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()  # the list of webhooks changed (or notices were lost)
        self.missed = False  # notices may have been lost (the relay subscribed again)
        self.session: aiohttp.ClientSession | None = None
        self.leases: asyncio.Task[None] | None = None

    # -- life ------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(ChatError):  # (if the store is down: when it is back)
            await self._load()
        self.relay.listen(self._heard, self._reset)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS,
                                           resolver=GuardedResolver(networks(self.settings))),
            cookie_jar=aiohttp.DummyCookieJar())
        self.leases = asyncio.create_task(self._keep_leases(), name="webhook leases")

    async def stop(self) -> None:
        if self.leases is not None:
            self.leases.cancel()
            await asyncio.gather(self.leases, return_exceptions=True)
        for hook_id in list(self.deliverers):
            await self._let_go(hook_id)
        if self.publishing is not None:
            await asyncio.gather(self.publishing, return_exceptions=True)
        if self.gathering is not None:
            self.gathering.cancel()
        await self.relay.close()
        if self.session is not None:
            await self.session.close()

    async def _load(self) -> None:
        found = await self.store.records(KIND)
        self.hooks = {key: Webhook.from_dict(data) for key, data in found.items()}
        self.wanted.clear()

    async def _keep_leases(self) -> None:
        """Hold the lease of every webhook this node can, deliver those, let the
        others go: every third of a lease, and at once when the list changes.
        The list is read again on a change and every ``--webhook-rescan``."""
        loop = asyncio.get_running_loop()
        loaded = loop.time()
        while True:
            if self.changed.is_set() or loop.time() - loaded >= self.settings.webhook_rescan:
                self.changed.clear()
                with contextlib.suppress(ChatError):
                    await self._load()
                    loaded = loop.time()
            if self.missed:  # notices may have been lost: every holder looks again
                self.missed = False
                for deliverer in self.deliverers.values():
                    deliverer.rescan()
            for hook_id in list(self.deliverers):
                if hook_id not in self.hooks:  # deleted
                    await self._let_go(hook_id, save=False)
            for hook_id, hook in list(self.hooks.items()):
                try:
                    held = await self.relay.hold(hook.owner, self.settings.webhook_lease)
                except Exception as exc:  # the relay is down: hold nothing meanwhile
                    log.warning("webhook leases: %s", exc)
                    held = False
                if held and hook_id not in self.deliverers:
                    assert self.session is not None
                    self.deliverers[hook_id] = deliverer = Deliverer(
                        hook, self.store, self.tail, self.session, self.settings)
                    deliverer.start()
                    log.info("webhook %s: delivered by this node", hook_id)
                elif not held and hook_id in self.deliverers:
                    await self._let_go(hook_id, release=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.settings.webhook_lease / 3)

    async def _let_go(self, hook_id: str, *, release: bool = True, save: bool = True) -> None:
        deliverer = self.deliverers.pop(hook_id)
        await deliverer.stop(save=save)
        if release:
            with contextlib.suppress(Exception):
                await self.relay.release(deliverer.hook.owner)
        log.info("webhook %s: no longer delivered by this node", hook_id)

    # -- notices ---------------------------------------------------------------------

    def noticed(self, entry: Entry) -> None:
        """A new entry was stored (called by the chat, on every send and change:
        costs a dict lookup unless a webhook wants the room)."""
        if not self.hooks:
            return
        room = entry.room
        wanted = self.wanted.get(room)
        if wanted is None:
            if len(self.wanted) >= WANTED_CACHE:
                self.wanted.clear()
            wanted = self.wanted[room] = any(h.admits(room) for h in self.hooks.values())
        if not wanted:
            return
        self.tail.add(entry)
        self.pending[room] = max(entry.seq, self.pending.get(room, 0))
        if self.gathering is None and self.publishing is None:
            # the rooms noticed in this turn of the loop go out as one notice, and
            # those noticed while it is published as the next one
            self.gathering = asyncio.get_running_loop().call_soon(self._tell)

    def _tell(self) -> None:
        self.gathering = None
        if isinstance(self.relay, LocalRelay):  # this node alone: no task, no encoding
            heads, self.pending = self.pending, {}
            self._heard({"heads": heads})
            return
        self.publishing = asyncio.create_task(self._publish(), name="webhook notices")

    async def _publish(self) -> None:
        try:
            while self.pending:
                heads, self.pending = self.pending, {}
                try:
                    await self.relay.publish({"heads": heads})
                except Exception as exc:  # the holders' scans will find them
                    log.warning("webhook notice lost: %s", exc)
        finally:
            self.publishing = None

    def _heard(self, notice: dict[str, Any]) -> None:
        if notice.get("changed"):
            self.changed.set()
        given = notice.get("heads")
        heads = {RoomName(room): seq for room, seq in given.items()
                 if isinstance(room, str) and isinstance(seq, int)} \
            if isinstance(given, dict) else {}
        for deliverer in self.deliverers.values():
            deliverer.notice(heads)

    def _reset(self) -> None:
        self.missed = True  # notices may have been missed: look at every room
        self.changed.set()

    async def _changed(self) -> None:
        self.changed.set()
        if not isinstance(self.relay, LocalRelay):
            with contextlib.suppress(Exception):  # (the others reload within a lease)
                await self.relay.publish({"changed": True})

    # -- what the API does -------------------------------------------------------------

    async def create(self, url: str, rooms: list[str], events: list[str], mention: str | None,
                     within: tuple[str, ...]) -> Webhook:
        """A new webhook, for events stored from now on (its cursor starts at
        every room's latest); ``too_large`` past ``--max-webhooks``."""
        if len(await self.store.records(KIND)) >= self.settings.max_webhooks:
            raise ChatError(ErrorCode.TOO_LARGE, f"there are {self.settings.max_webhooks} "
                            "webhooks already (--max-webhooks)")
        hook = new_webhook(url, rooms, events, mention, within, now_ms())
        if (refused := literal_refused(hook.url, networks(self.settings))) is not None:
            raise ChatError(ErrorCode.BAD_REQUEST, f"url: {refused}")
        heads = await self.store.heads()
        await self.store.set_cursors(hook.owner, {room: head for room, head in heads.items()
                                                  if hook.admits(room)})
        await self.store.put_record(KIND, hook.id, hook.as_dict(secret=True))
        log.info("webhook %s created for %s", hook.id, ",".join(hook.rooms))
        await self._changed()
        return hook

    async def all(self) -> list[Webhook]:
        found = await self.store.records(KIND)
        return sorted((Webhook.from_dict(d) for d in found.values()), key=lambda h: h.created)

    async def get(self, hook_id: str) -> Webhook:
        for hook in await self.all():
            if hook.id == hook_id:
                return hook
        raise ChatError(ErrorCode.NOT_FOUND, f"no webhook {hook_id!r}")

    async def delete(self, hook_id: str) -> None:
        if not await self.store.drop_record(KIND, hook_id):
            raise ChatError(ErrorCode.NOT_FOUND, f"no webhook {hook_id!r}")
        await self.store.drop_cursors(f"webhook:{hook_id}")
        for key in await self.store.records(dead_letters(hook_id)):
            await self.store.drop_record(dead_letters(hook_id), key)
        log.info("webhook %s deleted", hook_id)
        await self._changed()

    async def dead_letters(self, hook_id: str) -> list[dict[str, Any]]:
        await self.get(hook_id)
        found = await self.store.records(dead_letters(hook_id))
        return sorted(({"id": key, **letter} for key, letter in found.items()),
                      key=lambda letter: (letter["at"], letter["id"]))

    async def replay(self, hook_id: str, letter_id: str) -> int:
        """Deliver a dead letter's events again, once (by this node, now); on
        success it is no longer a dead letter. How many events went."""
        hook = await self.get(hook_id)
        letter = (await self.store.records(dead_letters(hook_id))).get(letter_id)
        if letter is None:
            raise ChatError(ErrorCode.NOT_FOUND, f"no dead letter {letter_id!r}")
        room, first, last = RoomName(letter["room"]), int(letter["first"]), int(letter["last"])
        page = await self.store.page(room, after=first - 1, limit=last - first + 1)
        events = [self.tail.encoded(hook, e) for e in in_order(page) if hook.wants(e)]
        if events:
            assert self.session is not None
            error = await post(self.session, hook, events, self.settings)
            if error is not None:
                raise ChatError(ErrorCode.UNAVAILABLE, f"the receiver did not take it: {error}")
        await self.store.drop_record(dead_letters(hook_id), letter_id)
        return len(events)

    def status(self, hook_id: str) -> dict[str, Any] | None:
        """How this node's delivery of the webhook goes (None: not delivered here)."""
        deliverer = self.deliverers.get(hook_id)
        if deliverer is None:
            return None
        return {"delivered": deliverer.delivered, "failures": deliverer.failures,
                "last_error": deliverer.last_error, "rooms_pending": len(deliverer.dirty),
                "given_up": deliverer.given_up}
