"""The chat's services with plain calls (tests/unit/chat.py): what a join, a send,
history, a leave and a disconnect do, with no socket in sight."""

from __future__ import annotations

import pytest

from app.chat.protocol import parse_history, parse_join, parse_send
from app.core.errors import ChatError, ErrorCode
from app.core.models import RoomName

from .chat import Harness


async def test_a_send_is_stored_and_reaches_every_other_member() -> None:
    """A joined member's message is stored with the room's next seq and goes to
    the room's other members, not back to the sender; people it mentions are
    told wherever they are, joined or not."""
    node = Harness()
    alice, bob, carol = [await node.connect(n) for n in ("alice", "bob", "carol")]
    for someone in (alice, bob):
        await node.chat.rooms.join(someone, parse_join({"room": "lobby"}))
    node.wire.take(alice), node.wire.take(bob)
    ack = await node.chat.messages.send(alice, parse_send(
        {"room": "lobby", "text": "hi @carol"}, max_text_length=100))
    assert ack["message"]["seq"] == 1 and ack["message"]["from"] == "alice"
    assert node.wire.take(bob, "message") == [ack["message"]]
    assert node.wire.take(alice) == []
    assert node.wire.take(carol, "mention") == [{"room": "lobby", "message": ack["message"]}]
    assert [m.text for m in (await node.store.page(RoomName("lobby"))).messages] == [
        "hi @carol"]


async def test_only_members_send_and_read_and_the_budget_holds() -> None:
    """send and history need a join first (not_member); a connection past its
    send rate is rate_limited with retry_after, and nothing is stored."""
    node = Harness(send_rate=0.001, send_burst=1)
    alice = await node.connect("alice")
    unjoined = parse_send({"room": "r", "text": "x"}, max_text_length=10)
    for call in (node.chat.messages.send(alice, unjoined),
                 node.chat.messages.history(alice, parse_history({"room": "r"}))):
        with pytest.raises(ChatError) as refused:
            await call
        assert refused.value.code is ErrorCode.NOT_MEMBER
    await node.chat.rooms.join(alice, parse_join({"room": "r"}))
    send = parse_send({"room": "r", "text": "once"}, max_text_length=10)
    await node.chat.messages.send(alice, send)
    with pytest.raises(ChatError) as limited:
        await node.chat.messages.send(alice, send)
    assert limited.value.code is ErrorCode.RATE_LIMITED and limited.value.retry_after
    assert (await node.store.page(RoomName("r"))).latest == 1


async def test_leaving_and_disconnecting_tell_the_room_once_per_name() -> None:
    """A name with two connections in a room leaves it only when both have: the
    room is told once, with who is left."""
    node = Harness()
    alice, alice_again, bob = [await node.connect(n) for n in ("alice", "alice", "bob")]
    for someone in (alice, alice_again, bob):
        await node.chat.rooms.join(someone, parse_join({"room": "r"}))
    node.wire.take(bob)
    await node.chat.rooms.leave(alice, RoomName("r"))
    assert node.wire.take(bob, "presence") == []  # alice is still there
    gone = node.chat.connections.close(alice_again.sid)
    assert gone is alice_again
    await node.chat.disconnected(gone, "client disconnect")
    assert node.wire.take(bob, "presence") == [
        {"room": "r", "user": "alice", "event": "leave", "members": ["bob"], "count": 1}]
    assert node.chat.rooms.local_members() == [(RoomName("r"), bob.sid, "bob")]
