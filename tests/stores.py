"""Stores for tests that need a store call to wait at a chosen moment."""

from __future__ import annotations

import asyncio
from typing import Any

from app.store.memory import MemoryStore


class HeldMarks(MemoryStore):
    """A memory store whose read-marker writes (a join's last store call before
    its ack) wait while ``held`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.held.set()
        self.waiting = 0

    async def mark(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        await self.held.wait()
        return await super().mark(*args, **kwargs)
