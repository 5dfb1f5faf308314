"""One contract, every store: seq, idempotency, paging, order, durability."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.models import Attachment, Change, Page, RoomName
from app.store import MessageStore
from app.store.search import marked, terms

from ...services import DATABASE_URL
from .conftest import Opener


def edits(page: Page) -> list[Change]:
    """The changes to messages of a read of the stream (there is no action in it)."""
    assert all(isinstance(c, Change) for c in page.changes)
    return [c for c in page.changes if isinstance(c, Change)]


LOBBY = RoomName("lobby")


async def test_seq_starts_at_one_per_room(store: MessageStore) -> None:
    """Each room numbers its messages 1, 2, 3, ... independently."""
    a1, created = await store.append(LOBBY, "alice", "hi", None)
    assert (a1.seq, created, a1.sender, a1.text, a1.client_id) == (1, True, "alice", "hi", None)
    b1, _ = await store.append(RoomName("other"), "bob", "yo", None)
    a2, _ = await store.append(LOBBY, "bob", "hey", None)
    assert (b1.seq, a2.seq) == (1, 2)
    assert a1.ts <= a2.ts


async def test_concurrent_appends_are_gap_free_and_in_call_order(store: MessageStore) -> None:
    """Racing appends get 1..N without gaps, in the order append was called."""
    results = await asyncio.gather(*(store.append(LOBBY, f"u{i % 7}", f"m{i}", None)
                                     for i in range(300)))
    assert [m.seq for m, _ in results] == list(range(1, 301))
    assert [m.text for m, _ in results] == [f"m{i}" for i in range(300)]


async def test_repeated_client_id_returns_the_original(store: MessageStore) -> None:
    """(room, sender, client_id) identifies a send; a repeat is not stored again."""
    first, created = await store.append(LOBBY, "alice", "hi", "c1")
    again, created_again = await store.append(LOBBY, "alice", "hi (retry)", "c1")
    assert created and not created_again
    assert again == first
    other_sender, c2 = await store.append(LOBBY, "bob", "hi", "c1")
    other_room, c3 = await store.append(RoomName("x"), "alice", "hi", "c1")
    assert c2 and c3 and other_sender.seq == 2 and other_room.seq == 1
    page = await store.page(LOBBY)
    assert [m.seq for m in page.messages] == [1, 2]


async def test_repeats_racing_in_one_batch_are_stored_once(store: MessageStore) -> None:
    """The same client_id appended twice at once is stored once."""
    (m1, c1), (m2, c2) = await asyncio.gather(store.append(LOBBY, "a", "x", "dup"),
                                              store.append(LOBBY, "a", "x", "dup"))
    assert (c1, c2) == (True, False) and m1 == m2
    assert (await store.page(LOBBY)).latest == 1


async def test_a_mixed_batch_across_rooms_keeps_every_rule(store: MessageStore) -> None:
    """One burst over many rooms, with and without client ids, some of them repeats of
    messages stored earlier: per-room seq stays gap-free in call order, repeats get
    the stored original (texts of any kind come back intact), nothing is stored twice."""
    texts = ['plain', 'quote " and \\ backslash', "ünïcödé ✓ 🎉", "<b>not html</b>", "x" * 4000]
    earlier = {}
    for r in range(7):
        earlier[r], _ = await store.append(RoomName(f"r{r}"), "alice", texts[r % 5], f"e{r}")
    calls = []
    for i in range(350):
        room = RoomName(f"r{i % 7}")
        if i % 10 == 0:  # a retry of the message stored before the burst
            calls.append(store.append(room, "alice", "retry", f"e{i % 7}"))
        else:
            calls.append(store.append(room, f"u{i % 3}", texts[i % 5],
                                      f"c{i}" if i % 2 else None))
    results = await asyncio.gather(*calls)
    for i, (message, created) in enumerate(results):
        if i % 10 == 0:
            assert (message, created) == (earlier[i % 7], False)
        else:
            assert created and message.text == texts[i % 5]
    for r in range(7):
        seqs = [m.seq for i, (m, c) in enumerate(results) if c and i % 7 == r]
        assert seqs == list(range(2, 2 + len(seqs)))
        page = await store.page(RoomName(f"r{r}"), limit=100)
        assert [m.seq for m in page.messages] == list(range(1, 2 + len(seqs)))


async def test_paging_back_to_the_first_message(store: MessageStore) -> None:
    """Latest page, then before= pages, reach seq 1; after= pages forward."""
    for i in range(1, 121):
        await store.append(LOBBY, "alice", f"m{i}", None)
    page = await store.page(LOBBY, limit=50)
    assert [m.seq for m in page.messages] == list(range(71, 121))
    assert page.more and page.latest == 120
    seen = [m.seq for m in page.messages]
    while page.more:
        page = await store.page(LOBBY, before=seen[0], limit=50)
        seen = [m.seq for m in page.messages] + seen
    assert seen == list(range(1, 121))
    forward = await store.page(LOBBY, after=100, limit=15)
    assert [m.seq for m in forward.messages] == list(range(101, 116)) and forward.more
    tail = await store.page(LOBBY, after=115, limit=15)
    assert [m.seq for m in tail.messages] == list(range(116, 121)) and not tail.more


async def test_empty_and_exact_pages(store: MessageStore) -> None:
    """An empty room has latest 0; a page that ends exactly at the edge has more=False."""
    empty = await store.page(LOBBY)
    assert (empty.messages, empty.more, empty.latest) == ([], False, 0)
    for i in range(3):
        await store.append(LOBBY, "a", str(i), None)
    exact = await store.page(LOBBY, limit=3)
    assert len(exact.messages) == 3 and not exact.more
    assert (await store.page(LOBBY, before=1)).messages == []
    assert (await store.page(LOBBY, after=3)).messages == []


async def test_ping(store: MessageStore) -> None:
    """A usable store answers ping."""
    await store.ping()


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # durable ones
async def test_history_survives_reopening(store_url: str, reopen: Opener) -> None:
    """A durable store keeps messages and seq across a close and reopen."""
    first = await reopen()
    for i in range(3):
        await first.append(LOBBY, "alice", f"m{i}", f"c{i}")
    await first.close()
    second = await reopen()
    page = await second.page(LOBBY)
    assert [m.text for m in page.messages] == ["m0", "m1", "m2"]
    message, created = await second.append(LOBBY, "alice", "m3", None)
    assert message.seq == 4 and created
    _, repeat_created = await second.append(LOBBY, "alice", "again", "c1")
    assert not repeat_created


async def test_close_finishes_appends_already_called(store_url: str, reopen: Opener) -> None:
    """Appends called before close are stored, and their callers get their message."""
    store = await reopen()
    appends = asyncio.gather(*(store.append(LOBBY, "a", f"m{i}", None) for i in range(50)))
    # gather starts its children in order: all 50 appends are called, then close
    results, _ = await asyncio.gather(appends, store.close())
    assert [m.seq for m, _ in results] == list(range(1, 51))


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_two_stores_on_one_database_share_seq(store_url: str, reopen: Opener) -> None:
    """Two stores on one database (two nodes) appending to one room at once get
    gap-free seq between them, and a send retried on the other node is stored once."""
    a, b = await reopen(), await reopen()
    results = await asyncio.gather(*(s.append(LOBBY, f"u{i}", f"m{i}", f"c{i}")
                                     for i in range(200) for s in (a, b)))
    created = [m.seq for m, fresh in results if fresh]
    assert sorted(created) == list(range(1, 201))  # each (sender, client_id) stored once
    page = await b.page(LOBBY, after=0, limit=200)
    assert [m.seq for m in page.messages] == list(range(1, 201))


@pytest.mark.parametrize("field", ["sender", "text", "client_id"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
async def test_what_no_store_can_hold_is_refused_alike(store: MessageStore, field: str,
                                                       bad: str) -> None:
    """U+0000 (PostgreSQL's text refuses it) and lone surrogates are bad_request on
    every store, and an append racing them in the same batch is stored as usual."""
    fields = {"sender": "alice", "text": "hi", "client_id": "c1", field: bad}
    results = await asyncio.gather(
        store.append(LOBBY, "bob", "before", None),
        store.append(LOBBY, fields["sender"], fields["text"], fields["client_id"]),
        store.append(LOBBY, "bob", "after", None), return_exceptions=True)
    refused = results[1]
    assert isinstance(refused, ChatError) and refused.code == ErrorCode.BAD_REQUEST, refused
    assert field in str(refused)
    stored = [r[0] for r in results if isinstance(r, tuple)]
    assert [(m.seq, m.text) for m in stored] == [(1, "before"), (2, "after")]


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_abort_gives_up_at_once_and_keeps_what_was_stored(
        store_url: str, reopen: Opener) -> None:
    """A shutdown past its deadline aborts the store: appends in flight end at
    once (stored, or refused unavailable), close returns, and what was
    acknowledged is there when the store is opened again."""
    store = await reopen()
    for i in range(3):
        await store.append(LOBBY, "a", f"m{i}", None)
    racing = asyncio.gather(*(store.append(LOBBY, "a", f"late{i}", None) for i in range(50)),
                            return_exceptions=True)
    store.abort()
    results = await asyncio.wait_for(racing, 5)
    await asyncio.wait_for(store.close(), 5)
    stored = [r[0].text for r in results if isinstance(r, tuple)]
    refused = [r for r in results if not isinstance(r, tuple)]
    assert all(isinstance(r, ChatError) and r.code is ErrorCode.UNAVAILABLE
               for r in refused), refused
    page = await (await reopen()).page(LOBBY, limit=100)
    assert [m.text for m in page.messages] == ["m0", "m1", "m2", *stored]


# -- changes: entries of the stream, applied to their message --------------------


async def refused(call: Awaitable[object]) -> ErrorCode:
    with pytest.raises(ChatError) as error:
        await call
    return error.value.code


async def test_an_edit_is_an_entry_and_changes_its_message(store: MessageStore) -> None:
    """Only the sender edits; the edit takes the next seq; paging back shows the
    message as it stands (edited, and when), reading on shows the message and
    the edit in order; a retried edit (same client id) applies once."""
    message, _ = await store.append(LOBBY, "alice", "helo", "m1")
    edit = await store.alter(LOBBY, "alice", "edit", message.seq, "hello", "e1")
    assert edit.created and edit.change is not None
    assert (edit.change.seq, edit.change.kind, edit.change.target) == (2, "edit", 1)
    assert (edit.message.text, edit.message.edited) == ("hello", edit.change.ts)
    again = await store.alter(LOBBY, "alice", "edit", message.seq, "hello", "e1")
    assert (again.created, again.change) == (False, edit.change)
    assert await refused(store.alter(LOBBY, "bob", "edit", 1, "mine now", None)) \
        is ErrorCode.FORBIDDEN
    back = await store.page(LOBBY)
    assert [(m.seq, m.text, m.edited) for m in back.messages] == [(1, "hello", edit.change.ts)]
    assert (back.changes, back.latest) == ([], 2)
    on = await store.page(LOBBY, after=0)
    assert [m.seq for m in on.messages] == [1] and on.messages[0].text == "hello"
    assert [(c.seq, c.kind, c.value) for c in edits(on)] == [(2, "edit", "hello")]


async def test_a_delete_leaves_a_tombstone_that_keeps_its_seq(store: MessageStore) -> None:
    """The sender or a moderator deletes; the message keeps its seq with no text
    and no reactions; a deleted message cannot be edited or reacted to; a
    second delete changes nothing."""
    first, _ = await store.append(LOBBY, "alice", "oops", None)
    second, _ = await store.append(LOBBY, "bob", "spam", None)
    await store.alter(LOBBY, "carol", "react", first.seq, "👍", None)
    assert await refused(store.alter(LOBBY, "bob", "delete", first.seq, None, None)) \
        is ErrorCode.FORBIDDEN
    gone = await store.alter(LOBBY, "alice", "delete", first.seq, None, None)
    assert gone.change is not None and gone.change.seq == 4
    assert (gone.message.text, gone.message.deleted, gone.message.reactions) == ("", True, ())
    modded = await store.alter(LOBBY, "mod", "delete", second.seq, None, None, moderator=True)
    assert modded.message.deleted
    repeat = await store.alter(LOBBY, "alice", "delete", first.seq, None, None)
    assert (repeat.change, repeat.created) == (None, False)
    for kind, value in (("edit", "fixed"), ("react", "👍")):
        assert await refused(store.alter(LOBBY, "alice", kind, first.seq, value, None)) \
            is ErrorCode.NOT_FOUND
    page = await store.page(LOBBY)
    assert [(m.seq, m.text, m.deleted) for m in page.messages] == [(1, "", True), (2, "", True)]
    assert page.latest == 5


async def test_reactions_count_each_person_once(store: MessageStore) -> None:
    """A person's second reaction with one emoji changes nothing (no entry);
    names are kept in the order they reacted; unreacting removes one's own,
    the last one removes the emoji; past 20 different emoji: too_large."""
    message, _ = await store.append(LOBBY, "alice", "lunch?", None)
    for name in ("bob", "carol", "bob"):
        await store.alter(LOBBY, name, "react", message.seq, "🍕", None)
    tacos = await store.alter(LOBBY, "bob", "react", message.seq, "🌮", None)
    assert tacos.message.reactions == (("🍕", 2, ("bob", "carol")), ("🌮", 1, ("bob",)))
    nothing = await store.alter(LOBBY, "alice", "unreact", message.seq, "🍕", None)
    assert (nothing.change, nothing.created) == (None, False)
    undone = await store.alter(LOBBY, "bob", "unreact", message.seq, "🌮", None)
    assert undone.message.reactions == (("🍕", 2, ("bob", "carol")),)
    assert undone.change is not None and (undone.change.count, undone.change.names) == (0, ())
    on = await store.page(LOBBY, after=0)
    assert [(c.value, c.count, c.names) for c in edits(on)] == [  # as stored, reread
        ("🍕", 1, ("bob",)), ("🍕", 2, ("bob", "carol")), ("🌮", 1, ("bob",)), ("🌮", 0, ())]
    assert undone.message.as_dict()["reactions"] == [
        {"emoji": "🍕", "count": 2, "names": ["bob", "carol"]}]
    for i in range(19):
        await store.alter(LOBBY, "bob", "react", message.seq, chr(0x1F600 + i), None)
    assert await refused(store.alter(LOBBY, "bob", "react", message.seq, "🙈", None)) \
        is ErrorCode.TOO_LARGE
    on = await store.page(LOBBY, after=0, limit=100)
    assert [c.seq for c in on.changes] == list(range(2, 2 + 2 + 1 + 1 + 19))  # no gap
    assert on.latest == on.changes[-1].seq


async def test_many_reactors_keep_an_exact_count_and_the_first_names(
        store: MessageStore) -> None:
    """However many react, the message carries the exact count and the first 10
    names in the order they reacted; when some of those unreact (together, in
    one batch), the next ones take their places; a person who unreacts and
    reacts again goes to the end; a delete takes every reactor with it."""
    message, _ = await store.append(LOBBY, "alice", "ship it?", None)
    names = [f"p{i:02}" for i in range(30)]
    for name in names[:5]:
        await store.alter(LOBBY, name, "react", message.seq, "👍", None)
    await asyncio.gather(*(store.alter(LOBBY, name, "react", message.seq, "👍", None)
                           for name in names[5:]))
    page = await store.page(LOBBY)
    assert page.messages[0].reactions == (("👍", 30, tuple(names[:10])),)
    undone = await asyncio.gather(*(store.alter(LOBBY, name, "unreact", message.seq, "👍", None)
                                    for name in ("p00", "p03", "p04", "p20")))
    assert [u.change.count for u in undone if u.change] == [29, 28, 27, 26]
    back = await store.alter(LOBBY, "p03", "react", message.seq, "👍", None)
    expected = ("p01", "p02", *names[5:13])
    assert back.message.reactions == (("👍", 27, expected),)
    assert back.change is not None and (back.change.count, back.change.names) == (27, expected)
    again = await store.alter(LOBBY, "p05", "react", message.seq, "👍", None)
    assert (again.change, again.created) == (None, False)
    for name in expected:  # the names shown go; the rest come up in order, p03 last
        left = await store.alter(LOBBY, name, "unreact", message.seq, "👍", None)
    assert left.message.reactions == (("👍", 17, (*names[13:20], *names[21:24])),)
    gone = await store.alter(LOBBY, "alice", "delete", message.seq, None, None)
    assert gone.message.reactions == ()
    later, _ = await store.append(LOBBY, "alice", "and now?", None)
    fresh = await store.alter(LOBBY, "p29", "react", later.seq, "👍", None)
    assert fresh.message.reactions == (("👍", 1, ("p29",)),)


async def test_a_reply_names_a_message_of_its_room(store: MessageStore) -> None:
    question, _ = await store.append(LOBBY, "alice", "who's in?", None)
    edit = await store.alter(LOBBY, "alice", "edit", question.seq, "who is in?", None)
    reply, _ = await store.append(LOBBY, "bob", "me", None, reply_to=question.seq)
    assert reply.reply_to == question.seq and reply.as_dict()["reply_to"] == 1
    assert edit.change is not None
    for target in (edit.change.seq, 99):  # a change is not a message; nor is nothing
        assert await refused(store.append(LOBBY, "bob", "?", None, reply_to=target)) \
            is ErrorCode.NOT_FOUND
    assert await refused(store.append(RoomName("elsewhere"), "bob", "?", None, reply_to=1)) \
        is ErrorCode.NOT_FOUND
    page = await store.page(LOBBY)
    assert [(m.seq, m.reply_to) for m in page.messages] == [(1, None), (3, 1)]


async def test_one_batch_of_sends_and_changes_keeps_call_order(store: MessageStore) -> None:
    """Changes called together with sends (one batch in a batching store) are
    applied in call order, also to a message sent in that same batch, and a
    refused one fails alone."""
    first, _ = await store.append(LOBBY, "alice", "a", None)
    results = await asyncio.gather(
        store.append(LOBBY, "alice", "b", None),
        store.alter(LOBBY, "alice", "edit", first.seq, "a2", None),
        store.alter(LOBBY, "bob", "edit", first.seq, "hijack", None),
        store.alter(LOBBY, "alice", "edit", 2, "b2", None),  # the send just before
        store.alter(LOBBY, "bob", "react", 2, "👀", None),
        return_exceptions=True)
    assert isinstance(results[2], ChatError) and results[2].code is ErrorCode.FORBIDDEN
    page = await store.page(LOBBY)
    assert [(m.seq, m.text, m.reactions) for m in page.messages] == [
        (1, "a2", ()), (2, "b2", (("👀", 1, ("bob",)),))]
    on = await store.page(LOBBY, after=1)
    assert sorted([m.seq for m in on.messages] + [c.seq for c in on.changes]) == [2, 3, 4, 5]
    assert [(c.seq, c.kind, c.target) for c in edits(on)] == [
        (3, "edit", 1), (4, "edit", 2), (5, "react", 2)]


V1_TABLE = """CREATE TABLE messages (room {text} NOT NULL, seq {int} NOT NULL,
    sender {text} NOT NULL, text {text} NOT NULL, ts {int} NOT NULL, client_id {text},
    PRIMARY KEY (room, seq))"""


@contextlib.contextmanager
def sqlite_file(store_url: str) -> Iterator[sqlite3.Connection]:
    """A plain connection to the store's SQLite file, committed at the end."""
    path = Path(urlsplit(store_url).path[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        yield conn
        conn.commit()


@contextlib.asynccontextmanager
async def postgres_schema_of(store_url: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """A plain connection to the store's PostgreSQL database, and its schema."""
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        yield conn, dict(parse_qsl(urlsplit(store_url).query))["schema"]
    finally:
        await conn.close()


async def make_version_1(store_url: str) -> None:
    """A database as Roomcast's first schema left it, with two messages."""
    rows = [("lobby", 1, "alice", "old one", 1, "c1"), ("lobby", 2, "bob", "old two", 2, None)]
    if store_url.startswith("sqlite"):
        with sqlite_file(store_url) as conn:
            conn.execute(V1_TABLE.format(text="TEXT", int="INTEGER") + " WITHOUT ROWID")
            conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.execute("PRAGMA user_version = 1")
        return
    async with postgres_schema_of(store_url) as (pg, schema):
        await pg.execute(f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}";'
                         "CREATE TABLE roomcast_schema (version integer NOT NULL);"
                         "INSERT INTO roomcast_schema VALUES (1);"
                         "CREATE TABLE rooms (room text PRIMARY KEY, head bigint NOT NULL);"
                         "INSERT INTO rooms VALUES ('lobby', 2);"
                         + V1_TABLE.format(text="text", int="bigint"))
        await pg.executemany("INSERT INTO messages VALUES ($1, $2, $3, $4, $5, $6)", rows)


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_version_1_database_is_migrated(store_url: str, reopen: Opener) -> None:
    """Messages stored before changes existed are read as they were, can be
    changed and replied to, and the stream goes on from their seq."""
    await make_version_1(store_url)
    store = await reopen()
    page = await store.page(LOBBY)
    assert [(m.seq, m.text, m.edited, m.reactions) for m in page.messages] == [
        (1, "old one", None, ()), (2, "old two", None, ())]
    edit = await store.alter(LOBBY, "alice", "edit", 1, "new one", None)
    assert edit.change is not None and edit.change.seq == 3
    reply, created = await store.append(LOBBY, "bob", "re", None, reply_to=1)
    assert (reply.seq, reply.reply_to, created) == (4, 1, True)
    _, repeat = await store.append(LOBBY, "alice", "again", "c1")  # its client id still counts
    assert repeat is False
    assert await found(store, ["lobby"], "old") == ["old two"]  # indexed when migrated
    assert await found(store, ["lobby"], "one") == ["new one"]


async def make_version_3(store_url: str, reactions: str) -> None:
    """A database as schema version 3 left it: every reactor's name in the
    message row (the reactions table did not exist)."""
    if store_url.startswith("sqlite"):
        with sqlite_file(store_url) as conn:
            conn.execute("DROP TABLE reactions")
            conn.execute("UPDATE messages SET reactions = ? WHERE seq = 1", (reactions,))
            conn.execute("PRAGMA user_version = 3")
        return
    async with postgres_schema_of(store_url) as (pg, schema):
        await pg.execute(f'SET search_path = "{schema}"; DROP TABLE reactions;'
                         "DELETE FROM roomcast_schema; INSERT INTO roomcast_schema VALUES (3)")
        await pg.execute("UPDATE messages SET reactions = $1 WHERE seq = 1", reactions)


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_version_3_database_keeps_its_reactions(store_url: str, reopen: Opener) -> None:
    """Reactions stored when every name was in the message row keep their
    counts and order; unreacting a name shown brings up the next one."""
    store = await reopen()
    await store.append(LOBBY, "alice", "old", None)
    await store.close()
    names = [f"p{i:02}" for i in range(12)]
    await make_version_3(store_url, json.dumps([["👍", names], ["🎉", ["p05"]]]))
    store = await reopen()
    page = await store.page(LOBBY)
    assert page.messages[0].reactions == (("👍", 12, tuple(names[:10])), ("🎉", 1, ("p05",)))
    again = await store.alter(LOBBY, "p11", "react", 1, "👍", None)
    assert again.change is None  # p11 is known as a reactor, though not shown
    left = await store.alter(LOBBY, "p00", "unreact", 1, "👍", None)
    assert left.message.reactions[0] == ("👍", 11, tuple(names[1:11]))
    new = await store.alter(LOBBY, "p00", "react", 1, "👍", None)
    assert new.change is not None and new.change.seq == 3 and new.change.count == 12


async def make_version(store_url: str, version: int) -> None:
    """Mark a closed store's database as schema ``version`` left it."""
    if store_url.startswith("sqlite"):
        with sqlite_file(store_url) as conn:
            conn.execute(f"PRAGMA user_version = {version}")
        return
    async with postgres_schema_of(store_url) as (pg, schema):
        await pg.execute(f'SET search_path = "{schema}"; DELETE FROM roomcast_schema;'
                         f"INSERT INTO roomcast_schema VALUES ({version})")


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_version_9_database_spells_its_reactions_as_one(
        store_url: str, reopen: Opener) -> None:
    """Reactions stored before emoji were spelled canonically: ❤ and ❤️
    become one reaction (a person reacting with both counted once), in the
    order of first use, and the changes that made them say ❤️ too."""
    heart, plain_heart = "\u2764\ufe0f", "\u2764"
    store = await reopen()
    await store.append(LOBBY, "alice", "old", None)
    for name, emoji in (("alice", plain_heart), ("carol", "👍"), ("bob", heart),
                        ("alice", heart), ("dave", "\u2764\ufe0e")):
        assert (await store.alter(LOBBY, name, "react", 1, emoji, None)).change is not None
    await store.close()
    await make_version(store_url, 9)
    store = await reopen()
    page = await store.page(LOBBY)
    assert page.messages[0].reactions == ((heart, 3, ("alice", "bob", "dave")),
                                          ("👍", 1, ("carol",)))
    changes = (await store.page(LOBBY, after=0)).changes
    assert [c.value for c in changes if isinstance(c, Change)] == [heart, "👍", heart, heart,
                                                                   heart]
    again = await store.alter(LOBBY, "bob", "react", 1, heart, None)
    assert again.change is None  # bob's reaction is known under its new spelling
    gone = await store.alter(LOBBY, "alice", "unreact", 1, heart, None)
    assert gone.message.reactions[0] == (heart, 2, ("bob", "dave"))


async def test_edits_may_be_limited_to_recent_messages(store: MessageStore) -> None:
    """With ``edits_from`` (the start of the edit window, ms), a message sent
    before it cannot be edited; a delete is never limited."""
    message, _ = await store.append(LOBBY, "alice", "typo", None)
    assert await refused(store.alter(LOBBY, "alice", "edit", 1, "fixed", None,
                                     edits_from=message.ts + 1)) is ErrorCode.FORBIDDEN
    fixed = await store.alter(LOBBY, "alice", "edit", 1, "fixed", None, edits_from=message.ts)
    assert fixed.message.text == "fixed"
    gone = await store.alter(LOBBY, "alice", "delete", 1, None, None, edits_from=message.ts + 1)
    assert gone.message.deleted


# -- search -------------------------------------------------------------------


async def found(store: MessageStore, rooms: list[str], query: str, **paging: Any) -> list[str]:
    page = await store.search([RoomName(r) for r in rooms], terms(query), **paging)
    return [m.text for m in page.messages]


async def test_search_finds_words_newest_first_in_the_rooms_given(store: MessageStore) -> None:
    """Every term starts a word of the text (any case, any script); newest first;
    only the rooms asked for; a deleted message is never found, an edited one
    by its new text."""
    texts = ["Deploy went fine", "the deployment failed", "lunch?", "redeploy later",
             "Déploiement réussi", "नमस्ते दुनिया", "deploy FAILED again"]
    for text in texts:
        await store.append(LOBBY, "alice", text, None)
    await store.append(RoomName("other"), "bob", "deploy elsewhere", None)
    assert await found(store, ["lobby"], "depl") == [
        "deploy FAILED again", "the deployment failed", "Deploy went fine"]
    assert await found(store, ["lobby"], "deploy failed") == [
        "deploy FAILED again", "the deployment failed"]
    assert await found(store, ["lobby", "other"], "elsewhere") == ["deploy elsewhere"]
    assert await found(store, ["lobby"], "déploie") == ["Déploiement réussi"]
    assert await found(store, ["lobby"], "नमस्ते") == ["नमस्ते दुनिया"]
    assert await found(store, ["lobby"], "ploy") == []  # words are found from their start
    await store.alter(LOBBY, "alice", "delete", 7, None, None)
    await store.alter(LOBBY, "alice", "edit", 3, "deploy at noon?", None)
    assert await found(store, ["lobby"], "deploy") == [  # an edit keeps its place
        "deploy at noon?", "the deployment failed", "Deploy went fine"]
    assert await found(store, ["lobby"], "lunch") == []
    assert await found(store, ["lobby"], "again") == []


async def test_search_pages_back_to_the_oldest_match(store: MessageStore) -> None:
    for i in range(25):
        await store.append(LOBBY, "alice", f"needle {i}", None)
        await store.append(LOBBY, "alice", f"hay {i}", None)
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.search([LOBBY], ["needle"], cursor=cursor, limit=10)
        seen += [m.text for m in page.messages]
        if page.next is None:
            break
        cursor = page.next
    assert seen == [f"needle {i}" for i in reversed(range(25))]
    assert await refused(store.search([LOBBY], ["needle"], cursor="made up")) \
        is ErrorCode.BAD_REQUEST


def test_marking_cuts_text_into_matched_words() -> None:
    assert marked("The deployment went fine — deployed!", terms("DEPL")) == [
        ["The ", False], ["deployment", True], [" went fine — ", False], ["deployed", True],
        ["!", False]]
    assert marked("nothing here", ["x"]) == [["nothing here", False]]


async def test_search_finds_signs_and_long_words_exactly(store: MessageStore) -> None:
    """Signs that are words by the protocol's rule (a fraction, a superscript, a
    circled digit, a lone combining accent) find the messages that have them and
    no others, in every store; a word longer than a term may be is found by its
    first 64 characters and by any shorter start."""
    for text in ("½ cup of flour", "x² + y²", "step ① done", "e\u0301 alone", "plain words",
                 "a" * 70 + " long"):
        await store.append(LOBBY, "alice", text, None)
    assert await found(store, ["lobby"], "½") == ["½ cup of flour"]
    assert await found(store, ["lobby"], "²") == []  # not the start of a word ("x²")
    assert await found(store, ["lobby"], "x²") == ["x² + y²"]
    assert await found(store, ["lobby"], "①") == ["step ① done"]
    assert await found(store, ["lobby"], "e\u0301") == ["e\u0301 alone"]
    assert await found(store, ["lobby"], "a" * 64) == ["a" * 70 + " long"]
    assert await found(store, ["lobby"], "aaa long") == ["a" * 70 + " long"]
    assert await found(store, ["lobby"], "b½") == []


async def make_version_5(store_url: str) -> None:
    """A database as schema version 5 left it: the search index cut by the
    database's own text parser, each word without its room."""
    if store_url.startswith("sqlite"):
        with sqlite_file(store_url) as conn:
            conn.execute("DROP TABLE messages_fts")
            conn.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(text, place,"
                         " room UNINDEXED, seq UNINDEXED, tokenize = \"unicode61"
                         " remove_diacritics 0 categories 'L* N* M* Co'\")")
            conn.execute("INSERT INTO messages_fts (rowid, text, place, room, seq) SELECT doc,"
                         " text, 'r' || hex(room), room, seq FROM messages"
                         " WHERE kind = 'message' AND NOT deleted")
            conn.execute("PRAGMA user_version = 5")
        return
    async with postgres_schema_of(store_url) as (pg, schema):
        await pg.execute(
            f'SET search_path = "{schema}"; DROP INDEX messages_words;'
            " ALTER TABLE messages DROP COLUMN words;"
            " ALTER TABLE messages ADD COLUMN words tsvector GENERATED ALWAYS AS ("
            " CASE WHEN kind = 'message' AND deleted = 0 THEN to_tsvector('simple', text)"
            " || array_to_tsvector(ARRAY['@' || room]) END) STORED;"
            " CREATE INDEX messages_words ON messages USING gin (words);"
            " DELETE FROM roomcast_schema; INSERT INTO roomcast_schema VALUES (5)")


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_version_5_database_is_searched_the_new_way(store_url: str,
                                                            reopen: Opener) -> None:
    """A store indexed by the database's own parser (version 5) is indexed anew
    at start: its messages as they stand are found as before, a sign that parser
    dropped is found exactly, and new messages are found too."""
    store = await reopen()
    for text in ("deploy went fine", "deploy failed", "½ cup", "lunch"):
        await store.append(LOBBY, "alice", text, None)
    await store.alter(LOBBY, "alice", "edit", 2, "rollout failed", None)
    await store.alter(LOBBY, "alice", "delete", 4, None, None)
    await store.close()
    await make_version_5(store_url)
    store = await reopen()
    assert await found(store, ["lobby"], "depl") == ["deploy went fine"]
    assert await found(store, ["lobby"], "roll") == ["rollout failed"]
    assert await found(store, ["lobby"], "½") == ["½ cup"]
    assert await found(store, ["lobby"], "lunch") == []
    await store.append(LOBBY, "bob", "deploy again", None)
    assert await found(store, ["lobby"], "deploy") == ["deploy again", "deploy went fine"]


async def test_a_cursor_moves_forward_only_and_never_past_the_latest(
        store: MessageStore) -> None:
    """A consumer's cursor per room: none until it says; then only forward, at
    most to the room's latest seq; another consumer or room has its own."""
    for i in range(3):
        await store.append(LOBBY, "alice", f"m{i}", None)
    assert await store.cursor("bot\ncursor", LOBBY) is None
    assert await store.advance("bot\ncursor", LOBBY, 2) == 2
    assert await store.advance("bot\ncursor", LOBBY, 1) == 2  # never back
    assert await store.advance("bot\ncursor", LOBBY, 99) == 3  # never past the latest
    assert await store.cursor("bot\ncursor", LOBBY) == 3
    assert await store.cursor("bot\nother", LOBBY) is None
    assert await store.advance("bot\ncursor", RoomName("empty"), 5) == 0


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # durable ones
async def test_a_cursor_survives_reopening(store_url: str, reopen: Opener) -> None:
    first = await reopen()
    for i in range(3):
        await first.append(LOBBY, "alice", f"m{i}", None)
    await first.advance("bot\ncursor", LOBBY, 2)
    await first.close()
    assert await (await reopen()).cursor("bot\ncursor", LOBBY) == 2


async def test_heads_name_every_room_with_its_latest_seq(store: MessageStore) -> None:
    """What a webhook scans for: each room with entries (changes count), and
    nothing for a store without any."""
    assert await store.heads() == {}
    for room, count in (("a", 3), ("b", 1), ("a.b", 2), ("zz", 1)):
        for i in range(count):
            await store.append(RoomName(room), "alice", f"m{i}", None)
    await store.alter(RoomName("b"), "alice", "edit", 1, "changed", None)
    assert await store.heads() == {"a": 3, "b": 2, "a.b": 2, "zz": 1}


async def test_cursors_in_bulk_move_forward_only_and_are_dropped_together(
        store: MessageStore) -> None:
    for room in ("one", "two"):
        for i in range(3):
            await store.append(RoomName(room), "alice", f"m{i}", None)
    hook = "webhook:wh_1"
    assert await store.cursors(hook) == {}
    await store.set_cursors(hook, {RoomName("one"): 2, RoomName("two"): 9,
                                   RoomName("none"): 4})
    assert await store.cursors(hook) == {"one": 2, "two": 3, "none": 0}
    await store.set_cursors(hook, {RoomName("one"): 1})  # never back
    await store.advance(hook, RoomName("one"), 3)
    await store.advance("bot\ncursor", RoomName("one"), 1)
    assert await store.cursors(hook) == {"one": 3, "two": 3, "none": 0}
    await store.drop_cursors(hook)
    assert await store.cursors(hook) == {}
    assert await store.cursor("bot\ncursor", RoomName("one")) == 1  # others' stay


async def test_records_are_kept_replaced_and_dropped_by_kind(store: MessageStore) -> None:
    body = {"url": "https://example.org/hook", "rooms": ["ops-*"], "n": 3, "on": True,
            "text": "é 🎉"}
    await store.put_record("webhook", "wh_1", body)
    await store.put_record("webhook", "wh_2", {"url": "x"})
    await store.put_record("dead:wh_1", "ops:4", {"first": 4})
    assert await store.records("webhook") == {"wh_1": body, "wh_2": {"url": "x"}}
    await store.put_record("webhook", "wh_2", {"url": "y"})
    assert (await store.records("webhook"))["wh_2"] == {"url": "y"}
    assert await store.drop_record("webhook", "wh_2") is True
    assert await store.drop_record("webhook", "wh_2") is False
    assert await store.records("webhook") == {"wh_1": body}
    assert await store.records("dead:wh_1") == {"ops:4": {"first": 4}}
    assert await store.records("nothing") == {}
    assert await store.record("webhook", "wh_1") == body
    assert await store.record("webhook", "wh_2") is None
    assert await store.record("dead:wh_1", "wh_1") is None  # another kind's key
    assert await store.drop_records("webhook") == 1 and await store.records("webhook") == {}
    assert await store.records("dead:wh_1") == {"ops:4": {"first": 4}}  # (other kinds stay)


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)  # durable ones
async def test_records_survive_reopening(store_url: str, reopen: Opener) -> None:
    first = await reopen()
    await first.put_record("webhook", "wh_1", {"url": "https://example.org/hook"})
    await first.close()
    assert await (await reopen()).records("webhook") == {
        "wh_1": {"url": "https://example.org/hook"}}


PHOTO = Attachment("f1", "cat.png", 2048, "image/png", 640, 480, True)
NOTES = Attachment("f2", "notes ü.txt", 12, "text/plain")


async def test_attachments_are_kept_with_their_message(store: MessageStore) -> None:
    """A message's attachments come back wherever the message does (a page, a
    read on from a seq, a repeat of its client id) and go when it is deleted."""
    sent, _ = await store.append(LOBBY, "alice", "look", "c1", attachments=(PHOTO, NOTES))
    assert sent.attachments == (PHOTO, NOTES)
    plain, _ = await store.append(LOBBY, "bob", "plain", None)
    assert plain.attachments == ()
    again, created = await store.append(LOBBY, "alice", "look", "c1")
    assert not created and again.attachments == (PHOTO, NOTES)
    assert [m.attachments for m in (await store.page(LOBBY)).messages] == [(PHOTO, NOTES), ()]
    assert (await store.page(LOBBY, after=0)).messages[0].attachments == (PHOTO, NOTES)
    edited = await store.alter(LOBBY, "alice", "edit", 1, "look again", None)
    assert edited.message.attachments == (PHOTO, NOTES)
    deleted = await store.alter(LOBBY, "alice", "delete", 1, None, None)
    assert deleted.message.attachments == () and deleted.removed == (PHOTO, NOTES)
    assert (await store.page(LOBBY)).messages[0].attachments == ()
    assert sent.as_dict()["attachments"] == [
        {"id": "f1", "name": "cat.png", "size": 2048, "type": "image/png", "width": 640,
         "height": 480, "thumbnail": True},
        {"id": "f2", "name": "notes ü.txt", "size": 12, "type": "text/plain"}]


@pytest.mark.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_version_10_database_takes_attachments(store_url: str, reopen: Opener) -> None:
    """A database from before attachments: its messages read as they were, and
    new ones carry attachments."""
    store = await reopen()
    await store.append(LOBBY, "alice", "old", None)
    await store.close()
    if store_url.startswith("sqlite"):
        with sqlite_file(store_url) as conn:
            conn.executescript("ALTER TABLE messages DROP COLUMN attachments;"
                               "PRAGMA user_version = 10")
    else:
        async with postgres_schema_of(store_url) as (pg, schema):
            await pg.execute(f'SET search_path = "{schema}";'
                             "ALTER TABLE messages DROP COLUMN attachments;"
                             "DELETE FROM roomcast_schema; INSERT INTO roomcast_schema VALUES (10)")
    store = await reopen()
    new, _ = await store.append(LOBBY, "bob", "new", None, attachments=(PHOTO,))
    assert [(m.text, m.attachments) for m in (await store.page(LOBBY)).messages] == [
        ("old", ()), ("new", (PHOTO,))]
    assert new.seq == 2
