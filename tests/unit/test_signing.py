"""Signed, expiring tokens (app/core/signing.py): what upload grants and file
links rest on."""

from __future__ import annotations

import pytest

from app.core.signing import BadToken, Expired, matches, sign, signature, verify

SECRET = b"k" * 32


def test_a_token_carries_its_payload_until_it_expires() -> None:
    token = sign(SECRET, "upload", {"id": "abc", "size": 5, "exp": 100})
    assert verify(SECRET, "upload", token, now=99.5) == {"id": "abc", "size": 5, "exp": 100}
    with pytest.raises(Expired):
        verify(SECRET, "upload", token, now=100)


@pytest.mark.parametrize("change", [
    lambda t: t.replace(t.split(".")[0], sign(SECRET, "upload", {"id": "other",
                                                                 "exp": 100}).split(".")[0]),
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: t.split(".")[0],
    lambda t: "",
    lambda t: "!!!." + t.split(".")[1],
], ids=["another payload", "another signature", "no signature", "empty", "garbage"])
def test_a_changed_token_is_refused(change: object) -> None:
    token = sign(SECRET, "upload", {"id": "abc", "exp": 100})
    with pytest.raises(BadToken) as refused:
        verify(SECRET, "upload", change(token), now=0)  # type: ignore[operator]
    assert not isinstance(refused.value, Expired)


def test_a_token_is_good_for_its_purpose_and_its_secret_only() -> None:
    token = sign(SECRET, "upload", {"exp": 100})
    for secret, purpose in ((SECRET, "file"), (b"j" * 32, "upload")):
        with pytest.raises(BadToken):
            verify(secret, purpose, token, now=0)
    mac = signature(SECRET, "file", "id\noriginal\n100")
    assert matches(SECRET, "file", "id\noriginal\n100", mac)
    assert not matches(SECRET, "file", "id\nthumbnail\n100", mac)
    assert not matches(SECRET, "upload", "id\noriginal\n100", mac)
