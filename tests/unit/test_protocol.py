"""The payload parsers, with plain calls: no server, no sockets."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.errors import ChatError, ErrorCode
from app.store.search import MAX_TERM_LENGTH, _words, index_words
from app.chat.protocol import (
    HistoryRequest, JoinRequest, SendRequest, TypingRequest, parse_history, parse_join,
    parse_leave, parse_name, parse_rooms, parse_search, parse_send, parse_typing,
)


def code_of(fn: Any, *args: Any, **kwargs: Any) -> ErrorCode:
    with pytest.raises(ChatError) as info:
        fn(*args, **kwargs)
    return info.value.code


@pytest.mark.parametrize("raw, name", [
    ({"name": "alice"}, "alice"),
    ({"name": "  bob  "}, "bob"),
    ({"name": "Zoë 李 Ωμέγα"}, "Zoë 李 Ωμέγα"),
    ({"name": "e\u0301"}, "\u00e9"),  # NFC: e + combining acute -> é
    ({"name": "x" * 32}, "x" * 32),
])
def test_names_accepted(raw: object, name: str) -> None:
    """Names of 1 to 32 printable characters in any script, trimmed, are accepted."""
    assert parse_name(raw) == name


@pytest.mark.parametrize("raw", [
    None, "alice", {}, {"name": 5}, {"name": ""}, {"name": "   "}, {"name": "x" * 33},
    {"name": "a\nb"}, {"name": "a\x00b"}, {"name": "\u200b"}, {"name": "\ud800"},
])
def test_names_refused(raw: object) -> None:
    """Anything but a map with a valid name is refused with bad_name."""
    assert code_of(parse_name, raw) == ErrorCode.BAD_NAME


def test_join_parses_room_and_since() -> None:
    """join takes a room and an optional non-negative since."""
    assert parse_join({"room": "lobby"}) == JoinRequest("lobby", None)  # type: ignore[arg-type]
    assert parse_join({"room": "a.b:c-d_9", "since": 0}).since == 0
    assert parse_join({"room": "x", "since": 7, "extra": 1}).since == 7


@pytest.mark.parametrize("payload", [
    None, [], "lobby", 3, {}, {"room": ""}, {"room": "x" * 65}, {"room": "has space"},
    {"room": "café"}, {"room": "a/b"}, {"room": 5}, {"room": "x", "since": -1},
    {"room": "x", "since": "3"}, {"room": "x", "since": True}, {"room": "x", "since": 1.5},
    {"room": "x", "since": 2**53}, {"room": "x", "since": 2**63},
])
def test_join_refuses_malformed(payload: object) -> None:
    """A malformed join payload is bad_request."""
    assert code_of(parse_join, payload) == ErrorCode.BAD_REQUEST


def test_send_limits() -> None:
    """Text is 1 to max characters: longer is too_large, empty is bad_request."""
    ok = parse_send({"room": "r", "text": "x" * 10, "client_id": "c1"}, max_text_length=10)
    assert ok == SendRequest("r", "x" * 10, "c1")  # type: ignore[arg-type]
    assert parse_send({"room": "r", "text": "hi"}, max_text_length=10).client_id is None
    too_long = {"room": "r", "text": "x" * 11}
    assert code_of(parse_send, too_long, max_text_length=10) == ErrorCode.TOO_LARGE
    for bad in ({"room": "r", "text": ""}, {"room": "r", "text": " \n "},
                {"room": "r", "text": 5}, {"room": "r"}, {"text": "hi"},
                {"room": "r", "text": "hi", "client_id": ""},
                {"room": "r", "text": "hi", "client_id": 7},
                {"room": "r", "text": "hi", "client_id": "x" * 65},
                {"room": "r", "text": "a\ud800b"}):
        assert code_of(parse_send, bad, max_text_length=10) == ErrorCode.BAD_REQUEST, bad


def test_history_arguments() -> None:
    """history takes before or after (not both) and a limit of 1 to 200."""
    assert parse_history({"room": "r"}) == HistoryRequest("r", None, None, 50)  # type: ignore
    assert parse_history({"room": "r", "before": 10, "limit": 200}).limit == 200
    assert parse_history({"room": "r", "after": 0}).after == 0
    for bad in ({"room": "r", "before": 1, "after": 0}, {"room": "r", "limit": 0},
                {"room": "r", "limit": 201}, {"room": "r", "before": 0},
                {"room": "r", "after": -1}, {"room": "r", "limit": "5"},
                {"room": "r", "before": 2**63}, {"room": "r", "after": 2**64}):
        assert code_of(parse_history, bad) == ErrorCode.BAD_REQUEST, bad


def test_typing_leave_rooms() -> None:
    """typing needs a boolean; leave a room; rooms takes nothing or a map."""
    assert parse_typing({"room": "r", "active": True}) == TypingRequest("r", True)  # type: ignore
    assert code_of(parse_typing, {"room": "r", "active": 1}) == ErrorCode.BAD_REQUEST
    assert code_of(parse_typing, {"room": "r"}) == ErrorCode.BAD_REQUEST
    assert parse_leave({"room": "r"}).room == "r"
    parse_rooms(None)
    parse_rooms({})
    assert code_of(parse_rooms, "all") == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("field", ["text", "client_id"])
def test_send_refuses_nul_before_any_store(field: str) -> None:
    """U+0000 (which PostgreSQL cannot store) is bad_request, whatever the store."""
    payload = {"room": "r", "text": "hi", "client_id": "c1", field: "a\x00b"}
    with pytest.raises(ChatError) as refused:
        parse_send(payload, max_text_length=4000)
    assert refused.value.code == ErrorCode.BAD_REQUEST and "U+0000" in str(refused.value)


def test_searches_are_parsed_into_their_terms_and_bounded() -> None:
    """A query's words are its terms (case-folded, each once); up to 8 words of
    up to 64 characters are looked for, and more is refused, not cut short."""
    req = parse_search({"query": "Deploy, deploy FAILED ½"})
    assert req.terms == ["deploy", "failed", "½"] and req.room is None and req.limit == 20
    assert parse_search({"query": " ".join("abcdefgh")}).terms == list("abcdefgh")
    assert parse_search({"query": "x" * 64}).terms == ["x" * 64]
    for query in (" ".join("abcdefghi"), "x" * 65, "?! …", "´"):
        assert code_of(parse_search, {"query": query}) == ErrorCode.BAD_REQUEST, query


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_text_is_cut_into_the_words_the_unicode_rule_finds(text: str) -> None:
    """index_words' fast path for ASCII agrees with the rule for any script."""
    slow = list(dict.fromkeys(text[a:b].casefold()[:MAX_TERM_LENGTH] for a, b in _words(text)))
    assert index_words(text) == slow
