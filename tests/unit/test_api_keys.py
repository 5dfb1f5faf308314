"""API keys: the entries the server is configured with, and what a key admits."""

from __future__ import annotations

import pytest

from app.api.keys import digest, entry, new_key, parse_keys
from app.core.models import RoomName


def test_an_entry_holds_the_keys_digest_and_admits_what_it_says() -> None:
    key = new_key()
    assert key.startswith("rc_") and len(key) == 46 and key != new_key()
    line = entry("ci", "publish,read", "builds-*,ops", key)
    assert key not in line and line.endswith(digest(key))
    (parsed,) = parse_keys(f"  {line} ; ").values()
    assert parsed.name == "ci" and parsed.may("read") and not parsed.may("moderate")
    assert parsed.admits(RoomName("builds-12")) and parsed.admits(RoomName("ops"))
    assert not parsed.admits(RoomName("ops2")) and not parsed.admits(RoomName("dm:abc"))
    admin = next(iter(parse_keys(entry("root", "admin", "*", new_key())).values()))
    assert all(admin.may(s) for s in ("publish", "read", "moderate", "admin"))
    assert parse_keys("") == {}


@pytest.mark.parametrize("bad, says", [
    ("ci:publish:*", "NAME:SCOPES:ROOMS:SHA256"),
    ("ci:publish:*:abc", "SHA-256"),
    ("ci:fly:*:" + "0" * 64, "scopes"),
    ("ci::*:" + "0" * 64, "scopes"),
    ("ci:read:bad room:" + "0" * 64, "NAME:SCOPES"),  # (split at the space: two entries)
    ("ci:read:a/b:" + "0" * 64, "rooms"),
    (":read:*:" + "0" * 64, "name"),
    ("ci:read:*:" + "0" * 64 + " ci2:read:*:" + "0" * 64, "twice"),
])
def test_a_bad_entry_is_refused_saying_why(bad: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_keys(bad)
