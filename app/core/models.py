"""The values that travel between the store, the namespace and clients."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NewType

RoomName = NewType("RoomName", str)
"""A room's name: 1 to 64 ASCII letters, digits and ``_ . : -``."""

Sid = NewType("Sid", str)
"""A Socket.IO session id in the ``/chat`` namespace: one connection."""


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


REACTION_NAMES_SHOWN = 10  # names kept on a message per emoji (the count is exact)

Reactions = tuple[tuple[str, int, tuple[str, ...]], ...]
"""A message's reactions, in order of first use: (emoji, how many people
reacted with it, the first :data:`REACTION_NAMES_SHOWN` of them in the order
they reacted). The store keeps every reactor apart from the message."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried by a message (:mod:`app.chat.attachments`): its id, the
    name its uploader gave it, its size in bytes, its media type as read from
    its content, and for an image its width and height in pixels and whether
    it has a thumbnail."""

    id: str
    name: str
    size: int
    type: str
    width: int | None = None
    height: int | None = None
    thumbnail: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``{"id", "name", "size", "type"}`` and, for an image, ``width``,
        ``height`` and ``thumbnail``."""
        wire: dict[str, Any] = {"id": self.id, "name": self.name, "size": self.size,
                                "type": self.type}
        if self.width is not None:
            wire.update(width=self.width, height=self.height, thumbnail=self.thumbnail)
        return wire

    def stored(self) -> list[Any]:
        """The compact form a store keeps (see :meth:`restored`)."""
        return [self.id, self.name, self.size, self.type, self.width, self.height,
                self.thumbnail]

    @classmethod
    def restored(cls, values: list[Any]) -> Attachment:
        id, name, size, type, width, height, thumbnail = values
        return cls(id, name, size, type, width, height, bool(thumbnail))


Attachments = tuple[Attachment, ...]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as it stands now: an entry of its room's stream.

    ``seq`` numbers every entry of a room's stream (messages and the changes
    made to them, see :class:`Change`): 1, 2, 3, ... without gaps. An edited
    message has its new text and ``edited`` (when, ms); a deleted one keeps
    its seq with no text (a tombstone)."""

    room: RoomName
    seq: int
    sender: str
    text: str
    ts: int
    client_id: str | None
    reply_to: int | None = None
    edited: int | None = None
    deleted: bool = False
    reactions: Reactions = ()
    attachments: Attachments = ()

    def as_dict(self) -> dict[str, Any]:
        """The wire form: ``{"room", "seq", "from", "text", "ts", "client_id"}``,
        and, only where they apply, ``reply_to``, ``edited``, ``deleted``,
        ``reactions`` (``[{"emoji", "count", "names"}]``, the first
        :data:`REACTION_NAMES_SHOWN` names) and ``attachments``
        (:meth:`Attachment.as_dict`)."""
        wire: dict[str, Any] = {
            "room": self.room,
            "seq": self.seq,
            "from": self.sender,
            "text": self.text,
            "ts": self.ts,
            "client_id": self.client_id,
        }
        if self.reply_to is not None:
            wire["reply_to"] = self.reply_to
        if self.edited is not None:
            wire["edited"] = self.edited
        if self.deleted:
            wire["deleted"] = True
        if self.reactions:
            wire["reactions"] = [{"emoji": emoji, "count": count, "names": list(names)}
                                 for emoji, count, names in self.reactions]
        if self.attachments:
            wire["attachments"] = [a.as_dict() for a in self.attachments]
        return wire


UNREAD_COUNTED = 1000  # unread messages (and mentions) are counted up to this many


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a person stands in a room: ``read`` is their read marker (the seq
    up to which they have read; it only moves forward), ``unread`` the
    messages after it that others sent (deleted ones not counted) and
    ``mentions`` how many of those mention them, each counted up to
    :data:`UNREAD_COUNTED` (that many means "at least"); ``latest`` is the
    room's highest seq."""

    room: RoomName
    read: int
    unread: int
    mentions: int
    latest: int

    def as_dict(self) -> dict[str, Any]:
        """``{"room", "read", "unread", "mentions", "seq"}`` (seq: the room's latest)."""
        return {"room": self.room, "read": self.read, "unread": self.unread,
                "mentions": self.mentions, "seq": self.latest}


CHANGE_KINDS = ("edit", "delete", "react", "unreact")


@dataclass(frozen=True, slots=True)
class Change:
    """A change made to the message ``target``: an entry of the room's stream,
    numbered by ``seq`` like messages. ``value`` is the new text (edit) or
    the emoji (react, unreact); ``sender`` is who made the change. A reaction
    change also says where it left that emoji on the message: ``count``
    people, the first of them ``names`` (so that a client applying changes
    in order ends with exact counts, however many reacted)."""

    room: RoomName
    seq: int
    kind: str
    target: int
    sender: str
    value: str | None
    ts: int
    client_id: str | None
    count: int = 0
    names: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """``{"room", "seq", "kind", "target", "from", "ts", "client_id"}`` and
        ``text`` (edit) or ``emoji``, ``count`` and ``names`` (react, unreact)."""
        wire: dict[str, Any] = {"room": self.room, "seq": self.seq, "kind": self.kind,
                                "target": self.target, "from": self.sender, "ts": self.ts,
                                "client_id": self.client_id}
        if self.kind == "edit":
            wire["text"] = self.value
        elif self.kind in ("react", "unreact"):
            wire.update(emoji=self.value, count=self.count,
                        names=list(self.names[:REACTION_NAMES_SHOWN]))
        return wire


@dataclass(frozen=True, slots=True)
class Action:
    """A change made to the room rather than to a message: a governance
    action (:mod:`app.core.policy`: create, configure, role, remove, ban,
    unban, mute, unmute) or a person's first entry (:data:`JOIN`), an entry
    of the room's stream numbered like the rest. ``sender`` is who did it;
    ``details`` what it did (``user``: to whom, ``role``, ``until``,
    ``reason``, ``settings``)."""

    room: RoomName
    seq: int
    kind: str
    sender: str
    details: dict[str, Any]
    ts: int
    client_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """``{"room", "seq", "kind", "from", "ts", "client_id"}`` and the
        details; no ``target`` (that is how a client tells it from a change
        to a message)."""
        return {"room": self.room, "seq": self.seq, "kind": self.kind, "from": self.sender,
                "ts": self.ts, "client_id": self.client_id, **self.details}


Entry = Message | Change | Action

# A person's first entry to a room, recorded (with --record-joins) as an
# Action of this kind, once: its client id is the server's own.
JOIN = "join"
JOIN_CLIENT_ID = "roomcast:join"
SERVER_CLIENT_IDS = "roomcast:"  # the prefix of client ids only the server gives


@dataclass(frozen=True, slots=True)
class Page:
    """A slice of one room's history, ascending by seq.

    ``more`` says whether messages exist beyond the slice in the direction
    the query was paging (older for ``before`` or the latest page, newer for
    ``after``). ``latest`` is the room's highest seq when read (0 if empty).
    Paging back (``before``, or the latest page) gives messages as they stand
    now; reading on (``after``) gives the stream: the messages and the
    changes after that seq (``changes``), with ``more`` counting both.
    """

    messages: list[Message]
    more: bool
    latest: int
    # in a read of the stream (after): the changes to messages and to the room
    changes: list[Change | Action] = field(default_factory=list)
    purged: int = 0  # the entries up to this seq were removed (retention)

    def gone(self, after: int | None) -> dict[str, Any] | None:
        """What a reply of this page says of the removed entries it would have
        held: reading on from ``after`` (None: paging back, when no older
        message is left), ``{"from", "to", "why"}``; None if none."""
        if not self.purged:
            return None
        start = 0 if after is None else after
        if start >= self.purged or (after is None and self.more):
            return None
        return {"from": start + 1, "to": self.purged, "why": "retention"}
