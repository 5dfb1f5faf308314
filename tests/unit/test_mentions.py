"""Who a text mentions (app.chat.mentions): the syntax docs/protocol.md gives."""

from __future__ import annotations

import pytest

from app.chat.mentions import MAX_MENTIONS, mention_of, mentioned


@pytest.mark.parametrize("text,names", [
    ("@alice hi", ("alice",)),
    ("hi @alice, and @bob.", ("alice", "bob")),  # punctuation ends a name; a trailing . too
    ("@a.b-c_d!", ("a.b-c_d",)),
    ("mail ann@example.org or x_@y", ()),  # after a letter, digit or _: no mention
    ("(@alice)", ("alice",)),
    ("@{Ana María} and @{ Ana María }", ("Ana María",)),  # braces: spaces, trimmed
    ("@李小龍 @नमस्ते @Ålesund", ("李小龍", "नमस्ते", "Ålesund")),  # any script, marks too
    ("@Ana\u0301", ("Aná",)),  # compared after NFC
    ("@alice @alice @{alice}", ("alice",)),
    ("@{unclosed and @{a{b} @{} @ alone", ()),
    ("@{line\nbreak}", ()),
    ("@{" + "x" * 33 + "}", ()),  # longer than a name
])
def test_mentions(text: str, names: tuple[str, ...]) -> None:
    assert mentioned(text) == names


def test_the_sender_and_past_the_limit_are_not_mentioned() -> None:
    assert mentioned("@me and @you", "me") == ("you",)
    many = " ".join(f"@p{i}" for i in range(MAX_MENTIONS + 5))
    assert mentioned(many) == tuple(f"p{i}" for i in range(MAX_MENTIONS))


@pytest.mark.parametrize("name", ["bob", "Ana María", "a.b.", "李小龍", "x-"])
def test_a_mention_written_for_a_name_mentions_it(name: str) -> None:
    assert mentioned(mention_of(name)) == (name,)
