"""app/eio/session.py: one session's state machine, with plain calls (no I/O)."""

from __future__ import annotations

import pytest

from app.eio.packets import CLOSE, MESSAGE, NOOP, OPEN, PING, PONG, UPGRADE, PacketError
from app.eio.session import (
    CLOSE_REQUESTED, DELIVER, HEARTBEAT, IGNORE, POLLING, PROBED, REPLY, UPGRADE_FAILED,
    UPGRADED, WEBSOCKET, Limits, Session, pong_reply,
)


def polling(**limits: int) -> Session:
    return Session("sid", {}, POLLING, Limits(**limits))


def test_a_poll_takes_at_most_max_poll_packets_in_order() -> None:
    session = polling(max_poll_packets=16)
    for i in range(40):
        assert session.push(f"4m{i}")
    batches = [session.take() for _ in range(3)]
    assert [len(b) for b in batches] == [16, 16, 8]
    assert sum(batches, []) == [f"4m{i}" for i in range(40)]
    assert session.take() == [] and session.queued == 0 and session.queued_bytes == 0


def test_max_poll_packets_zero_takes_everything() -> None:
    session = polling(max_poll_packets=0)
    for i in range(40):
        session.push(f"4m{i}")
    assert len(session.take()) == 40


def test_the_backlog_bound_refuses_what_does_not_fit() -> None:
    session = polling(max_backlog_packets=3)
    assert all(session.push("4x") for _ in range(3))
    assert not session.push("4x")
    assert session.queued == 3
    bytes_bound = polling(max_backlog_bytes=100)
    assert bytes_bound.push("4" + "x" * 200)  # under the bound when queued
    assert not bytes_bound.push("4x")


def test_control_packets_are_counted_but_never_refused() -> None:
    session = polling(max_backlog_packets=1)
    session.push("4x")
    session.push_control(session.ping())
    assert session.take() == ["4x", "2"]


def test_a_session_that_catches_up_skips_what_it_can_fetch_again() -> None:
    """Past its bound, a session whose client catches up drops the droppable
    packets queued and takes no more of them (replies still count and are
    kept, in order); drained below an eighth of the bound it is live again,
    once."""
    session = polling(max_backlog_packets=16, max_poll_packets=4)
    session.catches_up = True
    for i in range(12):
        assert session.push(f"4room{i}", droppable=True)
    assert session.push("4ack0")
    for i in range(12, 15):
        assert session.push(f"4room{i}", droppable=True)
    assert not session.skipping and session.queued == 16
    assert session.push("4ack1")  # over the bound: the room's packets go, the ack stays
    assert session.skipping
    assert session.push("4room15", droppable=True)  # taken, and dropped
    assert session.take() == ["4ack0", "4ack1"]
    assert session.queued == 0 and session.queued_bytes == 0
    assert session.resume_due(0) and not session.skipping
    assert not session.resume_due(0)  # once
    assert session.push("4room16", droppable=True) and session.take() == ["4room16"]


def test_a_session_that_catches_up_is_still_cut_when_replies_fill_it() -> None:
    """What cannot be dropped (replies) still counts: a peer that reads nothing
    at all is cut as before."""
    session = polling(max_backlog_packets=3)
    session.catches_up = True
    assert all(session.push(f"4ack{i}") for i in range(3))
    assert not session.push("4ack3")
    assert session.push("4room", droppable=True)  # dropped: nothing to cut for
    assert session.queued == 3


def test_a_session_that_does_not_catch_up_drops_nothing() -> None:
    session = polling(max_backlog_packets=3)
    assert all(session.push("4room", droppable=True) for _ in range(3))
    assert not session.push("4room", droppable=True)
    assert not session.skipping and session.queued == 3


def test_a_ping_goes_ahead_of_what_is_queued() -> None:
    """A reader far behind still hears the heartbeat within one poll."""
    session = polling(max_poll_packets=2)
    for i in range(5):
        session.push(f"4m{i}")
    session.push_control(session.ping(), first=True)
    assert session.take() == ["2", "4m0"]


def test_heartbeat_a_pong_is_owed_after_each_ping() -> None:
    session = polling()
    assert session.receive((PONG, "")) == IGNORE  # none was asked for
    assert session.ping() == "2" and session.awaiting_pong
    assert session.receive((PONG, "")) == HEARTBEAT
    assert not session.awaiting_pong


def test_what_a_client_packet_asks() -> None:
    session = polling()
    assert session.receive((MESSAGE, "2[]")) == DELIVER
    assert session.receive((PING, "x")) == REPLY and pong_reply((PING, "x")) == "3x"
    assert session.receive((CLOSE, "")) == CLOSE_REQUESTED
    assert session.receive((NOOP, "")) == IGNORE
    for kind in (OPEN, UPGRADE):
        with pytest.raises(PacketError):
            session.receive((kind, ""))


def test_upgrade_probe_then_upgrade_moves_the_queue_to_the_websocket() -> None:
    session = polling()
    session.push("4queued")
    assert session.start_upgrade()
    assert not session.start_upgrade()  # one WebSocket at a time
    assert session.upgrade_step("2probe") == PROBED
    assert session.upgrade_step("5") == UPGRADED
    assert session.transport == WEBSOCKET and session.upgraded
    assert session.take_all() == ["4queued"]
    assert not session.start_upgrade()  # already on WebSocket
    assert session.push("4later")  # written directly from now on: nothing queued
    assert session.queued == 0


@pytest.mark.parametrize("steps", [["5"], ["2probe", "4hello"], ["2ping"]])
def test_an_upgrade_out_of_order_fails_and_the_session_stays_on_polling(
        steps: list[str]) -> None:
    session = polling()
    session.start_upgrade()
    results = [session.upgrade_step(step) for step in steps]
    assert results[-1] == UPGRADE_FAILED
    assert session.transport == POLLING and session.upgrading is None
    assert session.start_upgrade()  # a later attempt may succeed


def test_close_happens_once_and_ends_an_upgrade() -> None:
    session = polling()
    session.start_upgrade()
    assert session.close() and not session.close()
    assert session.upgrading is None and not session.start_upgrade()


def test_a_frame_is_late_once_it_has_waited_the_bound_unwritten() -> None:
    """overdue() counts each frame given and still unwritten ``after`` seconds
    later, once; what a poll took in time is never late, and marks are taken
    only while frames wait."""
    session = polling(max_poll_packets=2)
    for i in range(5):
        session.push(f"4m{i}")
    assert session.overdue(0.0, 1.0) == 0  # marks 5 given by t=0
    session.take()  # 2 of them written in time
    assert session.overdue(0.5, 1.0) == 0
    session.push("4m5")  # given after the first mark
    assert session.overdue(0.9, 1.0) == 0
    assert session.overdue(1.0, 1.0) == 3  # the 3 left of the first 5, not the new one
    assert session.overdue(1.5, 1.0) == 0  # counted once
    assert session.overdue(1.95, 1.0) == 1  # the 6th, marked at 0.9
    assert session.overdue(5.0, 1.0) == 0
    session.take()
    session.take()
    assert session.given == session.written == 6
    assert session.overdue(9.0, 1.0) == 0


def test_frames_dropped_by_a_skipping_session_are_never_late() -> None:
    session = polling(max_backlog_packets=8)
    session.catches_up = True
    for i in range(8):
        session.push(f"4room{i}", droppable=True)
    assert session.overdue(0.0, 1.0) == 0
    session.push("4ack", droppable=False)  # past the bound: the droppable go
    assert session.queued == 1
    assert session.overdue(1.0, 1.0) == 0  # the ack was given after the mark
    assert session.overdue(1.9, 1.0) == 0 and session.overdue(2.0, 1.0) == 1
