"""Signed, expiring tokens: what the server hands out and later checks
without keeping anything (an upload's grant, a file's download link).

A token is ``<payload>.<signature>``, each base64url without padding: the
payload is compact JSON, the signature HMAC-SHA256 of the payload under a
secret and a purpose (so a token made for one use is not valid for another).
Pure: no I/O, no clock of its own (``now`` is given).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


class BadToken(ValueError):
    """Not a token this secret signed for this purpose, or one that expired."""


class Expired(BadToken):
    """A token this secret signed for this purpose, whose time is past."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature(secret: bytes, purpose: str, message: str) -> str:
    """HMAC-SHA256 of ``message`` for ``purpose``, base64url."""
    return _b64(hmac.new(secret, f"{purpose}\n{message}".encode(), hashlib.sha256).digest())


def sign(secret: bytes, purpose: str, payload: dict[str, Any]) -> str:
    """A token carrying ``payload`` (its ``exp``, seconds since the epoch, is checked)."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{signature(secret, purpose, body)}"


def verify(secret: bytes, purpose: str, token: str, now: float) -> dict[str, Any]:
    """The payload of ``token``; :exc:`BadToken` unless this secret signed it for
    ``purpose`` and its ``exp`` is after ``now``."""
    body, dot, mac = token.partition(".")
    if not dot or not hmac.compare_digest(mac, signature(secret, purpose, body)):
        raise BadToken("not a valid token")
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        raise BadToken("not a valid token") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), (int, float)):
        raise BadToken("not a valid token")
    if payload["exp"] <= now:
        raise Expired("the token has expired")
    return payload


def matches(secret: bytes, purpose: str, message: str, mac: str) -> bool:
    """Whether ``mac`` is :func:`signature` of ``message`` for ``purpose``."""
    return hmac.compare_digest(mac, signature(secret, purpose, message))
