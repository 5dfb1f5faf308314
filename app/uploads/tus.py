"""The headers of tus 1.0 (https://tus.io/protocols/resumable-upload), read
and written without I/O: the core protocol and the creation, termination and
expiration extensions.

Every request but OPTIONS carries ``Tus-Resumable: 1.0.0`` (else 412); every
response carries it back. Numbers are non-negative decimal integers without
sign or spaces (``Upload-Length``, ``Upload-Offset``); ``Upload-Metadata`` is
comma-separated ``key base64value`` pairs.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.utils import formatdate

from ..core.errors import ChatError, ErrorCode

VERSION = "1.0.0"
EXTENSIONS = "creation,termination,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
_NUMBER = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[^\s,]+")


def number(value: str | None, header: str) -> int:
    """A tus number header's value; ``bad_request`` if missing or malformed."""
    if value is None or not _NUMBER.fullmatch(value):
        raise ChatError(ErrorCode.BAD_REQUEST, f"{header} must be a non-negative integer")
    return int(value)


def metadata(value: str | None) -> dict[str, str]:
    """``Upload-Metadata`` as a dict (a value not UTF-8 is left out);
    ``bad_request`` if it is not key/base64 pairs."""
    found: dict[str, str] = {}
    if not value:
        return found
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _KEY.fullmatch(key) or key in found:
            raise ChatError(ErrorCode.BAD_REQUEST, "Upload-Metadata must be key and base64 "
                            "value pairs, each key once")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ChatError(ErrorCode.BAD_REQUEST,
                            f"Upload-Metadata: {key}'s value is not base64") from None
        try:
            found[key] = decoded.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return found


def expires(at: float) -> str:
    """``Upload-Expires``: an HTTP date (RFC 9110)."""
    return formatdate(at, usegmt=True)


def bearer(authorization: str | None) -> str:
    """The token of ``Authorization: Bearer <token>``; ``unauthorized`` if none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ChatError(ErrorCode.UNAUTHORIZED, "send the upload's token (the upload event's "
                        "answer) as Authorization: Bearer <token>")
    return token.strip()
