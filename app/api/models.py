"""The HTTP API's requests and replies, as pydantic models.

They are the one definition of the API's shapes: each handler validates
its path, query and body with them (:mod:`app.api.routes`), and the OpenAPI
document is generated from them (:mod:`app.api.openapi`), so the two
cannot drift. Their bounds are the socket protocol's own constants
(:mod:`app.chat.protocol`); what needs the server's settings (the text's
length) or the store (does that message exist?) is checked by the chat's
services, as for a socket, and refused with the same codes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..chat.directs import MAX_PEOPLE
from ..chat.mentions import NAME_MAX
from ..chat.protocol import (
    AUDIT_DEFAULT, AUDIT_MAX, CLIENT_ID_MAX, CURSOR_MAX, CURSOR_NAME_MAX, EMOJI_MAX,
    HISTORY_DEFAULT, HISTORY_MAX, MAX_SEQ, MEMBERS_DEFAULT, MEMBERS_MAX, QUERY_MAX, ROOM_MAX,
    SEARCH_DEFAULT, SEARCH_MAX,
    SECONDS_MAX, ATTACHMENTS_MAX, FILE_ID_MAX, FILE_NAME_MAX,
)
from ..core.errors import ErrorCode
from ..core.policy import REASON_MAX, RETENTION_MAX, SLOW_MAX, TOPIC_MAX
from ..hooks.webhook import MAX_PATTERNS, MAX_URL

Room = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$", min_length=1, max_length=ROOM_MAX,
                            description="a room's name (a direct conversation's: dm:...)")]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ, description="a message's seq in its room")]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX, description="a person's name")]
ClientId = Annotated[str, Field(min_length=1, max_length=CLIENT_ID_MAX)]
FileId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", min_length=8, max_length=FILE_ID_MAX,
                              description="a file's id, as its upload's grant gave it")]
Emoji = Annotated[str, Field(min_length=1, max_length=EMOJI_MAX,
                             description="one emoji (a symbol and its modifiers)")]


class Strict(BaseModel):
    """A JSON body: types as given (no "1" for 1), unknown fields ignored (as
    on the socket: newer clients talk to older servers)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Query(BaseModel):
    """Query parameters: strings, converted to the field's type."""

    model_config = ConfigDict(extra="ignore")


# -- requests -------------------------------------------------------------------------

class RoomPath(Query):
    room: Room


class MessagePath(RoomPath):
    seq: Seq


class ReactionPath(MessagePath):
    emoji: Emoji


class CursorPath(RoomPath):
    cursor: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$", min_length=1, max_length=CURSOR_NAME_MAX,
                        description="a name of the consumer's choosing")


class PersonPath(Query):
    name: Name


class IdempotencyHeader(Query):
    key: ClientId | None = Field(default=None, alias="Idempotency-Key", description=(
        "the same as client_id (used when the body has none): a retry with it is done once"))


class PostBody(Strict):
    text: str = Field(default="", description="the message (at most --max-text-length "
                                              "characters; longer is too_large); may be empty "
                                              "only with attachments")
    attachments: list[FileId] | None = Field(
        default=None, min_length=1, max_length=ATTACHMENTS_MAX,
        description="files uploaded by the key's identity for this room (grantUpload), "
                    "sent with the message")
    client_id: ClientId | None = Field(default=None, description=(
        "makes a retry safe: a second post with the same client_id (or the same "
        "Idempotency-Key header) returns the stored message and is not broadcast again"))
    reply_to: Seq | None = None


class UploadBody(Strict):
    name: str = Field(min_length=1, max_length=FILE_NAME_MAX, description="the file's name")
    size: int = Field(ge=1, description="its size in bytes (at most --max-file-bytes)")


class FilePath(RoomPath):
    file: FileId


class EditBody(Strict):
    text: str = Field(min_length=1)
    client_id: ClientId | None = None


class HistoryQuery(Query):
    before: Seq | None = Field(default=None, description="messages before this seq (older)")
    after: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = Field(
        default=None, description="the stream after this seq: messages and changes (newer)")
    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX)] = HISTORY_DEFAULT


class SearchQuery(Query):
    q: str = Field(min_length=1, max_length=QUERY_MAX, description="words (prefixes) to find")
    cursor: str | None = Field(default=None, min_length=1, max_length=CURSOR_MAX,
                               description="next, from the previous page")
    limit: Annotated[int, Field(ge=1, le=SEARCH_MAX)] = SEARCH_DEFAULT


class MembersQuery(Query):
    next: str | None = Field(default=None, min_length=1, max_length=CURSOR_MAX,
                             description="next, from the previous page")
    limit: Annotated[int, Field(ge=1, le=MEMBERS_MAX)] = MEMBERS_DEFAULT


class CursorBody(Strict):
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)] = Field(
        description="the seq the consumer has handled the room up to")


class DirectBody(Strict):
    with_: list[Name] = Field(alias="with", min_length=1, max_length=MAX_PEOPLE - 1,
                              description="the other people")


# -- replies --------------------------------------------------------------------------

class ActionBody(Strict):
    kind: Literal["create", "configure", "role", "remove", "ban", "unban", "mute",
                  "unmute"] = Field(description="what to do (docs/protocol.md, Governing rooms)")
    user: Name | None = Field(default=None, description="the person it is on (role, remove, "
                              "ban, unban, mute, unmute)")
    role: Literal["member", "moderator", "owner"] | None = Field(
        default=None, description="role: the role to give; null takes it away")
    seconds: Annotated[int, Field(ge=1, le=SECONDS_MAX)] | None = Field(
        default=None, description="how long a ban (omitted: for good) or a mute lasts")
    reason: str = Field(default="", max_length=REASON_MAX)
    private: bool | None = Field(default=None, description="create, configure (an owner's): "
                                 "only members may join")
    topic: str | None = Field(default=None, max_length=TOPIC_MAX)
    slow: Annotated[int, Field(ge=0, le=SLOW_MAX)] | None = Field(
        default=None, description="seconds between one person's messages; 0: off")
    locked: bool | None = Field(default=None, description="read-only: only moderators and "
                                "owners send")
    retention: Annotated[int, Field(ge=0, le=RETENTION_MAX)] | None = Field(
        default=None, description="create, configure (an owner's): seconds its entries are "
        "kept, at most the server's --retention; 0: the server's")
    client_id: ClientId | None = None


class InviteBody(Strict):
    seconds: Annotated[int, Field(ge=1, le=SECONDS_MAX)] | None = Field(
        default=None, description="how long it works (omitted: until revoked)")
    uses: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None, description="how many joins it lets in (omitted: any number)")


class InvitePath(RoomPath):
    id: str = Field(pattern=r"^[0-9a-f]{1,64}$", description="an invite's id")


class ReasonBody(Strict):
    reason: str = Field(default="", max_length=REASON_MAX)


class AuditQuery(Query):
    before: Seq | None = Field(default=None, description="actions before this seq (older)")
    limit: Annotated[int, Field(ge=1, le=AUDIT_MAX)] = AUDIT_DEFAULT


class Reaction(BaseModel):
    emoji: str
    count: int
    names: list[str]


class Attachment(BaseModel):
    id: str
    name: str
    size: int = Field(description="bytes")
    type: str = Field(description="the media type, read from the file's content")
    width: int | None = Field(default=None, description="an image's, in pixels (upright)")
    height: int | None = None
    thumbnail: bool | None = Field(default=None, description="an image has one (fileLink)")


class Message(BaseModel):
    room: str
    seq: int
    from_: str = Field(alias="from")
    text: str
    ts: int = Field(description="when it was stored, ms since the epoch")
    client_id: str | None
    reply_to: int | None = None
    edited: int | None = None
    deleted: bool | None = None
    reactions: list[Reaction] | None = None
    attachments: list[Attachment] | None = None


class Change(BaseModel):
    room: str
    seq: int
    kind: Literal["edit", "delete", "react", "unreact"]
    target: int
    from_: str = Field(alias="from")
    ts: int
    client_id: str | None
    text: str | None = None
    emoji: str | None = None
    count: int | None = None
    names: list[str] | None = None


class Action(BaseModel):
    """A change to the room (a governance action, or with --record-joins a
    person's first entry, ``join``): an entry of its stream."""

    room: str
    seq: int
    kind: Literal["create", "configure", "role", "remove", "ban", "unban", "mute", "unmute",
                  "join"]
    from_: str = Field(alias="from")
    ts: int
    client_id: str | None
    user: str | None = None
    role: str | None = None
    until: int | None = Field(default=None, description="a ban's or mute's end, ms since the "
                              "epoch (a ban's null: for good)")
    reason: str | None = None
    settings: dict[str, Any] | None = Field(default=None, description="create, configure: "
                                            "the settings it set")


class RoomSettings(BaseModel):
    private: bool
    topic: str
    slow: int
    locked: bool
    retention: int = Field(description="seconds its entries are kept (0: the server's)")


class Standing(BaseModel):
    role: str | None
    banned: int | None = Field(default=None, description="banned until (ms; null: for good); "
                               "absent: not banned")
    muted: int | None = Field(default=None, description="muted until (ms); absent: not muted")


class Ok(BaseModel):
    ok: Literal[True]


class Acted(Ok):
    action: Action
    settings: RoomSettings = Field(description="the room's settings after it")
    standing: Standing | None = Field(default=None, description="the person's standing "
                                      "after it")


class Person(Standing):
    user: str


class RoomInfo(Ok):
    room: str
    governed: bool = Field(description="false: nobody has acted on the room yet")
    settings: RoomSettings | None
    you: Standing = Field(description="where the key's identity stands")
    people: list[Person] = Field(description="to a moderator: everyone with a role, a ban "
                                 "or a mute; to others, the owners and moderators")


class Report(BaseModel):
    room: str
    seq: int
    by: str = Field(description="who reported it")
    reason: str
    ts: int
    from_: str = Field(alias="from", description="the message's sender")
    text: str = Field(description="the message as reported (its first 300 characters)")


class Reported(Ok):
    report: Report


class Reports(Ok):
    room: str
    reports: list[Report] = Field(description="the open reports, oldest first")


class Resolved(Ok):
    room: str
    seq: int
    resolved: int = Field(description="the open reports it closed")
    by: str
    reason: str
    ts: int


class Invite(BaseModel):
    id: str
    room: str
    by: str = Field(description="who made it (joins with it are their role actions)")
    created: int
    expires: int | None
    uses: int | None = Field(description="joins it still lets in (null: any number)")
    code: str | None = Field(default=None, description="the code to join with: only when "
                             "it is made")


class Invited(Ok):
    invite: Invite


class Invites(Ok):
    room: str
    invites: list[Invite]


class Revoked(Ok):
    room: str
    id: str


class Audit(Ok):
    actions: list[Action] = Field(description="newest first")
    more: bool


class Posted(Ok):
    message: Message


class Grant(BaseModel):
    id: str = Field(description="the file's id, once uploaded: send it in attachments")
    url: str = Field(description="the tus 1.0 endpoint to upload to (POST, then PATCH)")
    token: str = Field(description="send as Authorization: Bearer with each tus request")
    expires: int = Field(description="when the grant and an unsent upload expire, ms")


class Granted(Ok):
    upload: Grant


class FileLink(Ok):
    url: str = Field(description="the file, for --file-link-ttl seconds")
    thumbnail: str | None = Field(default=None, description="an image's thumbnail")
    expires: int = Field(description="when the links expire, ms since the epoch")


class Changed(Ok):
    message: Message
    change: Change | None = Field(description="null when nothing changed")


class History(Ok):
    messages: list[Message]
    changes: list[Change | Action] | None = Field(
        default=None, description="reading on (after): changes to messages, and to the room")
    more: bool


class SearchResult(BaseModel):
    message: Message
    marked: list[list[str | bool]] = Field(description="the text in pieces, the matched "
                                                       "words marked")


class SearchReply(Ok):
    results: list[SearchResult]
    next: str | None


class RoomListed(BaseModel):
    name: str
    members: int


class Rooms(Ok):
    rooms: list[RoomListed]


class Members(Ok):
    room: str
    members: list[str] = Field(description="a page of names (every one, in a room of up to "
                                           "--presence-list-max)")
    count: int = Field(description="how many people are in the room")
    next: str | None = Field(description="for the next page (query next); null: no more")


class Direct(Ok):
    room: str
    with_: list[str] = Field(alias="with")


class Cursor(Ok):
    room: str
    cursor: str
    seq: int | None = Field(description="where it stands; null if it never moved")


class Disconnected(Ok):
    name: str


class WebhookBody(Strict):
    url: str = Field(min_length=1, max_length=MAX_URL, pattern=r"^https?://",
                     description="where deliveries are POSTed (http:// or https://)")
    rooms: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*?-]+$", min_length=1,
                                     max_length=ROOM_MAX)]] = Field(
        min_length=1, max_length=MAX_PATTERNS,
        description="room names or patterns (* any, ? one character); only rooms the "
                    "key's own patterns admit too are delivered")
    events: list[Literal["messages", "changes", "mentions", "joins"]] = Field(
        default=["messages", "changes"], max_length=4,
        description="messages: every new message; changes: edits, deletions, reactions "
                    "and governance actions; mentions: the messages that mention the mention "
                    "name; joins: each person's first entry to a room (--record-joins)")
    mention: Name | None = Field(default=None, description="with the mentions events: "
                                 "whose mentions (a bot's name)")


class WebhookPath(Query):
    id: str = Field(pattern=r"^wh_[0-9a-f]{16}$", description="a webhook's id")


class DeadLetterPath(WebhookPath):
    letter: str = Field(min_length=1, max_length=ROOM_MAX + 44,
                        description="a dead letter's id: room:first-last")


class WebhookShown(BaseModel):
    id: str
    url: str
    rooms: list[str]
    events: list[str]
    mention: str | None
    created: int = Field(description="ms since the epoch")
    within: list[str] = Field(description="the room patterns of the key that made it")
    secret: str | None = Field(default=None, description="the signing secret: only in the "
                               "reply that creates the webhook")
    delivering: dict[str, Any] | None = Field(default=None, description=(
        "this node's delivery of it, if this node holds its lease: events delivered, "
        "failures in a row, the last error, rooms pending"))


class WebhookReply(Ok):
    webhook: WebhookShown


class WebhookList(Ok):
    webhooks: list[WebhookShown]


class DeadLetter(BaseModel):
    id: str
    room: str
    first: int
    last: int
    events: int
    attempts: int
    error: str
    at: int = Field(description="when it was given up, ms since the epoch")


class DeadLetters(Ok):
    dead_letters: list[DeadLetter]


class Replayed(Ok):
    events: int = Field(description="events delivered (and acknowledged) again")


class Deleted(Ok):
    id: str


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    retry_after: int | None = Field(default=None, description="ms, with rate_limited")


class Failed(BaseModel):
    ok: Literal[False]
    error: ErrorBody
