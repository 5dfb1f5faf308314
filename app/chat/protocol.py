"""The ``/chat`` event protocol's payloads, parsed without any I/O.

Each ``parse_*`` function takes whatever a client sent (any msgpack or JSON
value, or ``None`` when it sent nothing) and returns a frozen request, or
raises :class:`ChatError` with ``bad_request`` (or ``too_large`` for text over
the limit, ``bad_name`` for a refused display name). Unknown keys are ignored
so that newer clients can talk to older servers. See ``docs/protocol.md``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from ..core.emoji import canonical
from ..core.errors import ChatError, ErrorCode
from ..core.models import SERVER_CLIENT_IDS, RoomName
from ..core.policy import MUTE_MAX, REASON_MAX, RETENTION_MAX, ROLES, SLOW_MAX, TOPIC_MAX
from .mentions import NAME_MAX
from ..store.search import check_terms, terms

ROOM_MAX = 64
CLIENT_ID_MAX = 64
JOIN_LATEST = 50  # messages in a join ack without ``since``
JOIN_SINCE_MAX = 500  # messages in a join ack with ``since``
HISTORY_DEFAULT = 50
HISTORY_MAX = 200

_ROOM_RE = re.compile(r"[A-Za-z0-9_.:-]{1,%d}" % ROOM_MAX)
CURSOR_NAME_MAX = 64  # characters of a consumer's cursor's name (join, advance)
_CURSOR_NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,%d}" % CURSOR_NAME_MAX)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    room: RoomName
    since: int | None
    cursor: str | None = None  # a consumer's named cursor: read on from where it stands
    invite: str | None = None  # a private room's invite: makes the joiner a member


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    room: RoomName


@dataclass(frozen=True, slots=True)
class SendRequest:
    room: RoomName
    text: str
    client_id: str | None
    reply_to: int | None = None
    attachments: tuple[str, ...] = ()  # ids of uploads of the sender's (app.chat.attachments)


ATTACHMENTS_MAX = 10  # files in one message
FILE_ID_MAX = 64
FILE_NAME_MAX = 255  # characters of an uploaded file's name
_FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,%d}" % FILE_ID_MAX)


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """A file to upload to ``room``: its name and size (bytes)."""

    room: RoomName
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class FilesRequest:
    """Links to files of ``room``."""

    room: RoomName
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """edit, delete, react or unreact of message ``seq``; ``value`` is the new
    text or the emoji."""

    room: RoomName
    kind: str
    seq: int
    value: str | None
    client_id: str | None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    room: RoomName
    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class MembersRequest:
    room: RoomName
    cursor: str | None  # an earlier page's members_next
    limit: int


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    terms: list[str]  # its words, case-folded (app.store.search)
    room: RoomName | None  # None: every room the connection has joined
    cursor: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class TypingRequest:
    room: RoomName
    active: bool


@dataclass(frozen=True, slots=True)
class RoomsRequest:
    pass


@dataclass(frozen=True, slots=True)
class RenewRequest:
    token: str


@dataclass(frozen=True, slots=True)
class ReadRequest:
    room: RoomName
    seq: int


@dataclass(frozen=True, slots=True)
class AdvanceRequest:
    """A consumer has handled ``room``'s stream up to ``seq`` (its cursor)."""

    room: RoomName
    cursor: str
    seq: int


@dataclass(frozen=True, slots=True)
class DirectRequest:
    people: tuple[str, ...]  # the others, without duplicates, in the order given


TOKEN_MAX = 8192  # characters of a token sent with renew


def _bad(message: str) -> ChatError:
    return ChatError(ErrorCode.BAD_REQUEST, message)


def _utf8(value: str, what: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> str:
    # JSON can carry lone surrogates ("\ud800"); they cannot be stored or re-sent.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatError(code, f"{what} is not valid Unicode text") from None
    if "\x00" in value:  # PostgreSQL's text cannot hold it: no store takes it
        raise ChatError(code, f"{what} may not hold U+0000 (NUL)")
    return value


def _payload(data: object) -> dict[Any, Any]:
    if not isinstance(data, dict):
        raise _bad("payload must be a map")
    return data


def _room(payload: dict[Any, Any]) -> RoomName:
    room = payload.get("room")
    if not isinstance(room, str):
        raise _bad("room must be a string")
    if not _ROOM_RE.fullmatch(room):
        raise _bad(f"room must be 1 to {ROOM_MAX} letters, digits or _ . : -")
    return RoomName(room)


# The largest seq a request may name: every client (JavaScript's numbers too)
# holds it exactly, and every store's integer column takes it.
MAX_SEQ = 2**53 - 1


def _int(payload: dict[Any, Any], key: str, *, low: int, high: int | None = None,
         default: int | None = None) -> int | None:
    value = payload.get(key)
    if value is None:
        return default
    # bool is an int in Python, never in the protocol
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{key} must be an integer")
    if value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise _bad(f"{key} must be {bound}")
    return value


def parse_name(auth: object) -> str:
    """The display name from the connect ``auth`` map, trimmed and NFC-normalised."""
    name = auth.get("name") if isinstance(auth, dict) else None
    if not isinstance(name, str):
        raise ChatError(ErrorCode.BAD_NAME, 'connect with auth {"name": "..."}')
    name = unicodedata.normalize("NFC", _utf8(name, "name", ErrorCode.BAD_NAME)).strip()
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        raise ChatError(ErrorCode.BAD_NAME,
                        f"name must be 1 to {NAME_MAX} printable characters")
    return name


def _cursor_name(payload: dict[Any, Any]) -> str | None:
    cursor = payload.get("cursor")
    if cursor is not None and (not isinstance(cursor, str)
                               or not _CURSOR_NAME_RE.fullmatch(cursor)):
        raise _bad(f"cursor must be 1 to {CURSOR_NAME_MAX} letters, digits or _ . : -")
    return cursor


INVITE_MAX = 64  # characters of an invite's code


def _invite(payload: dict[Any, Any]) -> str | None:
    invite = payload.get("invite")
    if invite is not None and (not isinstance(invite, str)
                               or not 1 <= len(invite) <= INVITE_MAX or not invite.isascii()):
        raise _bad(f"invite must be an invite's code (1 to {INVITE_MAX} characters)")
    return invite


def parse_join(data: object) -> JoinRequest:
    payload = _payload(data)
    return JoinRequest(_room(payload), _int(payload, "since", low=0, high=MAX_SEQ),
                       _cursor_name(payload), _invite(payload))


def parse_advance(data: object) -> AdvanceRequest:
    payload = _payload(data)
    room, cursor = _room(payload), _cursor_name(payload)
    seq = _int(payload, "seq", low=0, high=MAX_SEQ)
    if cursor is None or seq is None:
        raise _bad("advance needs the cursor's name and the seq handled up to")
    return AdvanceRequest(room, cursor, seq)


def parse_leave(data: object) -> LeaveRequest:
    return LeaveRequest(_room(_payload(data)))


def _text(payload: dict[Any, Any], max_text_length: int) -> str:
    text = payload.get("text")
    if not isinstance(text, str):
        raise _bad("text must be a string")
    if len(text) > max_text_length:
        raise ChatError(ErrorCode.TOO_LARGE,
                        f"text is longer than {max_text_length} characters")
    if not text.strip():
        raise _bad("text must not be empty")
    return _utf8(text, "text")


def _client_id(payload: dict[Any, Any]) -> str | None:
    client_id = payload.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= CLIENT_ID_MAX:
            raise _bad(f"client_id must be a string of 1 to {CLIENT_ID_MAX} characters")
        if client_id.startswith(SERVER_CLIENT_IDS):
            raise _bad(f"client ids starting with {SERVER_CLIENT_IDS!r} are the server's own")
        _utf8(client_id, "client_id")
    return client_id


def parse_send(data: object, *, max_text_length: int) -> SendRequest:
    payload = _payload(data)
    room = _room(payload)
    attachments = _file_ids(payload, "attachments", required=False)
    if attachments and payload.get("text", "") == "":
        text = ""  # a message may be its files alone
    else:
        text = _text(payload, max_text_length)
    return SendRequest(room, text, _client_id(payload),
                       _int(payload, "reply_to", low=1, high=MAX_SEQ), attachments)


def _file_ids(payload: dict[Any, Any], key: str, *, required: bool) -> tuple[str, ...]:
    ids = payload.get(key)
    if ids is None and not required:
        return ()
    if not isinstance(ids, list) or not 1 <= len(ids) <= ATTACHMENTS_MAX or not all(
            isinstance(i, str) and _FILE_ID_RE.fullmatch(i) for i in ids):
        raise _bad(f"{key} must be a list of 1 to {ATTACHMENTS_MAX} file ids (as upload "
                   "answered them)")
    if len(set(ids)) != len(ids):
        raise _bad(f"{key} names a file twice")
    return tuple(ids)


def parse_upload(data: object, *, max_file_bytes: int) -> UploadRequest:
    payload = _payload(data)
    room = _room(payload)
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > FILE_NAME_MAX:
        raise _bad(f"name must be the file's name: 1 to {FILE_NAME_MAX} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name) \
            or "/" in name or "\\" in name:
        raise _bad("name must be a file's name, without control characters or slashes")
    size = _int(payload, "size", low=1)
    if size is None:
        raise _bad("size (the file's, in bytes) is required")
    if size > max_file_bytes:
        raise ChatError(ErrorCode.TOO_LARGE, f"the file is {size:,} bytes; files of at most "
                        f"{max_file_bytes:,} bytes are taken")
    return UploadRequest(room, _utf8(name.strip(), "name"), size)


def parse_files(data: object) -> FilesRequest:
    payload = _payload(data)
    return FilesRequest(_room(payload), _file_ids(payload, "ids", required=True))


def _target(payload: dict[Any, Any]) -> int:
    seq = _int(payload, "seq", low=1, high=MAX_SEQ)
    if seq is None:
        raise _bad("seq (the message's) is required")
    return seq


def parse_edit(data: object, *, max_text_length: int) -> ChangeRequest:
    payload = _payload(data)
    room, seq = _room(payload), _target(payload)
    return ChangeRequest(room, "edit", seq, _text(payload, max_text_length),
                         _client_id(payload))


def parse_delete(data: object) -> ChangeRequest:
    payload = _payload(data)
    room, seq = _room(payload), _target(payload)
    return ChangeRequest(room, "delete", seq, None, _client_id(payload))


EMOJI_MAX = 16  # code points in one reaction (an emoji sequence: ZWJ, modifiers, flags)
# what may follow the first symbol of an emoji sequence
_EMOJI_PARTS = {"So", "Sk", "Mn", "Me"}
_EMOJI_JOINERS = {"\u200d", "\ufe0e", "\ufe0f"} | {chr(c) for c in range(0xE0020, 0xE0080)}


def _emoji(payload: dict[Any, Any]) -> str:
    """One emoji sequence: a symbol (category So), or a keycap (0-9 # * then
    U+FE0F U+20E3), followed only by symbols, modifiers, joiners, variation
    selectors and tags; at most :data:`EMOJI_MAX` code points. It is spelled
    as its fully-qualified form (:func:`app.core.emoji.canonical`), so ``❤``
    and ``❤️`` are one reaction."""
    emoji = payload.get("emoji")
    if isinstance(emoji, str):
        emoji = canonical(emoji)
    if not isinstance(emoji, str) or not 1 <= len(emoji) <= EMOJI_MAX:
        raise _bad(f"emoji must be a string of 1 to {EMOJI_MAX} code points")
    first, rest = emoji[0], emoji[1:]
    keycap = first in "0123456789#*" and rest in ("\ufe0f\u20e3", "\u20e3")
    if not keycap and (unicodedata.category(first) != "So" or any(
            unicodedata.category(c) not in _EMOJI_PARTS and c not in _EMOJI_JOINERS
            for c in rest)):
        raise _bad("emoji must be one emoji (a symbol and its modifiers)")
    return emoji


def parse_reaction(data: object, kind: str) -> ChangeRequest:
    """``react`` or ``unreact``."""
    payload = _payload(data)
    room, seq = _room(payload), _target(payload)
    return ChangeRequest(room, kind, seq, _emoji(payload), _client_id(payload))


def parse_history(data: object) -> HistoryRequest:
    payload = _payload(data)
    room = _room(payload)
    before = _int(payload, "before", low=1, high=MAX_SEQ)
    after = _int(payload, "after", low=0, high=MAX_SEQ)
    if before is not None and after is not None:
        raise _bad("give before or after, not both")
    limit = _int(payload, "limit", low=1, high=HISTORY_MAX, default=HISTORY_DEFAULT)
    assert limit is not None
    return HistoryRequest(room, before, after, limit)


CURSOR_MAX = 200  # characters of a cursor (search's next, members' next)
MEMBERS_DEFAULT = 100  # names in a members page
MEMBERS_MAX = 500


def parse_members(data: object) -> MembersRequest:
    payload = _payload(data)
    room = _room(payload)
    cursor = payload.get("next")
    if cursor is not None and (not isinstance(cursor, str) or not 1 <= len(cursor) <= CURSOR_MAX):
        raise _bad(f"next must be a members_next from an earlier reply (1 to {CURSOR_MAX} "
                   "characters)")
    limit = _int(payload, "limit", low=1, high=MEMBERS_MAX, default=MEMBERS_DEFAULT)
    assert limit is not None
    return MembersRequest(room, cursor, limit)


QUERY_MAX = 200  # characters of a search query
SEARCH_DEFAULT = 20
SEARCH_MAX = 50


def parse_search(data: object) -> SearchRequest:
    payload = _payload(data)
    query = payload.get("query")
    if not isinstance(query, str) or not 1 <= len(query) <= QUERY_MAX:
        raise _bad(f"query must be a string of 1 to {QUERY_MAX} characters")
    room = _room(payload) if payload.get("room") is not None else None
    cursor = payload.get("cursor")
    if cursor is not None and (not isinstance(cursor, str)
                               or not 1 <= len(cursor) <= CURSOR_MAX):
        raise _bad("cursor must be the next value of an earlier search reply")
    limit = _int(payload, "limit", low=1, high=SEARCH_MAX, default=SEARCH_DEFAULT)
    assert limit is not None
    query = _utf8(query, "query")
    wanted = terms(query)
    check_terms(wanted)
    return SearchRequest(query, wanted, room, cursor, limit)


def parse_typing(data: object) -> TypingRequest:
    payload = _payload(data)
    room = _room(payload)
    active = payload.get("active")
    if not isinstance(active, bool):
        raise _bad("active must be true or false")
    return TypingRequest(room, active)


def parse_rooms(data: object) -> RoomsRequest:
    if data is not None and data != {}:
        _payload(data)  # a map with extra keys is fine; anything else is not
    return RoomsRequest()


def parse_renew(data: object) -> RenewRequest:
    token = _payload(data).get("token")
    if not isinstance(token, str) or not 1 <= len(token) <= TOKEN_MAX:
        raise _bad(f"token must be a string of 1 to {TOKEN_MAX} characters")
    return RenewRequest(token)


def parse_read(data: object) -> ReadRequest:
    payload = _payload(data)
    seq = _int(payload, "seq", low=0, high=MAX_SEQ)
    if seq is None:
        raise _bad("seq must be the seq read up to")
    return ReadRequest(_room(payload), seq)


def parse_direct(data: object, *, max_people: int) -> DirectRequest:
    """``{"with": [name, ...]}``: 1 to ``max_people - 1`` other people's names."""
    people = _payload(data).get("with")
    if not isinstance(people, list) or not 1 <= len(people) < max_people:
        raise _bad(f"with must list 1 to {max_people - 1} names")
    names: dict[str, None] = {}
    for name in people:
        try:
            names[parse_name({"name": name})] = None
        except ChatError as exc:
            raise _bad(f"with: {exc.message}") from None
    return DirectRequest(tuple(names))


# -- governance (app.core.policy) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class GovernRequest:
    """An action on ``room``: ``kind`` is one of :data:`~app.core.policy.ACTIONS`;
    ``seconds`` how long a ban or mute lasts (a ban's None: for good)."""

    room: RoomName
    kind: str
    user: str | None = None
    role: str | None = None
    seconds: int | None = None
    reason: str = ""
    settings: tuple[tuple[str, Any], ...] = ()
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRequest:
    room: RoomName
    before: int | None
    limit: int


AUDIT_DEFAULT = 50
AUDIT_MAX = 200
SECONDS_MAX = MUTE_MAX // 1000  # the longest timed ban or mute


def _user(payload: dict[Any, Any]) -> str:
    try:
        return parse_name({"name": payload.get("user")})
    except ChatError:
        raise _bad(f"user must be a name of 1 to {NAME_MAX} printable characters") from None


def _reason(payload: dict[Any, Any]) -> str:
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > REASON_MAX:
        raise _bad(f"reason must be a string of at most {REASON_MAX} characters")
    return _utf8(reason.strip(), "reason")


def _settings(payload: dict[Any, Any], *, creating: bool) -> tuple[tuple[str, Any], ...]:
    """The settings a create or configure names (only those change)."""
    given: dict[str, Any] = {}
    for key in ("private", "locked"):
        if key in payload:
            if not isinstance(payload[key], bool):
                raise _bad(f"{key} must be true or false")
            given[key] = payload[key]
    if "topic" in payload:
        topic = payload["topic"]
        if not isinstance(topic, str) or len(topic) > TOPIC_MAX or (
                topic and not topic.isprintable()):
            raise _bad(f"topic must be at most {TOPIC_MAX} printable characters")
        given["topic"] = _utf8(topic.strip(), "topic")
    if "slow" in payload:
        given["slow"] = _int(payload, "slow", low=0, high=SLOW_MAX)
    if "retention" in payload:
        given["retention"] = _int(payload, "retention", low=0, high=RETENTION_MAX)
    if not given and not creating:
        raise _bad("configure needs at least one of private, topic, slow, locked, retention")
    return tuple(sorted(given.items()))


def parse_govern(kind: str, data: object) -> GovernRequest:
    """Any governance action's payload (``kind`` is the event's name)."""
    payload = _payload(data)
    room, client_id = _room(payload), _client_id(payload)
    if kind in ("create", "configure"):
        return GovernRequest(room, kind, settings=_settings(payload, creating=kind == "create"),
                             client_id=client_id)
    user, reason = _user(payload), _reason(payload)
    role, seconds = None, None
    if kind == "role":
        role = payload.get("role")
        if role is not None and role not in ROLES:
            raise _bad(f"role must be one of {', '.join(ROLES)}, or null (none)")
    elif kind in ("ban", "mute"):
        seconds = _int(payload, "seconds", low=1, high=SECONDS_MAX)
        if kind == "mute" and seconds is None:
            raise _bad("a mute needs seconds (how long it lasts)")
    return GovernRequest(room, kind, user, role, seconds, reason, client_id=client_id)


def parse_room(data: object) -> RoomName:
    return _room(_payload(data))


def parse_audit(data: object) -> AuditRequest:
    payload = _payload(data)
    limit = _int(payload, "limit", low=1, high=AUDIT_MAX, default=AUDIT_DEFAULT)
    assert limit is not None
    return AuditRequest(_room(payload), _int(payload, "before", low=1, high=MAX_SEQ), limit)


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """A report of message ``seq`` (``reason`` may be empty), or with
    ``resolve``, its resolution by a moderator."""

    room: RoomName
    seq: int
    reason: str = ""


def parse_report(data: object) -> ReportRequest:
    payload = _payload(data)
    room, seq = _room(payload), _target(payload)
    return ReportRequest(room, seq, _reason(payload))


@dataclass(frozen=True, slots=True)
class InviteRequest:
    """A new invite to ``room``: for ``seconds`` (None: until revoked), for
    ``uses`` joins (None: any number)."""

    room: RoomName
    seconds: int | None
    uses: int | None


INVITE_USES_MAX = 10_000


def parse_invite(data: object) -> InviteRequest:
    payload = _payload(data)
    return InviteRequest(_room(payload), _int(payload, "seconds", low=1, high=SECONDS_MAX),
                         _int(payload, "uses", low=1, high=INVITE_USES_MAX))


@dataclass(frozen=True, slots=True)
class RevokeRequest:
    room: RoomName
    id: str  # the invite's id, as invites lists it


def parse_revoke(data: object) -> RevokeRequest:
    payload = _payload(data)
    invite = payload.get("id")
    if not isinstance(invite, str) or not 1 <= len(invite) <= INVITE_MAX:
        raise _bad("id must be an invite's id (as invites lists it)")
    return RevokeRequest(_room(payload), invite)
