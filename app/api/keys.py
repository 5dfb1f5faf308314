"""API keys: who may call the HTTP API, as whom, for what, in which rooms.

A key is a random secret (``rc_`` and 43 URL-safe characters: 256 bits)
that its holder sends as ``Authorization: Bearer <key>``. The server keeps
only its SHA-256 (a key of 256 random bits needs no slow hash), configured
as one entry of ``--api-keys``::

    NAME:SCOPES:ROOMS:SHA256

``NAME`` is the identity the key acts as (a bot's or a system's name, shown
as the sender of what it posts); ``SCOPES`` a comma-separated subset of
:data:`SCOPES`; ``ROOMS`` comma-separated patterns of the rooms it may act
in (``*`` any, ``builds-*``, ``ops``); ``SHA256`` the key's digest in hex.
``python -m app.tools.apikey`` makes a key and prints its entry. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..core.models import RoomName

# what a key may do; "admin" may do everything
SCOPES = {
    "publish": "post, edit, delete and react as the key's identity; open direct conversations",
    "read": "history, search, the rooms list, members and presence",
    "moderate": "act as a moderator of the key's rooms: delete anyone's message, remove, ban"
                " and mute people, set a room's topic, slow mode and lock",
    "admin": "everything above, as an owner of the key's rooms (who may join, roles), and end"
             " a person's connections on every node",
}
PREFIX = "rc_"
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:*?-]{1,64}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[^\s:,]{1,32}")


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    rooms: tuple[str, ...]  # patterns
    digest: str

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def admits(self, room: RoomName) -> bool:
        """Whether the key may act in ``room`` (one of its patterns matches)."""
        return any(fnmatchcase(room, pattern) for pattern in self.rooms)


def digest(key: str) -> str:
    """The SHA-256 of a key, in hex: what the server keeps."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: ``rc_`` and 256 random bits, URL-safe."""
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def entry(name: str, scopes: str, rooms: str, key: str) -> str:
    """The ``--api-keys`` entry of ``key`` (checked as the server will)."""
    line = f"{name}:{scopes}:{rooms}:{digest(key)}"
    parse_keys(line)
    return line


def parse_keys(text: str) -> dict[str, ApiKey]:
    """The keys of an ``--api-keys`` value (entries separated by whitespace or
    ``;``), by digest; ``ValueError`` saying which entry is wrong and why."""
    keys: dict[str, ApiKey] = {}
    for number, raw in enumerate(re.split(r"[\s;]+", text.strip()), start=1):
        if not raw:
            continue
        parts = raw.split(":")
        where = f"api_keys entry {number}"
        if len(parts) != 4:
            raise ValueError(f"{where}: expected NAME:SCOPES:ROOMS:SHA256, "
                             f"got {len(parts)} fields")
        name, scopes, rooms, key_digest = parts
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"{where}: the name must be 1 to 32 characters, no space, "
                             "':' or ','")
        scope_set = frozenset(s for s in scopes.split(",") if s)
        if not scope_set or not scope_set <= SCOPES.keys():
            raise ValueError(f"{where}: scopes must be some of {', '.join(SCOPES)}")
        patterns = tuple(p for p in rooms.split(",") if p)
        if not patterns or not all(_PATTERN_RE.fullmatch(p) for p in patterns):
            raise ValueError(f"{where}: rooms must be room names or patterns (* and ?), "
                             "comma-separated")
        if not _DIGEST_RE.fullmatch(key_digest):
            raise ValueError(f"{where}: the last field must be the key's SHA-256 in "
                             "lowercase hex (python -m app.tools.apikey prints it)")
        if key_digest in keys:
            raise ValueError(f"{where}: the same key twice")
        keys[key_digest] = ApiKey(name, scope_set, patterns, key_digest)
    return keys
