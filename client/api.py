"""A small client of Roomcast's HTTP API (``/api/v1/``, docs/api.md), for
backends and scripts: one key, one kept-alive HTTP session.

    async with ApiClient("https://chat.example.com", key) as api:
        message = await api.post("builds", "build #7 failed", client_id="build-7")

A refusal raises :class:`ApiError` with the server's code (the socket
protocol's), message and HTTP status; ``retry_after`` (seconds) with 429.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from . import uploads

JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class ApiClient:
    def __init__(self, url: str, key: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.base = self.url + "/api/v1"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, method: str, path: str, body: JSON | None = None, *,
                   headers: dict[str, str] | None = None, **query: Any) -> JSON:
        """One request; the reply's JSON, or :class:`ApiError`."""
        if self._http is None:
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        params = {k: str(v) for k, v in query.items() if v is not None}
        async with self._http.request(method, self.base + path, json=body, params=params,
                                      headers=headers) as reply:
            data = await reply.json(content_type=None)
        if not isinstance(data, dict) or not data.get("ok"):
            data = data if isinstance(data, dict) else {}
            error = data.get("error") or {}
            retry = reply.headers.get("Retry-After")
            raise ApiError(reply.status, str(error.get("code", "internal")),
                           str(error.get("message", reply.reason)),
                           float(retry) if retry else None)
        return dict(data)

    @staticmethod
    def _room(room: str) -> str:
        return "/rooms/" + quote(room, safe="")

    async def post(self, room: str, text: str, *, client_id: str | None = None,
                   reply_to: int | None = None, attachments: list[str] | None = None) -> JSON:
        """Post a message (with the files ``attachments``, ids :meth:`upload`
        returned); retried with the same ``client_id`` (one is made up if none
        is given), it is stored and delivered once. The stored message."""
        body: JSON = {"text": text, "client_id": client_id or uuid.uuid4().hex}
        if reply_to is not None:
            body["reply_to"] = reply_to
        if attachments:
            body["attachments"] = list(attachments)
        return dict((await self.call("POST", self._room(room) + "/messages", body))["message"])

    async def upload(self, room: str, path: str | Path, *, name: str | None = None) -> str:
        """Upload the file at ``path`` for ``room`` (tus, resumable); its id, to
        :meth:`post` in ``attachments``."""
        source = Path(path)
        grant = (await self.call("POST", self._room(room) + "/uploads", {
            "name": name or source.name, "size": source.stat().st_size}))["upload"]
        try:
            assert self._http is not None  # (made by the call before)
            await uploads.tus_upload(self._http, self.url, grant, source)
        except uploads.UploadFailed as exc:
            raise ApiError(exc.status or 503, "upload_failed", str(exc)) from None
        return str(grant["id"])

    async def edit(self, room: str, seq: int, text: str) -> JSON:
        return await self.call("PATCH", f"{self._room(room)}/messages/{seq}", {"text": text})

    async def delete(self, room: str, seq: int) -> JSON:
        return await self.call("DELETE", f"{self._room(room)}/messages/{seq}")

    async def react(self, room: str, seq: int, emoji: str) -> JSON:
        return await self.call("PUT", f"{self._room(room)}/messages/{seq}/reactions/"
                               + quote(emoji, safe=""))

    async def unreact(self, room: str, seq: int, emoji: str) -> JSON:
        return await self.call("DELETE", f"{self._room(room)}/messages/{seq}/reactions/"
                               + quote(emoji, safe=""))

    async def history(self, room: str, *, before: int | None = None,
                      after: int | None = None, limit: int | None = None) -> JSON:
        return await self.call("GET", self._room(room) + "/messages", before=before,
                               after=after, limit=limit)

    async def search(self, room: str, query: str, *, cursor: str | None = None) -> JSON:
        return await self.call("GET", self._room(room) + "/search", q=query, cursor=cursor)

    async def rooms(self) -> list[JSON]:
        return list((await self.call("GET", "/rooms"))["rooms"])

    async def members(self, room: str) -> list[str]:
        """Everyone in ``room``, sorted (a large room's pages, one after another)."""
        names: set[str] = set()
        page = await self.call("GET", self._room(room) + "/members")
        names.update(page["members"])
        while page.get("next"):
            page = await self.call("GET", self._room(room) + "/members?next="
                                   + quote(page["next"]))
            names.update(page["members"])
        return sorted(names)

    async def cursor(self, room: str, name: str) -> int | None:
        """Where this key's cursor ``name`` stands in ``room`` (None: never moved)."""
        seq = (await self.call("GET", f"{self._room(room)}/cursors/{quote(name)}"))["seq"]
        return None if seq is None else int(seq)

    async def advance(self, room: str, name: str, seq: int) -> int:
        """Move the cursor to ``seq`` once the entries up to it are handled."""
        reply = await self.call("PUT", f"{self._room(room)}/cursors/{quote(name)}", {"seq": seq})
        return int(reply["seq"])

    async def direct(self, *people: str) -> JSON:
        return await self.call("POST", "/directs", {"with": list(people)})

    async def act(self, room: str, kind: str, *, client_id: str | None = None,
                  **fields: Any) -> JSON:
        """Govern ``room`` (``kind``: create, configure, role, remove, ban, unban,
        mute, unmute; ``fields`` as docs/api.md says: user, role, seconds,
        reason, private, topic, slow, locked); retried with the same
        ``client_id`` (one is made up), it is done once. The ack: ``action``,
        the room's ``settings``, the person's ``standing``."""
        return await self.call("POST", self._room(room) + "/actions",
                               {"kind": kind, "client_id": client_id or uuid.uuid4().hex,
                                **fields})

    async def room_info(self, room: str) -> JSON:
        return await self.call("GET", self._room(room))

    async def audit(self, room: str, *, before: int | None = None,
                    limit: int | None = None) -> JSON:
        """The room's actions, newest first (moderate)."""
        return await self.call("GET", self._room(room) + "/actions", before=before,
                               limit=limit)

    async def disconnect(self, name: str) -> JSON:
        return await self.call("POST", "/people/" + quote(name, safe="") + "/disconnect")
