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
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

GRACE = 1.0  # seconds a step past the budget gets to end, aborted, then cancelled


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

    async def step(self, what: str, work: Awaitable[None], floor: float = 0.0,
                   abort: Callable[[], None] | None = None) -> None:
        """Run one step within what is left; past it, log and go on.

        A step past its time is first aborted (``abort``: e.g. the store drops
        its connections, so that calls stuck on a silent link fail at once),
        then cancelled; each gets :data:`GRACE` seconds to end the step. Not
        ``wait_for``: it waits for the cancelled work however long that takes,
        and work stuck on a silent link (a driver rolling back over it) never
        ends."""
        task = asyncio.ensure_future(work)
        if await self._ended(task, self.left(floor)):
            return task.result()
        log.error("shutdown: %s did not finish within --shutdown-timeout (%g s); "
                  "going on without it", what, self.timeout)
        if abort is not None:
            abort()
            if await self._ended(task, GRACE):
                return _retrieved(task)
        task.cancel()
        if not await self._ended(task, GRACE):
            log.error("shutdown: %s is still running after being cancelled; left behind",
                      what)
            task.add_done_callback(_retrieved)
        else:
            _retrieved(task)

    @staticmethod
    async def _ended(task: asyncio.Future[None], timeout: float) -> bool:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)


def _retrieved(task: asyncio.Future[None]) -> None:
    """Take a step's outcome once it was given up on (logged, never raised)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("shutdown: a step given up on failed: %s: %s", type(exc).__name__, exc)
