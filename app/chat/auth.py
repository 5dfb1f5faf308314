"""Who is connecting: the open name-only mode, or signed tokens.

Without a secret, ``auth = {"name": N}`` is taken at its word (any name).
With ``--jwt-secret`` (HS256, PyJWT), ``auth`` must be ``{"token": T}``: the
name comes from the token's ``name`` claim (or ``sub``), never from the
client; ``exp`` is required; a missing, forged or expired token is refused
with ``unauthorized``. An optional ``rooms`` claim lists the only rooms the
holder may join. The namespace ends a connection when its token's ``exp``
passes, unless the client has sent a fresh token with ``renew`` by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from ..core.errors import ChatError, ErrorCode
from ..core.models import RoomName
from ..core.policy import ANYONE, MODERATOR, OWNER
from .protocol import parse_name


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    rooms: frozenset[RoomName] | None = None  # None: any room
    expires: float | None = None  # the token's exp (seconds since the epoch); None: never
    moderator: bool = False  # the token's moderator claim: a moderator of every room
    admin: bool = False  # an API key's admin scope: an owner of every room it may enter

    def may_join(self, room: RoomName) -> bool:
        return self.rooms is None or room in self.rooms

    @property
    def power(self) -> int:
        """The level the identity gives in every room (:mod:`app.core.policy`)."""
        return OWNER if self.admin else MODERATOR if self.moderator else ANYONE


def identify(auth: object, jwt_secret: str) -> Identity:
    """The identity a connect's ``auth`` proves; raises ChatError to refuse."""
    if not jwt_secret:
        return Identity(parse_name(auth))
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise ChatError(ErrorCode.UNAUTHORIZED, 'connect with auth {"token": "..."}')
    return verify_token(token, jwt_secret)


def verify_token(token: str, jwt_secret: str) -> Identity:
    """The identity a signed token proves; raises ChatError(unauthorized) if none."""
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
    expires = float(claims["exp"])  # PyJWT has checked it is a number, and not past
    moderator = claims.get("moderator", False)
    if not isinstance(moderator, bool):
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token's moderator claim is not true or "
                        "false")
    rooms = claims.get("rooms")
    if rooms is None:
        return Identity(name, None, expires, moderator)
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise ChatError(ErrorCode.UNAUTHORIZED, "the token's rooms claim is not a list")
    return Identity(name, frozenset(RoomName(r) for r in rooms), expires, moderator)


def origin_policy(extra: Iterable[str], *, trust_forwarded: bool = False
                  ) -> Callable[[str | None, dict[str, Any]], bool]:
    """The Engine.IO server's origin check: the server's own origin plus
    ``extra``. Its own origin is ``http://`` and the request's Host; only with
    ``trust_forwarded`` (behind our proxy) is it the one the proxy says the
    browser saw (X-Forwarded-Proto and X-Forwarded-Host), since otherwise any
    client can send those headers and name whatever origin it claims."""
    allowed = {o.strip().rstrip("/") for o in extra if o.strip()}

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None or origin in allowed:
            return True  # no Origin header: not a browser, nothing to protect
        host = environ.get("HTTP_HOST", "")
        if origin == f"http://{host}":
            return True
        if not trust_forwarded:
            return False
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", "http").split(",")[0].strip()
        host = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0].strip()
        return origin == f"{scheme}://{host}"
    return check


def host_policy(hosts: Iterable[str], *, trust_forwarded: bool = False
                ) -> Callable[[Any], bool] | None:
    """With ``--allowed-hosts``, whether a request (anything with ``headers``)
    names one of them as its Host (and, behind a trusted proxy, its
    X-Forwarded-Host): a page on a private network cannot then be reached
    through a name an attacker controls (DNS rebinding). None: no check."""
    allowed = {h.strip().lower() for h in hosts if h.strip()}
    if not allowed:
        return None

    def check(request: Any) -> bool:
        names = [request.headers.get("Host", "")]
        if trust_forwarded and "X-Forwarded-Host" in request.headers:
            names.append(request.headers["X-Forwarded-Host"].split(",")[0])
        return all(name.strip().lower() in allowed for name in names)
    return check
