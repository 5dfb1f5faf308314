"""The store fixtures: an empty store of each kind, and reopening it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from app.store import MessageStore, open_store

from ...services import postgres_schema

Opener = Callable[[], Awaitable[MessageStore]]


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
