"""The fan-out's room bookkeeping: a connection's own (sid) room is addressed
through the namespace's entry for it, not kept as a room of its own."""

from __future__ import annotations

import asyncio

import socketio

from app.fanout import LocalFanout


def connected(count: int) -> tuple[LocalFanout, list[str]]:
    manager = LocalFanout()
    socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)

    async def connect_all() -> list[str]:
        return [await manager.connect(f"eio{i}", "/chat") for i in range(count)]

    return manager, asyncio.run(connect_all())


def test_sid_rooms_are_not_kept_as_rooms() -> None:
    manager, sids = connected(100)
    assert set(manager.rooms["/chat"]) == {None}
    manager.basic_enter_room(sids[0], "/chat", "lobby")
    assert set(manager.rooms["/chat"]) == {None, "lobby"}


def test_a_sid_addresses_its_connection_alone() -> None:
    manager, sids = connected(3)
    assert list(manager.get_participants("/chat", sids[1])) == [(sids[1], "eio1")]
    assert list(manager.get_participants("/chat", "nobody")) == []
    assert sorted(manager.get_participants("/chat", [sids[0], sids[2]])) == sorted(
        [(sids[0], "eio0"), (sids[2], "eio2")])
    assert len(list(manager.get_participants("/chat", None))) == 3
    assert manager.is_sid_room("/chat", sids[0])


def test_rooms_of_a_connection_start_with_its_own() -> None:
    manager, sids = connected(2)
    manager.basic_enter_room(sids[0], "/chat", "lobby")
    manager.basic_enter_room(sids[0], "/chat", "games")
    rooms = manager.get_rooms(sids[0], "/chat")
    assert rooms[0] == sids[0] and sorted(rooms[1:]) == ["games", "lobby"]
    assert manager.get_rooms(sids[1], "/chat") == [sids[1]]
    assert manager.get_rooms("gone", "/chat") == []


def test_a_participant_snapshot_survives_leaving_as_it_is_read() -> None:
    manager, sids = connected(5)
    for sid in sids:
        manager.basic_enter_room(sid, "/chat", "lobby")
    for sid, _ in manager.get_participants("/chat", "lobby"):
        manager.basic_leave_room(sid, "/chat", "lobby")
    assert "lobby" not in manager.rooms["/chat"]


def test_disconnect_leaves_nothing_behind() -> None:
    manager, sids = connected(2)
    manager.basic_enter_room(sids[0], "/chat", "lobby")
    manager.basic_leave_room(sids[0], "/chat", sids[0])  # its own room: a no-op
    assert list(manager.get_participants("/chat", sids[0])) == [(sids[0], "eio0")]
    manager.basic_disconnect(sids[0], "/chat")
    assert list(manager.get_participants("/chat", sids[0])) == []
    assert set(manager.rooms["/chat"]) == {None}
    assert manager.get_rooms(sids[0], "/chat") == []
    manager.basic_disconnect(sids[1], "/chat")
    assert "/chat" not in manager.rooms
