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
