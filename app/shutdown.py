"""One deadline for the whole of a shutdown (``--shutdown-timeout``).

A node's shutdown is a sequence (see :func:`app.server.create_app`): stop
taking work and close the sessions, let in-flight handlers finish, drain the
store, flush fan-out, close presence. Each step gets what is left of one
budget that starts with the first step, so the whole takes at most the
timeout (plus the floor a sign-off is given), however many steps wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

log = logging.getLogger(__name__)


class ShutdownClock:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadline: float | None = None

    def start(self) -> None:
        """The shutdown begins (later calls change nothing)."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout

    def left(self, floor: float = 0.0) -> float:
        """Seconds left of the budget (at least ``floor``)."""
        self.start()
        assert self._deadline is not None
        return max(floor, self._deadline - time.monotonic())

    async def step(self, what: str, work: Awaitable[None], floor: float = 0.0) -> None:
        """Run one step within what is left; past it, log and go on."""
        try:
            await asyncio.wait_for(work, self.left(floor))
        except TimeoutError:
            log.error("shutdown: %s did not finish within --shutdown-timeout (%g s); "
                      "going on without it", what, self.timeout)
