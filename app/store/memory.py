"""An in-process store for tests.

Limits: everything is lost when the process exits, and it cannot be shared
between processes, so it must never back a deployment (clients recovering
with ``since`` would see seq numbers start again at 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import ChatError
from ..core.models import (UNREAD_COUNTED, Action, Attachments, Entry, Message, Page, Reading,
                           RoomName, now_ms)
from ..core.policy import ACTIONS, NO_STANDING, Act, RoomSettings, Standing
from . import MessageStore, check_storable, page_bounds
from .markers import RECEIPTS_LISTED, YOUR_ROOMS_LISTED, Mark, MarkerKey, UseClock, fold
from .search import SEARCH_TIMEOUT, SearchPage, decode_cursor, encode_cursor, matches
from .stream import (Alter, Altered, Append, BatchWriter, ClientKey, Govern, Governed, Mention,
                     ReactionKey, Reactors, Request, StandingKey, reactors_wanted, split,
                     standing_keys, targets)


class MemoryStore:
    def __init__(self) -> None:
        # entry seq n at index n - 1; None once retention removed it
        self._rooms: dict[RoomName, list[Entry | None]] = {}
        self._purged: dict[RoomName, int] = {}  # room -> removed up to this seq
        self._by_client_id: dict[ClientKey, Entry] = {}
        self._reactors: dict[ReactionKey, dict[str, int]] = {}  # -> name -> at
        self._markers: dict[MarkerKey, tuple[int, int]] = {}  # -> (seq, at)
        self._mentions: set[Mention] = set()
        self._directs: dict[RoomName, frozenset[str]] = {}
        self._cursors: dict[tuple[str, RoomName], int] = {}  # (owner, room) -> seq
        self._records: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, key) -> body
        self._settings: dict[RoomName, RoomSettings] = {}  # governed rooms
        self._standings: dict[StandingKey, Standing] = {}
        self._used = UseClock()

    async def append(self, room: RoomName, sender: str, text: str, client_id: str | None,
                     reply_to: int | None = None, mentions: Sequence[str] = (), *,
                     power: int = 0, attachments: Attachments = ()) -> tuple[Message, bool]:
        check_storable(sender, text, client_id)
        result = self._write(Append(room, sender, text, client_id, reply_to, tuple(mentions),
                                    power, attachments))
        assert isinstance(result, tuple)
        return result

    async def govern(self, room: RoomName, sender: str, act: Act, client_id: str | None, *,
                     power: int = 0) -> Governed:
        check_storable(sender, act.reason, client_id)
        result = self._write(Govern(room, sender, act, client_id, power))
        assert isinstance(result, Governed)
        return result

    async def alter(self, room: RoomName, sender: str, kind: str, target: int,
                    value: str | None, client_id: str | None, *,
                    moderator: bool = False, edits_from: int | None = None) -> Altered:
        check_storable(sender, value or "", client_id)
        result = self._write(Alter(room, sender, kind, target, value, client_id, moderator,
                                   edits_from))
        assert isinstance(result, Altered)
        return result

    def _write(self, request: Request) -> tuple[Message, bool] | Altered | Governed:
        entries = self._rooms.setdefault(request.room, [])  # (None: removed)
        key = (request.room, request.sender, request.client_id)
        stored = {key: self._by_client_id[key]} if key in self._by_client_id else {}
        messages = {(room, seq): found for room, seq in targets([request])
                    if 0 < seq <= len(entries)
                    and isinstance(found := entries[seq - 1], Message)}
        wanted = reactors_wanted([request])
        reactors = Reactors(
            {key: self._first(key) for key in wanted.first},
            {r for r in wanted.senders if r[3] in self._reactors.get(r[:3], {})})
        settings = {r: self._settings[r] for r in [request.room] if r in self._settings}
        standings = {k: self._standings[k] for k in standing_keys([request], set(settings))
                     if k in self._standings}
        writer = BatchWriter({request.room: len(entries)}, stored, messages, now_ms(), reactors,
                             settings, standings)
        result = writer.apply(request)
        self._settings.update(writer.changed_settings)
        for person, standing in writer.changed_standings.items():
            if standing.empty:
                self._standings.pop(person, None)
            else:
                self._standings[person] = standing
        gone, added, cleared = writer.reactor_rows
        for room, seq, emoji, name in gone:
            self._reactors.get((room, seq, emoji), {}).pop(name, None)
        for room, seq, emoji, name, at in added:
            self._reactors.setdefault((room, seq, emoji), {})[name] = at
        for room, seq in cleared:
            for reaction in [k for k in self._reactors if k[:2] == (room, seq)]:
                del self._reactors[reaction]
        for new in writer.new_entries:
            entries.append(new)
            if new.client_id is not None:
                self._by_client_id[(new.room, new.sender, new.client_id)] = new
        for changed in writer.changed_messages:
            entries[changed.seq - 1] = changed
        mentions, unmentioned = writer.mention_rows
        self._mentions.update(mentions)
        for room, seq in unmentioned:
            self._mentions -= {m for m in self._mentions if m[1:] == (room, seq)}
        if isinstance(result, ChatError):
            raise result
        return result

    def _first(self, key: ReactionKey) -> list[str]:
        """Everyone who reacted ``key``, in the order they did."""
        names = self._reactors.get(key, {})
        return sorted(names, key=names.__getitem__)

    async def page(self, room: RoomName, *, before: int | None = None,
                   after: int | None = None, limit: int = 50) -> Page:
        page_bounds(before, after, limit)
        entries = self._rooms.get(room, [])
        purged = self._purged.get(room, 0)
        if after is not None:  # the stream
            after = max(after, purged)
            chunk = [e for e in entries[after:after + limit] if e is not None]
            more = after + limit < len(entries)
            messages, changes = split(chunk)
            return Page(messages, more, len(entries), changes, purged)
        end = len(entries) if before is None else max(0, min(before - 1, len(entries)))
        older = [e for e in entries[:end] if isinstance(e, Message)]
        return Page(older[-limit:], len(older) > limit, len(entries), purged=purged)

    async def governed(self) -> dict[RoomName, RoomSettings]:
        return dict(self._settings)

    async def purge(self, room: RoomName, before: int, limit: int) -> int:
        entries = self._rooms.get(room, [])
        upto = cut = self._purged.get(room, 0)
        for e in entries[upto:upto + limit]:
            if e is None or e.ts >= before:
                break
            cut = e.seq
        for seq in range(upto + 1, cut + 1):
            gone = entries[seq - 1]
            if not (isinstance(gone, Action) and gone.kind in ACTIONS):  # (the audit log's)
                entries[seq - 1] = None
            for reaction in [k for k in self._reactors if k[:2] == (room, seq)]:
                del self._reactors[reaction]
            self._mentions -= {m for m in self._mentions if m[1:] == (room, seq)}
        self._purged[room] = cut
        return cut - upto

    async def standing(self, room: RoomName, name: str) -> tuple[RoomSettings | None, Standing]:
        return self._settings.get(room), self._standings.get((room, name), NO_STANDING)

    async def rules(self, name: str, rooms: Sequence[RoomName]
                    ) -> dict[RoomName, tuple[RoomSettings, Standing]]:
        return {room: (self._settings[room], self._standings.get((room, name), NO_STANDING))
                for room in rooms if room in self._settings}

    async def standings(self, room: RoomName, limit: int = 1000
                        ) -> tuple[RoomSettings | None, dict[str, Standing]]:
        people = sorted((n, s) for (r, n), s in self._standings.items() if r == room)
        return self._settings.get(room), dict(people[:limit])

    async def actions(self, room: RoomName, *, before: int | None = None,
                      limit: int = 50) -> list[Action]:
        found = [e for e in self._rooms.get(room, []) if isinstance(e, Action)
                 and e.kind in ACTIONS and (before is None or e.seq < before)]
        return found[::-1][:limit]

    async def search(self, rooms: Sequence[RoomName], terms: list[str], *,
                     cursor: str | None = None, limit: int = 20,
                     timeout: float = SEARCH_TIMEOUT) -> SearchPage:
        """(A scan of the rooms, in one step: the memory store is for tests.)"""
        before = decode_cursor(cursor)
        found = sorted((m for room in set(rooms) for m in self._rooms.get(room, [])
                        if isinstance(m, Message) and not m.deleted and terms
                        and matches(m.text, terms) and (m.ts, m.room, m.seq) < before),
                       key=lambda m: (m.ts, m.room, m.seq), reverse=True)
        return SearchPage(found[:limit], [encode_cursor(m) for m in found[:limit]],
                          len(found) > limit)

    async def mark(self, name: str, room: RoomName, seq: int | None = None) -> Reading:
        key = (name, room)
        markers = {key: self._markers[key][0]} if key in self._markers else {}
        (after,) = fold([Mark(name, room, seq)], markers,
                        {room: len(self._rooms.get(room, []))})
        self._markers[key] = (after, self._used())
        return self._reading(name, room)

    def _reading(self, name: str, room: RoomName) -> Reading:
        read = self._markers[(name, room)][0]
        entries = self._rooms.get(room, [])
        unread = [e.seq for e in entries[read:] if isinstance(e, Message)
                  and e.sender != name and not e.deleted]
        mentions = [seq for seq in unread if (name, room, seq) in self._mentions]
        return Reading(room, read, min(len(unread), UNREAD_COUNTED),
                       min(len(mentions), UNREAD_COUNTED), len(entries))

    async def readings(self, name: str, rooms: Sequence[RoomName] | None = None
                       ) -> list[Reading]:
        if rooms is None:
            mine = sorted((r for n, r in self._markers if n == name),
                          key=lambda r: self._markers[(name, r)][1], reverse=True)
            rooms = mine[:YOUR_ROOMS_LISTED]
        return [self._reading(name, room) for room in rooms if (name, room) in self._markers]

    async def receipts(self, room: RoomName) -> list[tuple[str, int]]:
        found = sorted(((n, seq, at) for (n, r), (seq, at) in self._markers.items()
                        if r == room), key=lambda m: (m[1], m[2]), reverse=True)
        return [(n, seq) for n, seq, _ in found[:RECEIPTS_LISTED]]

    async def open_direct(self, room: RoomName, names: Sequence[str]) -> None:
        self._directs[room] = self._directs.get(room, frozenset()) | frozenset(names)
        for name in names:
            self._markers.setdefault((name, room), (len(self._rooms.get(room, [])), self._used()))

    async def participants(self, rooms: Sequence[RoomName]) -> dict[RoomName, frozenset[str]]:
        return {room: self._directs[room] for room in rooms if room in self._directs}

    async def cursor(self, owner: str, room: RoomName) -> int | None:
        return self._cursors.get((owner, room))

    async def advance(self, owner: str, room: RoomName, seq: int) -> int:
        latest = len(self._rooms.get(room, []))
        now = max(self._cursors.get((owner, room), 0), min(seq, latest))
        self._cursors[(owner, room)] = now
        return now

    async def heads(self) -> dict[RoomName, int]:
        return {room: len(entries) for room, entries in self._rooms.items() if entries}

    async def cursors(self, owner: str) -> dict[RoomName, int]:
        return {room: seq for (o, room), seq in self._cursors.items() if o == owner}

    async def set_cursors(self, owner: str, positions: Mapping[RoomName, int]) -> None:
        for room, seq in positions.items():
            await self.advance(owner, room, seq)

    async def drop_cursors(self, owner: str) -> None:
        for key in [key for key in self._cursors if key[0] == owner]:
            del self._cursors[key]

    async def put_record(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self._records[(kind, key)] = json.loads(json.dumps(body))  # a copy, as stored

    async def records(self, kind: str) -> dict[str, dict[str, Any]]:
        return {key: json.loads(json.dumps(body))
                for (k, key), body in self._records.items() if k == kind}

    async def record(self, kind: str, key: str) -> dict[str, Any] | None:
        body = self._records.get((kind, key))
        return None if body is None else dict(json.loads(json.dumps(body)))

    async def drop_record(self, kind: str, key: str) -> bool:
        return self._records.pop((kind, key), None) is not None

    async def drop_records(self, kind: str) -> int:
        gone = [key for key in self._records if key[0] == kind]
        for key in gone:
            del self._records[key]
        return len(gone)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def abort(self) -> None:
        return None

    def status(self) -> str:
        return "ok"


async def open(url: str) -> MessageStore:  # noqa: A001 - the factory every store module has
    return MemoryStore()
