"""app/core/limits.py with plain calls: token buckets and bounds on work in flight."""

from __future__ import annotations

import pytest

from app.core.errors import ChatError, ErrorCode
from app.core.limits import InFlight, TokenBucket


def test_a_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 500]
    now[0] = 0.5
    assert bucket.take() == 0 and bucket.take() == 500
    bucket.charge(-10)  # given back: never above the burst
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 500]


def test_work_in_flight_is_bounded_per_name_and_per_node() -> None:
    """A name past its bound is rate_limited (with retry_after), the node past
    its own unavailable; nothing is counted for a refusal, and each hold is
    given back when its block ends, however it ends."""
    searches = InFlight("searches", per_node=2, per_name=1)
    with searches.hold("alice"):
        with pytest.raises(ChatError) as limited:
            with searches.hold("alice"):
                pass
        assert limited.value.code is ErrorCode.RATE_LIMITED and limited.value.retry_after
        with searches.hold("bob"):
            with pytest.raises(ChatError) as busy:
                with searches.hold("carol"):
                    pass
            assert busy.value.code is ErrorCode.UNAVAILABLE
        assert searches.total == 1
    with pytest.raises(RuntimeError):
        with searches.hold("alice"):
            raise RuntimeError("the work failed")
    assert searches.total == 0 and not searches.running
