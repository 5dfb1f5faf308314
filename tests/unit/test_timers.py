"""app/eio/timers.py: the heartbeat's timers, many to a loop timer."""

from __future__ import annotations

import asyncio

from app.eio.timers import TimerWheel


async def test_timers_fire_in_due_order_never_early_and_a_cancelled_one_never() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(resolution=0.01)
    fired: list[tuple[str, float]] = []
    last = asyncio.Event()
    due: dict[str, float] = {}

    def note(owner: str) -> None:
        fired.append((owner, loop.time()))
        if owner == "c":
            last.set()
    start = loop.time()
    for owner, delay in (("b", 0.04), ("a", 0.02), ("c", 0.06), ("gone", 0.03)):
        due[owner] = start + delay
        slot = wheel.set(owner, delay, note)
    wheel.cancel("gone", slot)
    a_again = wheel.set("a", 0.02, note)  # (two owners may share a slot)
    assert a_again == wheel.set("twin", 0.02, note)
    await asyncio.wait_for(last.wait(), 5)
    assert [owner for owner, _ in fired] == ["a", "twin", "b", "c"]
    for owner, at in fired:
        assert at >= due.get(owner, due["a"]) - 0.001  # (the loop's clock is in ms)
    assert len(wheel) == 0


async def test_many_timers_in_few_slots_all_fire_and_a_failing_callback_stops_none() -> None:
    wheel = TimerWheel(resolution=0.01)
    called: list[int] = []
    done = asyncio.Event()

    def call(owner: int) -> None:
        called.append(owner)
        if owner == 3:
            raise RuntimeError("one session's failure")
        if len(called) == 100:
            done.set()
    for owner in range(100):
        wheel.set(owner, 0.01 + owner % 5 * 0.01, call)
    assert len(wheel) == 100
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(called) == list(range(100))
    wheel.close()
    assert len(wheel) == 0
