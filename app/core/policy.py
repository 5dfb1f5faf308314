"""Who may do what in a room, decided without any I/O.

A room is *ungoverned* until its first action: anyone the token admits may
join it and send, as before governance existed. Its first action (usually
``create``, by the person who becomes its owner) makes it *governed*: it
then has :class:`RoomSettings` and each person a :class:`Standing` in it
(a role, a ban, a mute, when they last sent). Both are kept by the store
beside the room's stream, and every action is an entry of that stream
(:class:`~app.core.models.Action`), decided by :func:`decide` in the same
order as the messages: a ban stored at seq N refuses every send the store
orders after N, on every node.

Power is a level: owner (3) > moderator (2) > member (1) > anyone (0). A
person's level in a room is their role's, or more if their identity gives
them more everywhere (a token's ``moderator`` claim, an API key's scope).
One acts on another only from a higher level; an owner may act on other
owners (never on themself, so a room always keeps one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .errors import ChatError, ErrorCode
from .models import RoomName

ROLES = ("member", "moderator", "owner")
ANYONE, MEMBER, MODERATOR, OWNER = 0, 1, 2, 3
LEVELS = {None: ANYONE, "member": MEMBER, "moderator": MODERATOR, "owner": OWNER}

ACTIONS = ("create", "configure", "role", "remove", "ban", "unban", "mute", "unmute")
ON_A_PERSON = frozenset({"role", "remove", "ban", "unban", "mute", "unmute"})
# the actions after which the person is no longer in the room
SENDS_OUT = frozenset({"remove", "ban"})

TOPIC_MAX = 300  # characters
REASON_MAX = 300
SLOW_MAX = 6 * 3600  # seconds between one person's messages in slow mode
RETENTION_MAX = 100 * 366 * 86400  # seconds a room's entries may be kept, at most
OWNERS_SETTINGS = frozenset({"private", "retention"})  # who may join, what is kept
MUTE_MAX = 366 * 86400 * 1000  # ms
FOREVER = 2**53 - 1  # a ban's ``until`` that never comes


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """A governed room's settings: ``private`` (only its members may join),
    ``topic``, ``slow`` (seconds between one person's messages; 0: off),
    ``locked`` (read-only: only moderators and owners may send) and
    ``retention`` (seconds its entries are kept; 0: the server's)."""

    private: bool = False
    topic: str = ""
    slow: int = 0
    locked: bool = False
    retention: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"private": self.private, "topic": self.topic, "slow": self.slow,
                "locked": self.locked, "retention": self.retention}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomSettings:
        return cls(bool(data.get("private", False)), str(data.get("topic", "")),
                   int(data.get("slow", 0)), bool(data.get("locked", False)),
                   int(data.get("retention", 0)))


@dataclass(frozen=True, slots=True)
class Standing:
    """A person's standing in a governed room: ``role`` (None: none),
    ``banned`` and ``muted`` (until when, ms; None: not), ``sent`` (when they
    last sent, ms: kept while the room is in slow mode)."""

    role: str | None = None
    banned: int | None = None
    muted: int | None = None
    sent: int | None = None

    def is_banned(self, now: int) -> bool:
        return self.banned is not None and self.banned > now

    def is_muted(self, now: int) -> bool:
        return self.muted is not None and self.muted > now

    @property
    def empty(self) -> bool:
        return self == NO_STANDING

    def as_dict(self, now: int) -> dict[str, Any]:
        """What a person is told of their own standing (what is in force)."""
        shown: dict[str, Any] = {"role": self.role}
        if self.is_banned(now):
            shown["banned"] = None if self.banned == FOREVER else self.banned
        if self.is_muted(now):
            shown["muted"] = self.muted
        return shown


NO_STANDING = Standing()


@dataclass(frozen=True, slots=True)
class Act:
    """An action asked for: ``kind`` (one of :data:`ACTIONS`), the person it
    is on (``user``), and what it sets: ``role``, ``until`` (ms; a ban's
    None is forever), ``reason``, and for create and configure the settings
    named in ``settings`` (only those change)."""

    kind: str
    user: str | None = None
    role: str | None = None
    until: int | None = None
    reason: str = ""
    settings: tuple[tuple[str, Any], ...] = ()

    def details(self) -> dict[str, Any]:
        """What the stream keeps of it (besides who did it and when)."""
        kept: dict[str, Any] = {}
        if self.user is not None:
            kept["user"] = self.user
        if self.kind == "role":
            kept["role"] = self.role
        if self.kind in ("ban", "mute"):
            kept["until"] = self.until
        if self.reason:
            kept["reason"] = self.reason
        if self.settings:
            kept["settings"] = dict(self.settings)
        return kept


@dataclass(frozen=True, slots=True)
class Decided:
    """What an action leaves: the room's settings and the person's standing."""

    settings: RoomSettings
    standing: Standing | None  # the person acted on (None: no person)
    actor: Standing  # the actor's (create makes them owner)


def level(standing: Standing, power: int) -> int:
    """A person's level in a room: their role's, or ``power`` (what their
    identity gives them everywhere) if that is more."""
    return max(LEVELS.get(standing.role, ANYONE), power)


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _forbidden(message: str) -> ChatError:
    return ChatError(ErrorCode.FORBIDDEN, message)


def decide(act: Act, room: RoomName, settings: RoomSettings | None, head: int,
           actor: str, actor_standing: Standing, power: int,
           subject: Standing | None, now: int) -> Decided:
    """The outcome of ``act`` by ``actor`` (whose identity gives ``power``) in
    ``room``, whose settings are ``settings`` (None: ungoverned) and whose
    stream ends at ``head``; raises :class:`ChatError` to refuse it."""
    mine = level(actor_standing, power)
    if act.kind == "create":
        if settings is not None or head:
            raise ChatError(ErrorCode.CONFLICT, f"{room!r} exists already")
        made = dataclasses.replace(RoomSettings(), **dict(act.settings))
        return Decided(made, None, dataclasses.replace(actor_standing, role="owner"))
    current = settings if settings is not None else RoomSettings()
    if act.kind == "configure":
        need = OWNER if any(k in OWNERS_SETTINGS for k, _ in act.settings) else MODERATOR
        if mine < need:
            who, what = ("an owner", "who may join or what is kept") if need == OWNER else \
                ("a moderator", "these settings")
            raise _forbidden(f"only {who} may change {what} in {room!r}")
        return Decided(dataclasses.replace(current, **dict(act.settings)), None,
                       actor_standing)
    assert act.user is not None and subject is not None
    if mine < MODERATOR:
        raise _forbidden(f"only a moderator or an owner of {room!r} may {act.kind} people")
    if act.user == actor:
        raise _forbidden(f"you cannot {act.kind} yourself")
    theirs = level(subject, ANYONE)
    if theirs >= mine and mine < OWNER:
        raise _forbidden(f"{act.user!r} is a {subject.role} of {room!r}, as high as you")
    changed = subject
    if act.kind == "role":
        wanted = LEVELS[act.role]
        if wanted >= MODERATOR and mine < OWNER:
            raise _forbidden(f"only an owner may make someone a {act.role}")
        changed = dataclasses.replace(subject, role=act.role)
    elif act.kind == "remove":  # out now; out of a private room's members too
        changed = dataclasses.replace(subject, role=None) if current.private else subject
    elif act.kind == "ban":
        changed = dataclasses.replace(subject, role=None,
                                      banned=FOREVER if act.until is None else act.until)
    elif act.kind == "unban":
        changed = dataclasses.replace(subject, banned=None)
    elif act.kind == "mute":
        changed = dataclasses.replace(subject, muted=act.until)
    elif act.kind == "unmute":
        changed = dataclasses.replace(subject, muted=None)
    return Decided(current, changed, actor_standing)


def check_post(room: RoomName, settings: RoomSettings | None, standing: Standing,
               power: int, now: int, *, sending: bool) -> None:
    """Refuse a message (``sending``) or a change to one (edit, react) that
    ``room``'s rules forbid its sender now."""
    if settings is None:
        return
    if standing.is_banned(now):
        raise _forbidden(banned_message(room, standing))
    mine = level(standing, power)
    if settings.private and mine < MEMBER:
        raise _forbidden(f"{room!r} is private and you are not one of its members")
    if standing.is_muted(now):
        assert standing.muted is not None
        raise _forbidden(f"you are muted in {room!r} until {when(standing.muted)}")
    if settings.locked and mine < MODERATOR:
        raise _forbidden(f"{room!r} is read-only")
    if sending and settings.slow and mine < MODERATOR and standing.sent is not None:
        wait = standing.sent + settings.slow * 1000 - now
        if wait > 0:
            raise ChatError(ErrorCode.RATE_LIMITED, f"{room!r} is in slow mode: one message "
                            f"every {settings.slow} s; try again in {wait} ms",
                            retry_after=wait)


def check_join(room: RoomName, settings: RoomSettings | None, standing: Standing,
               power: int, now: int) -> None:
    """Refuse a join (or a read) that ``room``'s rules forbid now."""
    if settings is None:
        return
    if standing.is_banned(now):
        raise _forbidden(banned_message(room, standing))
    if settings.private and level(standing, power) < MEMBER:
        raise _forbidden(f"{room!r} is private: an owner or a moderator must add you")


def admits(room: RoomName, settings: RoomSettings | None, standing: Standing, power: int,
           now: int) -> bool:
    """Whether ``room``'s rules let the person join it now."""
    try:
        check_join(room, settings, standing, power, now)
    except ChatError:
        return False
    return True


def banned_message(room: RoomName, standing: Standing) -> str:
    assert standing.banned is not None
    if standing.banned == FOREVER:
        return f"you are banned from {room!r}"
    return f"you are banned from {room!r} until {when(standing.banned)}"
