"""Message stores: one small interface, implementations side by side.

``open_store(url)`` picks the implementation by the URL's scheme and imports
its module lazily, so a backend's driver is needed only when it is used:

=============  =======================  ========================================
scheme         module                   for
=============  =======================  ========================================
``memory``     :mod:`app.store.memory`  tests; forgets everything on exit
``sqlite``     :mod:`app.store.sqlite`  one node; the zero-set-up default
``postgresql`` :mod:`app.store.postgres` several nodes sharing one history
=============  =======================  ========================================

Every store gives each room its own ``seq``: 1 for the first message, then
2, 3, ... with no gaps, assigned atomically. Appends are applied in the order
``append`` was *called* (not the order the calls happen to finish), which is
what keeps one connection's pipelined sends in order. ``(room, sender,
client_id)`` identifies a send: appending it again returns the stored
message and ``created=False``. What no store can hold (U+0000, which
PostgreSQL's ``text`` refuses; lone surrogates, which are not UTF-8) every
store refuses alike with ``bad_request`` (:func:`check_storable`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..core.errors import ChatError, ErrorCode
from ..core.models import Action, Attachments, Message, Page, Reading, RoomName
from ..core.policy import Act, RoomSettings, Standing
from .search import SEARCH_TIMEOUT, SearchPage
from .stream import Altered, Governed

_SCHEMES = {
    "memory": "app.store.memory",
    "sqlite": "app.store.sqlite",
    "postgresql": "app.store.postgres",
    "postgres": "app.store.postgres",
}


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored by every store, or None."""
    if "\x00" in value:
        return "holds U+0000 (NUL)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    return None


def check_storable(sender: str, text: str, client_id: str | None) -> None:
    """Refuse (``bad_request``) an append that some store could not hold, so
    that every store answers it the same way and no batch fails for it."""
    for what, value in (("sender", sender), ("text", text), ("client_id", client_id)):
        problem = unstorable(value) if value is not None else None
        if problem is not None:
            raise ChatError(ErrorCode.BAD_REQUEST, f"{what} {problem}, which cannot be stored")


class MessageStore(Protocol):
    async def append(self, room: RoomName, sender: str, text: str, client_id: str | None,
                     reply_to: int | None = None, mentions: Sequence[str] = (), *,
                     power: int = 0, attachments: Attachments = ()) -> tuple[Message, bool]:
        """Store a message (answering message ``reply_to`` of the room, if given,
        mentioning ``mentions``, the sender aside, and carrying ``attachments``,
        which a delete of the message clears); return it and whether it was
        created (False: a repeat, whose mentions are not recorded again).

        Raises ``ChatError(UNAVAILABLE)`` when the backend cannot be reached,
        ``ChatError(BAD_REQUEST)`` for what it cannot hold (:func:`check_storable`),
        ``ChatError(NOT_FOUND)`` when ``reply_to`` is no message of the room, and
        what the room's rules refuse the sender (whose identity gives them
        ``power``) at that point of its stream (:func:`app.core.policy.check_post`).
        """

    async def govern(self, room: RoomName, sender: str, act: Act, client_id: str | None, *,
                     power: int = 0) -> Governed:
        """Apply a governance action (:func:`app.core.policy.decide`) in call
        order with appends and changes: an entry of the room's stream, and the
        room's settings and the person's standing as it leaves them. A repeat
        of a client id returns the entry stored (``created`` False)."""

    async def standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        """``room``'s settings (None: ungoverned) and ``name``'s standing in it."""

    async def rules(self, name: str, rooms: Sequence[RoomName]
                    ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        """Of ``rooms``, the governed ones: each one's settings and ``name``'s
        standing in it (for a list of rooms: which to leave out)."""

    async def standings(self, room: RoomName, limit: int = 1000
                        ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        """``room``'s settings and the people with a role, a ban or a mute in it
        (up to ``limit`` of them, by name)."""

    async def actions(self, room: RoomName, *, before: int | None = None,
                      limit: int = 50) -> list[Action]:
        """The room's governance actions (its audit log), newest first, up to
        ``limit`` of them before seq ``before``; retention never removes them."""

    async def governed(self) -> dict[RoomName, RoomSettings]:
        """Every governed room's settings (to find the rooms' own retention)."""

    async def purge(self, room: RoomName, before: int, limit: int) -> int:
        """Remove ``room``'s oldest entries stored before ``before`` (ms), at most
        ``limit`` of them, in seq order from the first one kept, stopping at
        the first newer one (what is kept has no holes); how many went. Their
        reactions, mentions and search entries go with them; governance
        actions stay (the audit log) but leave the stream too. The room's
        seq goes on where it was; reads say what is gone (``Page.purged``).
        One transaction, short: call it again for more."""

    async def alter(self, room: RoomName, sender: str, kind: str, target: int,
                    value: str | None, client_id: str | None, *,
                    moderator: bool = False, edits_from: int | None = None) -> Altered:
        """Change message ``target`` (``kind``: edit, delete, react, unreact) as
        :class:`~app.store.stream.BatchWriter` decides, in call order with
        appends; the change is an entry of the room's stream with its own seq.
        Refusals: ``NOT_FOUND`` (no such message, or deleted), ``FORBIDDEN``
        (not the sender's, and not a moderator's delete; an edit of a message
        sent before ``edits_from``, ms), ``TOO_LARGE`` (too many different
        reactions), and what the room's rules refuse the sender now (banned,
        muted, read-only: :func:`app.core.policy.check_post`)."""

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        """Up to ``limit`` messages, ascending: the latest ones, the ones just
        before ``before``, or the ones just after ``after`` (after what
        retention removed: ``Page.purged`` says up to where that is)."""

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20,
                     timeout: float = SEARCH_TIMEOUT) -> SearchPage:
        """Messages of ``rooms``, as they stand, in which every term starts a word
        (:mod:`app.store.search`), newest first, ``limit`` at a time; ``cursor``
        is a page's ``next``. Raises ``ChatError(BAD_REQUEST)`` for a cursor it
        did not give, and ``ChatError(UNAVAILABLE)`` for a search not done
        within ``timeout`` seconds, which is then stopped in the database (not
        left running). Searches never wait behind the reads and writes of
        joins, history and sends: they have connections of their own."""

    async def mark(self, name: str, room: RoomName, seq: int | None = None) -> Reading:
        """Move ``name``'s read marker in ``room`` forward to ``seq`` (never back,
        never past the room's latest); with None, ``name`` enters the room (a
        first time, at its latest). Either way the room becomes the person's most
        recently used. In call order with appends (:mod:`app.store.markers`)."""

    async def readings(self, name: str, rooms: Sequence[RoomName] | None = None
                       ) -> list[Reading]:
        """Where ``name`` stands in those of ``rooms`` that are theirs, or in their
        rooms, most recently used first (up to ``YOUR_ROOMS_LISTED``)."""

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        """The read markers in ``room`` as (name, seq), furthest read first (up to
        ``RECEIPTS_LISTED``)."""

    async def open_direct(self, room: RoomName, names: Sequence[str]) -> None:
        """Record ``room`` as the direct conversation of ``names`` and make it one
        of each of their rooms (idempotent)."""

    async def participants(self, rooms: Sequence[RoomName]) -> dict[RoomName, frozenset[str]]:
        """The participants of those of ``rooms`` that are direct conversations."""

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        """Where the consumer ``owner`` (a bot's named cursor: ``name`` and the
        cursor's name) stands in ``room``: the seq it has handled up to, or None
        if it never said."""

    async def advance(self, owner: str, room: RoomName, seq: int) -> int:
        """Move ``owner``'s cursor in ``room`` forward to ``seq`` (never back,
        never past the room's latest); where it stands now."""

    async def heads(self) -> dict[RoomName, int]:
        """Every room with entries, with its latest seq (for consumers that look
        for what they have not handled yet: the webhooks, :mod:`app.hooks`)."""

    async def cursors(self, owner: str) -> dict[RoomName, int]:
        """Where ``owner``'s cursor stands in each room it has one in."""

    async def set_cursors(self, owner: str, positions: Mapping[RoomName, int]) -> None:
        """:meth:`advance` ``owner``'s cursor in each room of ``positions``, in one
        step (a new webhook starts at every room's latest)."""

    async def drop_cursors(self, owner: str) -> None:
        """Forget all of ``owner``'s cursors (a webhook deleted)."""

    async def put_record(self, kind: str, key: str, body: dict[str, Any]) -> None:
        """Keep ``body`` (JSON) as the record ``key`` of ``kind``, replacing any.
        Records are the small things the chat keeps by key (webhooks and their
        dead letters, few; files, many: those are read one at a time)."""

    async def records(self, kind: str) -> dict[str, dict[str, Any]]:
        """Every record of ``kind``, by key."""

    async def record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record ``key`` of ``kind``, or None (of kinds with many records:
        a file's, :mod:`app.chat.attachments`)."""

    async def drop_record(self, kind: str, key: str) -> bool:
        """Forget one record; whether there was one."""

    async def drop_records(self, kind: str) -> int:
        """Forget every record of ``kind``; how many there were."""

    async def ping(self) -> None:
        """Return if the backend is usable; raise ``ChatError(UNAVAILABLE)`` if not."""

    async def close(self) -> None:
        """Finish appends already called, then release the backend."""

    def status(self) -> str:
        """The writer's health: "ok", or why it last stopped (it restarts)."""

    def abort(self) -> None:
        """Give up on calls in flight (a shutdown past its deadline): release the
        backend's connections at once, so that calls stuck on them fail now."""


class StoreFactory(Protocol):
    async def __call__(self, url: str) -> MessageStore: ...


async def open_store(url: str) -> MessageStore:
    """Open the store a URL names, e.g. ``sqlite:///data/roomcast.db``."""
    scheme = urlsplit(url).scheme
    module_name = _SCHEMES.get(scheme)
    if module_name is None:
        valid = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unsupported store URL {url!r}: the scheme must be one of {valid}")
    module = importlib.import_module(module_name)
    store: MessageStore = await module.open(url)
    return store


def page_bounds(before: int | None, after: int | None, limit: int) -> None:
    """Check a page query's arguments the same way in every store."""
    if before is not None and after is not None:
        raise ValueError("give before or after, not both")
    if limit < 1:
        raise ValueError("limit must be at least 1")
