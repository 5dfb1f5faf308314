"""The node's tail of the stream that webhooks read first: contiguous per room,
bounded, and honest about what it does not hold (None: read the store)."""

from __future__ import annotations

from app.core.models import Entry, Message, RoomName
from app.hooks.tail import Tail
from app.hooks.webhook import encode, new_webhook

OPS, LOBBY = RoomName("ops"), RoomName("lobby")


def entry(room: RoomName, seq: int) -> Message:
    return Message(room, seq, "alice", f"m{seq}", seq, None)


def seqs(found: list[Entry] | None) -> list[int] | None:
    return None if found is None else [e.seq for e in found]


def test_a_tail_serves_what_follows_a_seq_it_holds_and_nothing_else() -> None:
    tail = Tail(per_room=4, entries=100)
    for seq in range(1, 7):
        tail.add(entry(OPS, seq))
    assert seqs(tail.read(OPS, 2, 10)) == [3, 4, 5, 6]  # the last four kept
    assert seqs(tail.read(OPS, 4, 1)) == [5]
    assert tail.read(OPS, 1, 10) is None  # 2 is gone: the store has it
    assert tail.read(OPS, 6, 10) is None  # what follows 6 is not known here
    assert tail.read(LOBBY, 0, 10) is None
    tail.add(entry(OPS, 5))  # known: no change
    tail.add(entry(OPS, 9))  # after a gap: the tail starts again
    assert tail.read(OPS, 5, 10) is None and seqs(tail.read(OPS, 8, 10)) == [9]


def test_a_tail_holds_at_most_its_bound_dropping_the_least_recent_rooms() -> None:
    tail = Tail(per_room=10, entries=5)
    for seq in range(1, 4):
        tail.add(entry(OPS, seq))
    for seq in range(1, 4):
        tail.add(entry(LOBBY, seq))
    assert tail.count == 3 and tail.read(OPS, 0, 10) is None
    assert seqs(tail.read(LOBBY, 0, 10)) == [1, 2, 3]


def test_an_event_is_encoded_once_unless_it_mentions_the_webhook() -> None:
    tail = Tail()
    plain = new_webhook("https://a.example/", ["*"], [], None, ("*",), 1)
    bot = new_webhook("https://b.example/", ["*"], ["mentions"], "bot", ("*",), 1)
    message = Message(OPS, 1, "alice", "hi @bot", 1, None)
    assert tail.encoded(plain, message) is tail.encoded(plain, message)
    assert tail.encoded(plain, message) == encode(plain.event(message))
    assert b'"mention":true' in tail.encoded(bot, message)
    assert b'"mention"' not in tail.encoded(plain, message)


def test_a_tail_is_bounded_in_bytes_too() -> None:
    tail = Tail(per_room=100, entries=100, size=3 * (256 + 4 * 1000))
    for seq in range(1, 4):
        tail.add(Message(OPS, seq, "alice", "x" * 1000, seq, None))
    tail.add(Message(LOBBY, 1, "alice", "y" * 1000, 1, None))
    assert tail.count == 1 and tail.read(OPS, 0, 10) is None  # ops's tail went whole
    assert seqs(tail.read(LOBBY, 0, 10)) == [1]
    plain = new_webhook("https://a.example/", ["*"], [], None, ("*",), 1)
    small = Tail(size=2500)
    for seq in range(1, 4):
        small.encoded(plain, Message(OPS, seq, "alice", "z" * 1000, seq, None))
    assert len(small.events) == 2 and small.events_size <= 2500


def test_what_retention_cut_is_not_served_from_the_tail() -> None:
    """Entries (ts = seq here) stored before the cut go; a read into them is
    the store's, which says they are gone; the count and the events go too."""
    tail = Tail(per_room=10, entries=100)
    hook = new_webhook("https://example.org/", ["*"], [], None, ("*",), 0)
    for seq in range(1, 6):
        tail.add(entry(OPS, seq))
        tail.encoded(hook, entry(OPS, seq))
    tail.add(entry(LOBBY, 1))
    tail.cut(OPS, 4)  # 1, 2 and 3 go
    assert tail.read(OPS, 0, 10) is None and tail.read(OPS, 2, 10) is None
    assert seqs(tail.read(OPS, 3, 10)) == [4, 5]
    assert tail.count == 3 and len(tail.events) == 2
    tail.cut(OPS, 100)
    assert tail.read(OPS, 3, 10) is None and OPS not in tail.rooms
    assert seqs(tail.read(LOBBY, 0, 10)) == [1] and tail.count == 1
