"""The unit tier's chat: nodes (one node's services each, on SQLite in the
test's folder, the store the wire tier's server uses) and peers connected
to them, with the fixtures' names and calls of the wire tier's
(``serve``, ``peer``), so a test of what the chat means reads the same in
both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.store import MessageStore

from .chat import Harness, LocalPeer, LocalPeerFactory

NodeFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """``await serve(**settings)``: a node on ``store``, a URL or a store (default:
    chat.db in the test's folder, shared by the test's nodes); each is closed at
    the end."""
    opened: list[Harness] = []

    async def start(*, store: str | MessageStore = f"sqlite:///{tmp_path}/chat.db",
                    **settings: Any) -> Harness:
        opened.append(await Harness.open(store, **settings) if isinstance(store, str)
                      else Harness(store, **settings))
        return opened[-1]

    yield start
    for node in reversed(opened):
        await node.close()


@pytest.fixture
async def node(serve: NodeFactory) -> Harness:
    """The default node."""
    return await serve()


@pytest.fixture
def peer(node: Harness) -> LocalPeerFactory:
    """``await peer("alice")``: a connection to the node (or to ``server``), as a
    client's would be."""
    async def connect(name: str, *, server: Harness | None = None,
                      auth: dict[str, Any] | None = None) -> LocalPeer:
        return await (server or node).peer(name, auth=auth)
    return connect
