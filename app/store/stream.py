"""Writes to rooms' streams, decided the same way in every store.

A room's stream is one sequence of entries numbered 1, 2, 3, ... without
gaps: the messages sent to it (:class:`~app.core.models.Message`) and the
changes made to them (:class:`~app.core.models.Change`: edit, delete, react,
unreact). A change is an entry of its own *and* is applied to the message
row, so that paging back reads messages as they stand now in one indexed
query, while reading on from a seq (recovery) returns every entry after it,
messages and changes, in the order they happened: a client that missed
some gets each exactly once, in order, by the rule it already follows for
messages. (Versioned messages would make history a query for the latest
version of each; a log of changes apart from the messages would need a
second sequence, and recovery would have to merge two.)

Governance actions (:class:`~app.core.models.Action`: create, ban, mute,
...) are entries of the stream too, decided here in the same call order
(:func:`app.core.policy.decide`), and every message and change is checked
against the room's rules as the entries before it in the batch left them
(:func:`app.core.policy.check_post`): a ban at seq N refuses every send
ordered after N. A store loads each governed room's settings and the
standings the batch needs (:func:`standing_keys`) under the same lock that
numbers the entries, and writes back what changed.

A message row holds its reactions in short: per emoji the count and the
first :data:`~app.core.models.REACTION_NAMES_SHOWN` names. Every reactor is
a row of its own (``reactions``: room, seq, emoji, name, and ``at``, the seq
of the change that added it), so a reaction costs the same however many
people reacted before, and an unreaction of a name shown is replaced by the
next one.

A store loads what a batch needs (each room's last seq, entries already
stored under the batch's client ids, the messages the batch refers to, and
for the reactions it changes: whether its senders reacted already, and the
first names), runs its requests through :class:`BatchWriter` in call order,
and writes what it returns: the new entries, the messages changed in place,
the reactor rows and the mention rows (:mod:`app.store.markers`). What a
request may not do is its own :class:`ChatError`, not the batch's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..core.emoji import canonical
from ..core.errors import ChatError, ErrorCode
from ..core.models import (JOIN, REACTION_NAMES_SHOWN, Action, Attachment, Attachments,
                           Change, Entry, Message, Reactions, RoomName)
from ..core.policy import (ACTIONS, MODERATOR, NO_STANDING, Act, RoomSettings, Standing,
                           banned_message, check_post, decide, level)

MAX_EMOJI_PER_MESSAGE = 20  # distinct reactions on one message
REACTIONS = ("react", "unreact")

# the stored row of an entry, in this order, in every store
COLUMNS = "room, seq, kind, sender, text, ts, client_id, target, reply_to, edited, deleted, " \
    "reactions, attachments"
ROW_WIDTH = 13


@dataclass(frozen=True, slots=True)
class Append:
    """A message to store, and the names it mentions (:mod:`app.store.markers`)."""

    room: RoomName
    sender: str
    text: str
    client_id: str | None
    reply_to: int | None = None
    mentions: tuple[str, ...] = ()
    power: int = 0  # the sender's level in every room (app.core.policy)
    attachments: Attachments = ()


@dataclass(frozen=True, slots=True)
class Alter:
    """A change to make to message ``target``: ``kind`` is edit, delete, react
    or unreact; ``value`` the new text or the emoji. A ``moderator`` may
    delete anyone's message; with ``edits_from`` (ms), only messages sent
    since then may be edited."""

    room: RoomName
    sender: str
    kind: str
    target: int
    value: str | None
    client_id: str | None
    moderator: bool = False
    edits_from: int | None = None


@dataclass(frozen=True, slots=True)
class Altered:
    """What a change did: the entry it made (None when it changed nothing, e.g.
    a second reaction of one person with one emoji) and the message as it
    stands after it."""

    change: Change | None
    message: Message
    created: bool  # False: nothing new (a repeat of a client id, or no change)
    removed: Attachments = ()  # what a delete took off the message (its files go too)


@dataclass(frozen=True, slots=True)
class Govern:
    """A governance action (:mod:`app.core.policy`) by ``sender``, whose
    identity gives them ``power`` in every room."""

    room: RoomName
    sender: str
    act: Act
    client_id: str | None
    power: int = 0


@dataclass(frozen=True, slots=True)
class Governed:
    """What an action did: its entry, the room's settings after it, and the
    standing of the person it was on (None: on nobody)."""

    action: Action
    settings: RoomSettings
    standing: Standing | None
    created: bool  # False: a repeat of a client id


Request = Append | Alter | Govern
Result = tuple[Message, bool] | Altered | Governed
Key = tuple[RoomName, int]  # (room, seq)
ClientKey = tuple[RoomName, str, str | None]  # (room, sender, client_id)
ReactionKey = tuple[RoomName, int, str]  # (room, seq, emoji)
Reactor = tuple[RoomName, int, str, str]  # (room, seq, emoji, name)
Mention = tuple[str, RoomName, int]  # (name, room, seq)
StandingKey = tuple[RoomName, str]  # (room, name)


@dataclass(slots=True)
class Reactors:
    """What a store loaded of the reactor rows a batch touches (see
    :func:`reactors_wanted`): ``first`` (reaction key -> the first names, in
    the order they reacted, at least as many as asked) and ``present`` (those
    of the batch's senders who had reacted)."""

    first: dict[ReactionKey, list[str]] = dataclasses.field(default_factory=dict)
    present: set[Reactor] = dataclasses.field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ReactorsWanted:
    """For each reaction key a batch changes, how many first names to load
    (:data:`REACTION_NAMES_SHOWN` and one more per unreaction, so that the
    names shown are known after all of them), and the (key, sender) pairs to
    look up."""

    first: dict[ReactionKey, int]
    senders: list[Reactor]


def timeless(details: dict[str, Any]) -> dict[str, Any]:
    """An action's details but its ``until``, which a retry computes afresh
    from its ``seconds`` (the retry is the same action)."""
    return {k: v for k, v in details.items() if k != "until"}


def client_key(request: Request) -> ClientKey:
    return (request.room, request.sender, request.client_id)


def reactors_wanted(batch: list[Request]) -> ReactorsWanted:
    first: dict[ReactionKey, int] = {}
    senders: set[Reactor] = set()
    for r in batch:
        if isinstance(r, Alter) and r.kind in REACTIONS:
            key = (r.room, r.target, r.value or "")
            first[key] = first.get(key, REACTION_NAMES_SHOWN) + (r.kind == "unreact")
            senders.add((*key, r.sender))
    return ReactorsWanted(first, sorted(senders))


def standing_keys(batch: list[Request], governed: set[RoomName]) -> list[StandingKey]:
    """Whose standing in which room ``batch`` needs: each sender's, and the
    person each action is on, in the rooms that are ``governed`` (an
    ungoverned room has no standings stored)."""
    keys = {(r.room, r.sender) for r in batch if r.room in governed}
    keys |= {(r.room, r.act.user) for r in batch
             if isinstance(r, Govern) and r.act.user is not None and r.room in governed}
    return sorted(keys)


def targets(batch: list[Request]) -> list[Key]:
    """The messages ``batch`` refers to (changed, or replied to)."""
    wanted = {(r.room, r.target) for r in batch if isinstance(r, Alter)}
    wanted |= {(r.room, r.reply_to) for r in batch
               if isinstance(r, Append) and r.reply_to is not None}
    return sorted(wanted)


class BatchWriter:
    """Applies one batch of requests, in call order, to what the store loaded:
    ``heads`` (room -> last seq), ``stored`` (entries under the batch's client
    ids), ``messages`` (the messages the batch refers to that exist),
    ``reactors`` (see :func:`reactors_wanted`), ``settings`` (of the batch's
    rooms that are governed) and ``standings`` (see :func:`standing_keys`;
    one not given has none)."""

    def __init__(self, heads: dict[RoomName, int], stored: dict[ClientKey, Entry],
                 messages: dict[Key, Message], ts: int,
                 reactors: Reactors | None = None,
                 settings: dict[RoomName, RoomSettings] | None = None,
                 standings: dict[StandingKey, Standing] | None = None) -> None:
        self.heads = heads
        self._stored = stored
        self._messages = messages
        self._ts = ts
        self._reactors = reactors or Reactors()
        self._settings = settings if settings is not None else {}
        self._standings = standings if standings is not None else {}
        self._settings_changed: set[RoomName] = set()
        self._standings_changed: set[StandingKey] = set()
        self._new: list[Entry] = []
        self._born: set[Key] = set()  # messages appended in this batch
        self._changed: set[Key] = set()  # messages stored before, changed by it
        self._reacted: dict[Reactor, int | None] = {}  # -> at (added) or None (removed)
        self._cleared: set[Key] = set()  # deleted messages: every reactor row goes
        self._mentions: list[Mention] = []  # of the messages appended

    def apply(self, request: Request) -> Result | ChatError:
        try:
            if isinstance(request, Append):
                return self._append(request)
            if isinstance(request, Govern):
                return self._govern(request)
            return self._alter(request)
        except ChatError as refused:
            return refused

    @property
    def changed_settings(self) -> dict[RoomName, RoomSettings]:
        """The governed rooms whose settings the batch set (or made governed)."""
        return {room: self._settings[room] for room in sorted(self._settings_changed)}

    @property
    def changed_standings(self) -> dict[StandingKey, Standing]:
        """The standings the batch changed (an empty one: delete the row)."""
        return {key: self._standings.get(key, NO_STANDING)
                for key in sorted(self._standings_changed)}

    def _standing(self, room: RoomName, name: str) -> Standing:
        return self._standings.get((room, name), NO_STANDING)

    def _stand(self, room: RoomName, name: str, standing: Standing) -> None:
        if standing != self._standing(room, name):
            self._standings[(room, name)] = standing
            self._standings_changed.add((room, name))

    @property
    def new_entries(self) -> list[Entry]:
        """The entries to insert, in seq order; messages as they stand at the end
        of the batch (one edited within it is inserted edited)."""
        return [self._messages[(e.room, e.seq)] if isinstance(e, Message) else e
                for e in self._new]

    @property
    def changed_messages(self) -> list[Message]:
        """Messages stored before the batch that it changed, to update in place."""
        return [self._messages[key] for key in sorted(self._changed)]

    @property
    def reactor_rows(self) -> tuple[list[Reactor], list[tuple[RoomName, int, str, str, int]],
                                    list[Key]]:
        """The reactor rows to delete, then the ones to insert (with ``at``), then
        the messages whose reactor rows all go (deleted messages)."""
        gone = sorted(self._reacted)
        added = sorted((*r, at) for r, at in self._reacted.items() if at is not None)
        return gone, added, sorted(self._cleared)

    @property
    def mention_rows(self) -> tuple[list[Mention], list[Key]]:
        """The mention rows to insert, then the messages whose mention rows all
        go (deleted messages, whether appended by the batch or before)."""
        cleared = set(self._cleared)
        return ([m for m in self._mentions if (m[1], m[2]) not in cleared],
                sorted(cleared))

    def _next_seq(self, room: RoomName) -> int:
        self.heads[room] = seq = self.heads.get(room, 0) + 1
        return seq

    def _append(self, a: Append) -> tuple[Message, bool]:
        if a.client_id is not None and (stored := self._stored.get(client_key(a))):
            if not isinstance(stored, Message):
                raise ChatError(ErrorCode.BAD_REQUEST,
                                f"client_id {a.client_id!r} already names a change")
            return self._messages.get((a.room, stored.seq), stored), False
        settings = self._settings.get(a.room)
        standing = self._standing(a.room, a.sender)
        check_post(a.room, settings, standing, a.power, self._ts, sending=True)
        if a.reply_to is not None and (a.room, a.reply_to) not in self._messages:
            raise ChatError(ErrorCode.NOT_FOUND, f"there is no message {a.reply_to} in "
                            f"{a.room!r} to reply to")
        if settings is not None and settings.slow:
            self._stand(a.room, a.sender, dataclasses.replace(standing, sent=self._ts))
        seq = self._next_seq(a.room)
        message = Message(a.room, seq, a.sender, a.text, self._ts, a.client_id,
                          reply_to=a.reply_to, attachments=a.attachments)
        self._record(message)
        self._messages[(a.room, seq)] = message
        self._born.add((a.room, seq))
        self._mentions.extend((name, a.room, seq) for name in dict.fromkeys(a.mentions)
                              if name != a.sender)
        return message, True

    def _record(self, entry: Entry) -> None:
        self._new.append(entry)
        if entry.client_id is not None:
            self._stored[(entry.room, entry.sender, entry.client_id)] = entry

    def _alter(self, c: Alter) -> Altered:
        key = (c.room, c.target)
        message = self._messages.get(key)
        if c.client_id is not None and (stored := self._stored.get(client_key(c))):
            if not (isinstance(stored, Change) and (stored.kind, stored.target, stored.value)
                    == (c.kind, c.target, c.value)):
                raise ChatError(ErrorCode.BAD_REQUEST,
                                f"client_id {c.client_id!r} already names another entry")
            assert message is not None  # the change's target exists
            return Altered(stored, message, False)
        if message is None:
            raise ChatError(ErrorCode.NOT_FOUND, f"there is no message {c.target} in {c.room!r}")
        settings = self._settings.get(c.room)
        if settings is not None:
            standing = self._standing(c.room, c.sender)
            power = MODERATOR if c.moderator else 0
            if c.kind == "delete":  # one's own, even muted; anyone's, as a moderator
                if standing.is_banned(self._ts):
                    raise ChatError(ErrorCode.FORBIDDEN, banned_message(c.room, standing))
                if level(standing, power) >= MODERATOR:
                    c = dataclasses.replace(c, moderator=True)
            else:
                check_post(c.room, settings, standing, power, self._ts, sending=False)
        changed = self._changed_message(c, message)
        if changed is None:
            return Altered(None, message, False)
        seq = self._next_seq(c.room)
        count, names = 0, tuple[str, ...]()
        if c.kind in REACTIONS:
            self._reacted[(c.room, c.target, c.value or "", c.sender)] = \
                seq if c.kind == "react" else None
            count, names = next(((n, shown) for e, n, shown in changed.reactions
                                 if e == c.value), (0, ()))
        elif c.kind == "delete":
            self._cleared.add(key)
        change = Change(c.room, seq, c.kind, c.target, c.sender, c.value, self._ts,
                        c.client_id, count, names)
        self._record(change)
        self._messages[key] = changed
        if key not in self._born:
            self._changed.add(key)
        return Altered(change, changed, True,
                       message.attachments if c.kind == "delete" else ())

    def _govern(self, g: Govern) -> Governed:
        act, room = g.act, g.room
        if g.client_id is not None and (stored := self._stored.get(client_key(g))):
            if not isinstance(stored, Action) or stored.kind != act.kind \
                    or timeless(stored.details) != timeless(act.details()):
                raise ChatError(ErrorCode.BAD_REQUEST,
                                f"client_id {g.client_id!r} already names another entry")
            subject = self._standing(room, act.user) if act.user is not None else None
            return Governed(stored, self._settings.get(room, RoomSettings()), subject, False)
        if act.kind == JOIN:  # a first entry: recorded, and it decides nothing
            joined = Action(room, self._next_seq(room), JOIN, g.sender, {}, self._ts,
                            g.client_id)
            self._record(joined)
            return Governed(joined, self._settings.get(room, RoomSettings()), None, True)
        subject = self._standing(room, act.user) if act.user is not None else None
        decided = decide(act, room, self._settings.get(room), self.heads.get(room, 0),
                         g.sender, self._standing(room, g.sender), g.power, subject, self._ts)
        if self._settings.get(room) != decided.settings or room not in self._settings:
            self._settings[room] = decided.settings
            self._settings_changed.add(room)
        self._stand(room, g.sender, decided.actor)
        if act.user is not None and decided.standing is not None:
            self._stand(room, act.user, decided.standing)
        action = Action(room, self._next_seq(room), act.kind, g.sender, act.details(),
                        self._ts, g.client_id)
        self._record(action)
        return Governed(action, decided.settings, decided.standing, True)

    def _changed_message(self, c: Alter, m: Message) -> Message | None:
        """``m`` as ``c`` leaves it; None if ``c`` changes nothing."""
        if c.kind == "delete":
            if c.sender != m.sender and not c.moderator:
                raise ChatError(ErrorCode.FORBIDDEN,
                                "only its sender or a moderator may delete a message")
            if m.deleted:
                return None
            return dataclasses.replace(m, text="", deleted=True, reactions=(), attachments=())
        if m.deleted:
            raise ChatError(ErrorCode.NOT_FOUND, f"message {m.seq} was deleted")
        if c.kind == "edit":
            if c.sender != m.sender:
                raise ChatError(ErrorCode.FORBIDDEN, "only its sender may edit a message")
            if c.edits_from is not None and m.ts < c.edits_from:
                raise ChatError(ErrorCode.FORBIDDEN, "this message is too old to edit")
            if c.value == m.text:
                return None
            assert c.value is not None
            return dataclasses.replace(m, text=c.value, edited=self._ts)
        emoji = c.value or ""
        reactions = {e: n for e, n, _ in m.reactions}
        count = reactions.get(emoji, 0)
        key = (c.room, c.target, emoji)
        first = self._reactors.first.setdefault(key, [])
        if (c.kind == "react") == self._has_reacted((*key, c.sender)):
            return None  # reacted twice, or unreacted what one had not
        if c.kind == "react":
            if not count and len(reactions) >= MAX_EMOJI_PER_MESSAGE:
                raise ChatError(ErrorCode.TOO_LARGE, f"a message takes at most "
                                f"{MAX_EMOJI_PER_MESSAGE} different reactions")
            if len(first) == count:  # every name is known: the new one is next
                first.append(c.sender)
            reactions[emoji] = count + 1
        else:
            if c.sender in first:
                first.remove(c.sender)
            reactions[emoji] = count - 1
        shown = tuple(first[:REACTION_NAMES_SHOWN])
        kept = {e: names for e, _, names in m.reactions}
        return dataclasses.replace(m, reactions=tuple(
            (e, n, shown if e == emoji else kept[e]) for e, n in reactions.items() if n))

    def _has_reacted(self, reactor: Reactor) -> bool:
        if reactor in self._reacted:
            return self._reacted[reactor] is not None
        return reactor in self._reactors.present


# -- rows ------------------------------------------------------------------------


def row(entry: Entry) -> tuple[Any, ...]:
    """``entry`` as the values of :data:`COLUMNS`."""
    if isinstance(entry, Message):
        return (entry.room, entry.seq, "message", entry.sender, entry.text, entry.ts,
                entry.client_id, None, entry.reply_to, entry.edited, int(entry.deleted),
                json.dumps([[e, count, list(n)] for e, count, n in entry.reactions])
                if entry.reactions else None,
                json.dumps([a.stored() for a in entry.attachments])
                if entry.attachments else None)
    if isinstance(entry, Action):
        return (entry.room, entry.seq, entry.kind, entry.sender, json.dumps(entry.details),
                entry.ts, entry.client_id, None, None, None, 0, None, None)
    summary = json.dumps([entry.count, list(entry.names)]) if entry.kind in REACTIONS else None
    return (entry.room, entry.seq, entry.kind, entry.sender, entry.value or "", entry.ts,
            entry.client_id, entry.target, None, None, 0, summary, None)


def entry(values: Any) -> Entry:
    """The entry a row of :data:`COLUMNS` holds (a tuple, list or record)."""
    (room, seq, kind, sender, text, ts, client_id, target, reply_to, edited, deleted,
     reactions, attachments) = tuple(values)
    if kind == "message":
        loaded: Reactions = tuple((e, count, tuple(n)) for e, count, n in json.loads(reactions)) \
            if reactions else ()
        carried = tuple(Attachment.restored(a) for a in json.loads(attachments)) \
            if attachments else ()
        return Message(RoomName(room), seq, sender, text, ts, client_id, reply_to=reply_to,
                       edited=edited, deleted=bool(deleted), reactions=loaded,
                       attachments=carried)
    if kind in ACTIONS or kind == JOIN:
        return Action(RoomName(room), seq, kind, sender, json.loads(text), ts, client_id)
    count, names = json.loads(reactions) if reactions else (0, ())
    return Change(RoomName(room), seq, kind, target, sender, text if kind != "delete" else None,
                  ts, client_id, count, tuple(names))


def retexted(entries: list[Entry]) -> set[Key]:
    """The messages whose text the changes among ``entries`` replaced (edits,
    deletes): what a search index must look at again."""
    return {(e.room, e.target) for e in entries
            if isinstance(e, Change) and e.kind in ("edit", "delete")}


def split(entries: list[Entry]) -> tuple[list[Message], list[Change | Action]]:
    """The messages among ``entries``, and the changes (to messages, and to
    the room: actions)."""
    return ([e for e in entries if isinstance(e, Message)],
            [e for e in entries if not isinstance(e, Message)])


def reactors_of_version_3(room: str, seq: int, reactions: str
                          ) -> tuple[str, list[tuple[str, int, str, str, int]]]:
    """A message's reactions as schema version 3 stored them (every name in the
    row: ``[[emoji, [names]]]``) as the row keeps them now, and its reactor
    rows; ``at`` numbers them before any later change (-n .. -1)."""
    old = json.loads(reactions)
    short = [[e, len(names), names[:REACTION_NAMES_SHOWN]] for e, names in old]
    rows = [(room, seq, e, name, i - len(names)) for e, names in old
            for i, name in enumerate(names)]
    return json.dumps(short), rows


def misspelled(reactions: str) -> bool:
    """Whether a message row's reactions hold an emoji not spelled as
    :func:`~app.core.emoji.canonical` spells it (stored before version 10)."""
    return any(canonical(e) != e for e, _, _ in json.loads(reactions))


def reactions_respelled(room: str, seq: int, reactions: str, reactors: list[tuple[str, str, int]]
                        ) -> tuple[str | None, list[tuple[str, int, str, str, int]]]:
    """Version 9 -> 10: a message's reactions (its row's short form and its
    reactor rows: emoji, name, at) with every emoji spelled canonically;
    spellings of one emoji become one reaction, in order of first use, a
    person counted once, at their first reaction."""
    order = list(dict.fromkeys(canonical(e) for e, _, _ in json.loads(reactions)))
    first: dict[tuple[str, str], int] = {}
    for emoji, name, at in reactors:
        key = (canonical(emoji), name)
        first[key] = min(at, first.get(key, at))
    by_emoji: dict[str, list[tuple[int, str]]] = {e: [] for e in order}
    for (emoji, name), at in sorted(first.items(), key=lambda item: item[1]):
        by_emoji.setdefault(emoji, []).append((at, name))
    short = [[e, len(names), [n for _, n in names[:REACTION_NAMES_SHOWN]]]
             for e, names in by_emoji.items() if names]
    rows = [(room, seq, e, name, at) for e, names in by_emoji.items() for at, name in names]
    return json.dumps(short) if short else None, rows
