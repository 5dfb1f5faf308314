"""Signed tokens for token mode (HS256 JWT), as a sign-in service would issue them."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "test-secret-not-for-production-0123456789"
OTHER = "some-other-secret-of-a-proper-length-0123"


def token(secret: str = SECRET, **claims: Any) -> str:
    """A token with ``claims`` (expiring in ten minutes unless ``exp`` is given)."""
    claims.setdefault("exp", int(time.time()) + 600)
    return jwt.encode(claims, secret, algorithm="HS256")
