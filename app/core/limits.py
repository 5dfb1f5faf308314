"""Per-connection rate limits: token buckets, with no I/O.

``TokenBucket(rate, burst)`` holds up to ``burst`` tokens and refills at
``rate`` tokens per second. ``take(cost)`` spends ``cost`` tokens, or says how
long (in ms) until they are there. Some costs are known only once the work is
done (the bytes a ``join`` or ``history`` reply holds): the namespace takes
the most a reply may cost before the work, so pipelined requests cannot all
pass before the first is charged, and ``charge()`` gives back what the reply
did not use.

The namespace keeps one bucket per connection and event kind (see
:class:`Limits`), so a flood is answered ``rate_limited`` with
``retry_after`` while the connection stays up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ChatError, ErrorCode


class TokenBucket:
    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _ms_until(self, tokens: float) -> int:
        return max(1, math.ceil((tokens - self._tokens) / self.rate * 1000))

    def take(self, cost: float = 1) -> int:
        """Spend ``cost`` tokens and return 0, or return the ms until they are there."""
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return 0
        return self._ms_until(cost)

    def charge(self, cost: float) -> None:
        """Take ``cost`` more tokens (a negative cost gives them back), never
        leaving more than ``burst``; the bucket may go into debt."""
        self._refill()
        self._tokens = min(self.burst, self._tokens - cost)


@dataclass(frozen=True, slots=True)
class Rate:
    """A bucket's shape: ``rate`` per second sustained, ``burst`` at once."""

    rate: float
    burst: float

    def bucket(self) -> TokenBucket:
        return TokenBucket(self.rate, self.burst)


class InFlight:
    """A bound on work under way at once, per person (over all their
    connections, on this node) and in all; counted before the work starts."""

    def __init__(self, what: str, *, per_node: int, per_name: int) -> None:
        self.what = what
        self.per_node = per_node
        self.per_name = per_name
        self.running: Counter[str] = Counter()
        self.total = 0

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Count one for ``name`` while the block runs; refuse ``rate_limited``
        if ``name`` has ``per_name`` running, ``unavailable`` if the node has
        ``per_node``."""
        if self.running[name] >= self.per_name:
            raise ChatError(ErrorCode.RATE_LIMITED, f"you have {self.running[name]} "
                            f"{self.what} running; wait for it to finish", retry_after=1000)
        if self.total >= self.per_node:
            raise ChatError(ErrorCode.UNAVAILABLE, f"this server is busy with {self.what}; "
                            "try again shortly")
        self.running[name] += 1
        self.total += 1
        try:
            yield
        finally:
            self.total -= 1
            self.running[name] -= 1
            if not self.running[name]:
                del self.running[name]
