"""A webhook: what it subscribes to, what a delivery carries, how it is signed.

Pure: no I/O. :mod:`app.hooks.delivery` sends what this module makes.

A delivery is one POST of a JSON body holding events of one or more rooms,
each room's consecutive and in the room's order::

    {"webhook": "wh_…",
     "events": [{"id": "ops:41", "type": "message", "message": {…}},
                {"id": "ops:42", "type": "change", "change": {…}},
                {"id": "lobby:7", "type": "message", "message": {…}}]}

``message`` and ``change`` have the shapes of the socket events of those names
(docs/protocol.md). An event's ``id`` is its room and seq: the same on every
retry and after any restart, so a receiver drops a repeat by it (or by keeping
each room's last seq: events of a room arrive in order). A message that
mentions the webhook's ``mention`` name has ``"mention": true``.

The signature (header ``Roomcast-Signature``) is ``t=<unix seconds>,v1=<hex>``,
the hex being HMAC-SHA256, keyed with the webhook's secret, of the bytes
``<t>.`` followed by the body; :func:`verify` is the receiver's check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from ..chat.mentions import mentioned
from ..core.errors import ChatError, ErrorCode
from ..core.models import JOIN, Action, Entry, Message, RoomName

EVENTS = {
    "messages": "every new message",
    "changes": "every change to a message (edits, deletions, reactions) and to the room "
               "(governance actions)",
    "mentions": "the messages that mention the webhook's mention name",
    "joins": "each person's first entry to a room (recorded with --record-joins)",
}
DEFAULT_EVENTS = ("messages", "changes")
MAX_PATTERNS = 20
MAX_URL = 2000
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept a signature's time within
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:*?-]{1,64}")


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    url: str
    rooms: tuple[str, ...]  # patterns (``*`` any, ``builds-*``, ``ops``)
    events: frozenset[str]
    mention: str | None
    secret: str
    created: int  # ms
    within: tuple[str, ...] = ("*",)  # the patterns of the key that made it

    @property
    def owner(self) -> str:
        """The store's key of this webhook's cursors (a bot's have a newline)."""
        return f"webhook:{self.id}"

    def admits(self, room: RoomName) -> bool:
        """Whether events of ``room`` are for this webhook (its patterns and its
        maker's both match)."""
        return (any(fnmatchcase(room, p) for p in self.rooms)
                and any(fnmatchcase(room, p) for p in self.within))

    def mentions(self, entry: Entry) -> bool:
        return (self.mention is not None and isinstance(entry, Message)
                and self.mention in mentioned(entry.text, entry.sender))

    def wants(self, entry: Entry) -> bool:
        if isinstance(entry, Action) and entry.kind == JOIN:
            return "joins" in self.events
        if not isinstance(entry, Message):  # a change to a message, or to the room
            return "changes" in self.events
        return "messages" in self.events or ("mentions" in self.events
                                             and self.mentions(entry))

    def event(self, entry: Entry) -> dict[str, Any]:
        """The delivered form of one entry."""
        kind = "message" if isinstance(entry, Message) else "change"
        event: dict[str, Any] = {"id": f"{entry.room}:{entry.seq}", "type": kind,
                                 kind: entry.as_dict()}
        if self.mentions(entry):
            event["mention"] = True
        return event

    def as_dict(self, *, secret: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {"id": self.id, "url": self.url, "rooms": list(self.rooms),
                                 "events": sorted(self.events), "mention": self.mention,
                                 "created": self.created, "within": list(self.within)}
        if secret:
            shown["secret"] = self.secret
        return shown

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Webhook:
        return cls(data["id"], data["url"], tuple(data["rooms"]), frozenset(data["events"]),
                   data.get("mention"), data["secret"], int(data["created"]),
                   tuple(data.get("within", ["*"])))


def new_webhook(url: str, rooms: list[str], events: list[str], mention: str | None,
                within: tuple[str, ...], now: int) -> Webhook:
    """A webhook with a fresh id and secret; ``bad_request`` saying what is wrong."""
    try:  # (printable ASCII: a name of another script goes in its IDNA form)
        parts = urlsplit(url) if url.isascii() and url.isprintable() and " " not in url \
            else None
        hostname = parts.hostname if parts is not None else None
        _ = parts.port if parts is not None else None  # (raises for a bad port)
    except ValueError:  # (a bracket that opens no IPv6 address, a bad port)
        parts = hostname = None
    if parts is None or parts.scheme not in ("http", "https") or not hostname \
            or len(url) > MAX_URL:
        raise ChatError(ErrorCode.BAD_REQUEST, "url must be an http:// or https:// URL of "
                        f"at most {MAX_URL} printable ASCII characters")
    if not 1 <= len(rooms) <= MAX_PATTERNS or not all(_PATTERN_RE.fullmatch(p) for p in rooms):
        raise ChatError(ErrorCode.BAD_REQUEST, f"rooms must be 1 to {MAX_PATTERNS} room "
                        "names or patterns (* and ?)")
    chosen = frozenset(events or DEFAULT_EVENTS)
    if not chosen <= EVENTS.keys():
        raise ChatError(ErrorCode.BAD_REQUEST, f"events must be some of {', '.join(EVENTS)}")
    if mention is not None and (not mention.strip() or not mention.isprintable()
                                or not is_utf8(mention)):
        raise ChatError(ErrorCode.BAD_REQUEST, "mention must be a person's name")
    if ("mentions" in chosen) != (mention is not None):
        raise ChatError(ErrorCode.BAD_REQUEST, "give a mention name with the mentions "
                        "events, and only with them")
    return Webhook("wh_" + secrets.token_hex(8), url, tuple(rooms), chosen, mention,
                   "whsec_" + secrets.token_urlsafe(32), now, within)


def gone_event(room: RoomName, gone: dict[str, Any]) -> dict[str, Any]:
    """The event saying that retention removed a room's entries ``from`` ..
    ``to`` before the webhook delivered them (``why``: "retention"); its id
    names the span, so a repeat is known like any event's."""
    return {"id": f"{room}:{gone['from']}-{gone['to']}", "type": "gone",
            "gone": {"room": room, **gone}}


def encode(event: dict[str, Any]) -> bytes:
    """One event as it goes in a delivery's body."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def is_utf8(text: str) -> bool:
    """No lone surrogate (what JSON may carry and no store can hold)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def body(hook: Webhook, events: list[bytes]) -> bytes:
    """A delivery's body, of events encoded already (:func:`encode`): the same
    entry's event is encoded once for every webhook that delivers it."""
    return b'{"webhook":"' + hook.id.encode() + b'","events":[' + b",".join(events) + b"]}"


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The ``Roomcast-Signature`` header of ``payload`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, payload: bytes, now: float,
           tolerance: float = SIGNATURE_TOLERANCE) -> bool:
    """A receiver's check: the signature is the secret's, over this body, and
    its time is within ``tolerance`` seconds of ``now``."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, payload).rpartition("v1=")[2]
    return (abs(now - timestamp) <= tolerance
            and hmac.compare_digest(expected, fields.get("v1", "")))


def backoff(failures: int, least: float, most: float, rng: random.Random) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: exponential
    from ``least``, capped at ``most``, with full jitter (a random share of it,
    at least ``least / 2``, so that failing webhooks do not retry in step)."""
    ceiling = min(most, least * 2 ** min(failures - 1, 30))
    return max(least / 2, rng.uniform(0, ceiling))
