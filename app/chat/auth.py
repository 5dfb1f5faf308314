"""Who is connecting: the open name-only mode, or signed tokens.

Without a secret, ``auth = {"name": N}`` is taken at its word (any name).
With ``--jwt-secret`` (HS256, PyJWT), ``auth`` must be ``{"token": T}``: the
name comes from the token's ``name`` claim (or ``sub``), never from the
client; ``exp`` is required; a missing, forged or expired token is refused
with ``unauthorized``. An optional ``rooms`` claim lists the only rooms the
holder may join.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import ChatError, ErrorCode
from .models import RoomName
from .protocol import parse_name


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    rooms: frozenset[RoomName] | None = None  # None: any room

    def may_join(self, room: RoomName) -> bool:
        return self.rooms is None or room in self.rooms


def identify(auth: object, jwt_secret: str) -> Identity:
    """The identity a connect's ``auth`` proves; raises ChatError to refuse."""
    if not jwt_secret:
        return Identity(parse_name(auth))
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise ChatError(ErrorCode.UNAUTHORIZED, 'connect with auth {"token": "..."}')
    try:
        claims = jwt.decode(token, jwt_secret, algorithms=["HS256"],
                            options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token has expired") from None
    except jwt.InvalidTokenError:
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token is not valid") from None
    try:
        name = parse_name({"name": claims.get("name", claims.get("sub"))})
    except ChatError:
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token names no valid user") from None
    rooms = claims.get("rooms")
    if rooms is None:
        return Identity(name)
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token's rooms claim is not a list")
    return Identity(name, frozenset(RoomName(r) for r in rooms))


def origin_policy(extra: Iterable[str]) -> Callable[[str | None, dict[str, Any]], bool]:
    """python-engineio's origin check: the server's own origin (as the browser
    sees it, through a proxy's X-Forwarded-Proto/Host) plus ``extra``."""
    allowed = {o.strip().rstrip("/") for o in extra if o.strip()}

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or origin in allowed:
            return True  # no Origin header: not a browser, nothing to protect
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http"))
        host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", ""))
        own = f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}"
        return bool(origin == own or origin == f"{environ.get('wsgi.url_scheme')}://"
                    f"{environ.get('HTTP_HOST')}")
    return check
