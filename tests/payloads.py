"""Payloads for property-based tests: anything a serializer can carry, and maps
shaped like the chat's payloads with some fields wrong."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

EVENTS = ["join", "leave", "send", "history", "typing", "rooms", "nosuch", "message"]
CODES = {"bad_request", "not_member", "not_found", "forbidden", "too_large", "rate_limited",
         "unauthorized", "unavailable", "internal"}
ROOMS = ["r1", "r2"]


def values(serializer: str) -> st.SearchStrategy[Any]:
    """Anything the wire format can carry."""
    text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                        st.floats(allow_nan=False), text,
                        *([st.binary(max_size=20)] if serializer == "msgpack" else []))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def shaped(serializer: str) -> st.SearchStrategy[Any]:
    """Maps that look like real payloads, with some fields wrong."""
    anything = values(serializer)
    return st.fixed_dictionaries({}, optional={
        "room": st.one_of(st.sampled_from(ROOMS), anything),
        "text": st.one_of(st.text(min_size=1, max_size=50), anything),
        "client_id": st.one_of(st.text(min_size=1, max_size=70), anything),
        "since": st.one_of(st.integers(-5, 50), anything),
        "before": st.one_of(st.integers(-5, 50), anything),
        "after": st.one_of(st.integers(-5, 50), anything),
        "limit": st.one_of(st.integers(-5, 300), anything),
        "active": st.one_of(st.booleans(), anything),
        "seq": st.one_of(st.integers(-5, 50), anything),
        "emoji": st.one_of(st.sampled_from(["👍", "❤️", "🇫🇷", "x"]), anything),
        "query": st.one_of(st.text(min_size=1, max_size=20), anything),
        "cursor": st.one_of(st.text(max_size=20), anything),
        "with": st.one_of(st.lists(st.text(min_size=1, max_size=10), max_size=3), anything),
        "token": st.one_of(st.text(max_size=20), anything),
    })


def check_fuzzed_ack(ack: Any, event: str, payload: Any, max_text_length: int) -> None:
    """An ack to any payload: ``{ok: ...}``; a refusal with a known code, never
    internal; whatever was stored, a valid message."""
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if ack["ok"]:
        message = ack.get("message")
        if message is not None:
            assert message["room"] in ROOMS and isinstance(message["text"], str)
            assert 1 <= len(message["text"]) <= max_text_length
            assert message["client_id"] is None or 1 <= len(message["client_id"]) <= 64
    else:
        assert ack["error"]["code"] in CODES and isinstance(ack["error"]["message"], str)
        assert ack["error"]["code"] != "internal", (event, payload, ack)
