"""Per-connection rate limits: a token bucket, with no I/O.

``TokenBucket(rate, burst)`` holds up to ``burst`` tokens and refills at
``rate`` tokens per second; ``take()`` spends one, or says how long (in ms)
until one is available. The namespace keeps one bucket per connection and
event kind, so a flood is answered ``rate_limited`` with ``retry_after``
while the connection stays up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> int:
        """Spend a token and return 0, or return the ms to wait for the next one."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0
        return max(1, math.ceil((1 - self._tokens) / self.rate * 1000))
