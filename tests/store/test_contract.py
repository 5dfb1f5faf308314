"""One contract, every store: seq, idempotency, paging, order, durability."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from app.chat.errors import ChatError, ErrorCode
from app.chat.models import RoomName
from app.store import MessageStore, open_store

from ..services import postgres_schema

Opener = Callable[[], Awaitable[MessageStore]]
LOBBY = RoomName("lobby")


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty store of each kind (PostgreSQL: a fresh schema)."""
    if request.param == "postgresql":
        async with postgres_schema() as url:
            yield url
    else:
        yield {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/db/chat.db"}[request.param]


@pytest.fixture
async def reopen(store_url: str) -> AsyncIterator[Opener]:
    """Open the store at the same URL; every store opened is closed at the end."""
    opened: list[MessageStore] = []

    async def open_() -> MessageStore:
        opened.append(await open_store(store_url))
        return opened[-1]

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(reopen: Opener) -> MessageStore:
    return await reopen()


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
