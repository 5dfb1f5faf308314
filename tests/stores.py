"""Stores for tests that need a store call to wait at a chosen moment."""

from __future__ import annotations

import asyncio
from typing import Any

from app.core.models import Page
from app.store.memory import MemoryStore


class Holding(MemoryStore):
    """A memory store with a gate: the calls a subclass sends through
    :meth:`gate` wait while ``held`` is clear; ``waiting`` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.held.set()
        self.waiting = 0

    async def gate(self) -> None:
        self.waiting += 1
        await self.held.wait()


class HeldReads(Holding):
    """Page reads (a join's history) wait while held."""

    async def page(self, *args: Any, **kwargs: Any) -> Page:
        await self.gate()
        return await super().page(*args, **kwargs)


class HeldMarks(Holding):
    """Read-marker writes (a join's last store call before its ack) wait while held."""

    async def mark(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate()
        return await super().mark(*args, **kwargs)
