"""Errors a client can see.

Every client-to-server event is answered with an ack; a failure is
``{"ok": False, "error": {"code": ..., "message": ...}}`` where ``code`` is
one of :class:`ErrorCode`. The tree is flat, with one root:

* :exc:`ChatError` -- carries an :class:`ErrorCode` and a message meant for
  people; raised by parsing (``bad_request``, ``too_large``), by the chat
  namespace (``not_member``) and by backends (``unavailable``).

Connect refusals are not acks: they carry ``bad_name`` / ``unauthorized`` in
the ``data`` of Socket.IO's CONNECT_ERROR packet
(:func:`app.chat.namespace.refuse`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    NOT_MEMBER = "not_member"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # connect refusals only
    BAD_NAME = "bad_name"


# the HTTP status of each code, where the chat answers over HTTP (app.api, app.uploads)
HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400, ErrorCode.BAD_NAME: 400, ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403, ErrorCode.NOT_MEMBER: 403, ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409, ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500, ErrorCode.UNAVAILABLE: 503,
}


class ChatError(Exception):
    """A failure the client is told about, with a stable code."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after: int | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # ms, with rate_limited

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.retry_after is not None:
            error["retry_after"] = self.retry_after
        return error
