"""Peers: where a connection comes from.

A client's address is what per-address bounds count and logs show: the
socket's peer, or, behind a proxy we trust (``--trust-forwarded``), the
address that proxy appended to ``X-Forwarded-For``.
"""

from __future__ import annotations

from typing import Any


def client_address(environ: dict[str, Any], trust_forwarded: bool) -> str:
    """The peer's address; with ``trust_forwarded``, the one our proxy appended
    to X-Forwarded-For (the last entry: earlier ones come from the client)."""
    if trust_forwarded:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return str(forwarded.split(",")[-1].strip())
    return str(environ.get("REMOTE_ADDR", ""))
