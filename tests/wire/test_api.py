"""The HTTP API over real HTTP on a real server, beside real Socket.IO clients:
what a backend posts reaches the room's members as a socket's message does,
keys are held to their scopes, rooms and rate, and bad input changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from app.api.keys import entry, new_key
from app.core.models import RoomName
from client.api import ApiClient, ApiError

from ..conftest import PeerFactory, ServeFactory, Served, until
from ..tokens import SECRET, token
from ..tus import tus_upload

API = "/api/v1"


@dataclass
class Client:
    """An API client: a key over one kept-alive HTTP session."""

    http: aiohttp.ClientSession
    base: str
    key: str

    async def call(self, method: str, path: str, body: Any = None, *,
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   **query: Any) -> tuple[int, dict[str, Any], Any]:
        async with self.http.request(
                method, self.base + API + path, json=body if raw is None else None,
                data=raw, params={k: str(v) for k, v in query.items()},
                headers={"Authorization": f"Bearer {self.key}", **(headers or {})}) as reply:
            return reply.status, await reply.json(), reply.headers

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any
                 ) -> dict[str, Any]:
        status, reply, _ = await self.call(method, path, body, **kwargs)
        assert status == 200 and reply["ok"] is True, (status, reply)
        return reply

    async def refused(self, method: str, path: str, body: Any = None, **kwargs: Any
                      ) -> tuple[int, str]:
        status, reply, _ = await self.call(method, path, body, **kwargs)
        assert reply["ok"] is False and reply["error"]["message"], reply
        return status, reply["error"]["code"]


KEYS = {  # name: (scopes, rooms)
    "ci": ("publish,read", "builds-*,lobby"),
    "reader": ("read", "*"),
    "mod": ("publish,moderate", "*"),
    "ops": ("admin", "*"),
}


@pytest.fixture
async def keyed(serve: ServeFactory) -> AsyncIterator[tuple[Served, dict[str, Client]]]:
    """A server with the KEYS configured, and a client of each."""
    secrets = {name: new_key() for name in KEYS}
    served = await serve(api_keys=" ".join(entry(name, *KEYS[name], secrets[name])
                                           for name in KEYS))
    async with aiohttp.ClientSession() as http:
        yield served, {name: Client(http, served.url, key) for name, key in secrets.items()}


async def test_a_post_reaches_the_room_once_and_a_retry_is_stored_once(
        keyed: tuple[Served, dict[str, Client]], peer: PeerFactory) -> None:
    served, clients = keyed
    ci = clients["ci"]
    alice = await peer("alice", server=served)
    await alice.join("builds-1")
    posted = (await ci.ok("POST", "/rooms/builds-1/messages", {"text": "build #7 failed"},
                          headers={"Idempotency-Key": "build-7"}))["message"]
    assert posted["from"] == "ci" and posted["seq"] == 1 and posted["client_id"] == "build-7"
    assert await alice.next("message") == posted
    again = await ci.ok("POST", "/rooms/builds-1/messages", {"text": "build #7 failed"},
                        headers={"Idempotency-Key": "build-7"})
    assert again["message"] == posted  # stored once, not broadcast again
    mine = await alice.send("builds-1", "on it")
    history = await ci.ok("GET", "/rooms/builds-1/messages")
    assert [m["seq"] for m in history["messages"]] == [1, 2] and history["more"] is False
    assert history["messages"][1] == mine
    assert alice.pending("message") == []


async def test_history_pages_back_to_the_first_message_and_reads_on(
        keyed: tuple[Served, dict[str, Client]]) -> None:
    _, clients = keyed
    ci = clients["ci"]
    for i in range(1, 8):
        await ci.ok("POST", "/rooms/lobby/messages", {"text": f"m{i}"})
    await ci.ok("PATCH", "/rooms/lobby/messages/2", {"text": "m2, edited"})
    seen: list[int] = []
    before = None
    while True:
        page = await ci.ok("GET", "/rooms/lobby/messages", limit=3,
                           **({"before": before} if before else {}))
        seen = [m["seq"] for m in page["messages"]] + seen
        if not page["more"]:
            break
        before = page["messages"][0]["seq"]
    assert seen == list(range(1, 8))
    stream = await ci.ok("GET", "/rooms/lobby/messages", after=6)
    assert [m["seq"] for m in stream["messages"]] == [7]
    assert [(c["seq"], c["kind"], c["target"]) for c in stream["changes"]] == [(8, "edit", 2)]


async def test_edit_delete_and_react_as_the_key_and_moderation(
        keyed: tuple[Served, dict[str, Client]], peer: PeerFactory) -> None:
    served, clients = keyed
    ci, mod = clients["ci"], clients["mod"]
    alice = await peer("alice", server=served)
    await alice.join("lobby")
    await ci.ok("POST", "/rooms/lobby/messages", {"text": "deploying"})
    await alice.next("message")
    edited = await ci.ok("PATCH", "/rooms/lobby/messages/1", {"text": "deployed"})
    assert edited["message"]["text"] == "deployed" and edited["change"]["kind"] == "edit"
    assert (await alice.next("change"))["seq"] == edited["change"]["seq"]
    reacted = await ci.ok("PUT", "/rooms/lobby/messages/1/reactions/🎉")
    assert reacted["message"]["reactions"] == [{"emoji": "🎉", "count": 1, "names": ["ci"]}]
    await ci.ok("DELETE", "/rooms/lobby/messages/1/reactions/🎉")
    theirs = await alice.send("lobby", "spam spam spam")
    assert await ci.refused("DELETE", f"/rooms/lobby/messages/{theirs['seq']}") == (
        403, "forbidden")
    gone = await mod.ok("DELETE", f"/rooms/lobby/messages/{theirs['seq']}")
    assert gone["message"]["deleted"] is True
    assert await ci.refused("PATCH", "/rooms/lobby/messages/99", {"text": "x"}) == (
        404, "not_found")


async def test_keys_are_held_to_their_scopes_and_rooms(
        keyed: tuple[Served, dict[str, Client]]) -> None:
    served, clients = keyed
    ci, reader = clients["ci"], clients["reader"]
    assert await reader.refused("POST", "/rooms/lobby/messages", {"text": "x"}) == (
        403, "forbidden")
    assert await ci.refused("POST", "/rooms/ops/messages", {"text": "x"}) == (403, "forbidden")
    assert await ci.refused("GET", "/rooms/ops/messages") == (403, "forbidden")
    assert await ci.refused("POST", "/people/alice/disconnect") == (403, "forbidden")
    for bad in ("", "Bearer", "Bearer rc_not-a-key", "Basic " + ci.key, ci.key):
        status, reply, _ = await ci.call("GET", "/rooms", headers={"Authorization": bad})
        assert (status, reply["error"]["code"]) == (401, "unauthorized"), bad
    assert (await served.chat.store.page(RoomName("ops"))).messages == []


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(serve: ServeFactory) -> None:
    key = new_key()
    served = await serve(api_keys=entry("ci", "publish,read", "*", key), max_text_length=10,
                         api_max_body=1000)
    async with aiohttp.ClientSession() as http:
        ci = Client(http, served.url, key)
        cases: list[tuple[str, str, Any, bytes | None, int, str]] = [
            ("POST", "/rooms/lobby/messages", None, b"{not json", 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", None, b"[1, 2]", 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", {"text": 5}, None, 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", {"text": ""}, None, 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", {"text": "   "}, None, 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", {"text": "x" * 11}, None, 413, "too_large"),
            ("POST", "/rooms/lobby/messages", {"text": "x" * 2000}, None, 413, "too_large"),
            ("POST", "/rooms/bad%20room/messages", {"text": "x"}, None, 400, "bad_request"),
            ("POST", "/rooms/lobby/messages", {"text": "x", "reply_to": 0}, None, 400,
             "bad_request"),
            ("PATCH", "/rooms/lobby/messages/0", {"text": "x"}, None, 400, "bad_request"),
            ("PUT", "/rooms/lobby/messages/1/reactions/abc", None, None, 400, "bad_request"),
            ("GET", "/rooms/lobby/messages?limit=0", None, None, 400, "bad_request"),
            ("GET", "/rooms/lobby/messages?before=2&after=1", None, None, 400, "bad_request"),
            ("GET", "/rooms/lobby/search?q=", None, None, 400, "bad_request"),
        ]
        for method, path, body, raw, status, code in cases:
            assert await ci.refused(method, path, body, raw=raw) == (status, code), path
        assert (await served.chat.store.page(RoomName("lobby"))).messages == []
        assert (await ci.ok("POST", "/rooms/lobby/messages", {"text": "still fine"})
                )["message"]["seq"] == 1


async def test_a_key_past_its_rate_is_told_when_to_come_back(serve: ServeFactory) -> None:
    key = new_key()
    served = await serve(api_keys=entry("ci", "read", "*", key), api_rate=0.5, api_burst=3)
    async with aiohttp.ClientSession() as http:
        ci = Client(http, served.url, key)
        for _ in range(3):
            await ci.ok("GET", "/rooms")
        status, reply, headers = await ci.call("GET", "/rooms")
        assert (status, reply["error"]["code"]) == (429, "rate_limited")
        assert int(headers["Retry-After"]) >= 1 and reply["error"]["retry_after"] > 0


async def test_rooms_members_and_search(keyed: tuple[Served, dict[str, Client]],
                                        peer: PeerFactory) -> None:
    served, clients = keyed
    reader, ci = clients["reader"], clients["ci"]
    alice, bob = await peer("alice", server=served), await peer("bob", server=served)
    for who in (alice, bob):
        await who.join("lobby")
    await bob.join("elsewhere")
    await alice.send("lobby", "the needle is here")
    listed = {r["name"]: r["members"] for r in (await reader.ok("GET", "/rooms"))["rooms"]}
    assert listed == {"lobby": 2, "elsewhere": 1}
    assert {r["name"] for r in (await ci.ok("GET", "/rooms"))["rooms"]} == {"lobby"}
    assert (await reader.ok("GET", "/rooms/lobby/members"))["members"] == ["alice", "bob"]
    found = await reader.ok("GET", "/rooms/lobby/search", q="need")
    assert [r["message"]["text"] for r in found["results"]] == ["the needle is here"]
    assert [text for text, hit in found["results"][0]["marked"] if hit] == ["needle"]


async def test_an_admin_key_ends_a_persons_connections(
        keyed: tuple[Served, dict[str, Client]], peer: PeerFactory) -> None:
    served, clients = keyed
    bob = await peer("bob", server=served)
    bob_again = await peer("bob", server=served)
    alice = await peer("alice", server=served)
    await bob.join("lobby")
    assert (await clients["ops"].ok("POST", "/people/bob/disconnect"))["name"] == "bob"
    assert sorted(c.name for c in served.chat.connections.values()) == ["alice"]
    await until(lambda: not bob.sio.connected and not bob_again.sio.connected)
    assert (await alice.join("lobby"))["members"] == ["alice"]


async def test_direct_conversations_through_the_api(serve: ServeFactory,
                                                    peer: PeerFactory) -> None:
    key = new_key()
    served = await serve(api_keys=entry("helpdesk", "publish,read", "*", key),
                         jwt_secret=SECRET)
    alice = await peer("alice", server=served, auth={"token": token(name="alice")})
    carol = await peer("carol", server=served, auth={"token": token(name="carol")})
    async with aiohttp.ClientSession() as http:
        helpdesk = Client(http, served.url, key)
        opened = await helpdesk.ok("POST", "/directs", {"with": ["alice"]})
        room = opened["room"]
        assert opened["with"] == ["alice", "helpdesk"]
        assert (await alice.next("direct"))["room"] == room
        sent = (await helpdesk.ok("POST", f"/rooms/{room}/messages", {"text": "hello"}))
        assert await alice.next("mention") == {"room": room, "message": sent["message"]}
        other = (await carol.ok("direct", {"with": ["bob"]}))["room"]
        assert await helpdesk.refused("GET", f"/rooms/{other}/messages") == (403, "forbidden")


async def test_the_api_is_off_without_a_key_and_describes_itself_with_one(
        serve: ServeFactory, keyed: tuple[Served, dict[str, Client]]) -> None:
    plain = await serve()
    async with aiohttp.ClientSession() as http:
        for path in ("/openapi.json", "/rooms"):
            async with http.get(plain.url + API + path) as reply:
                assert reply.status == 404
        served, _ = keyed
        async with http.get(served.url + API + "/openapi.json") as reply:
            spec = await reply.json()
    assert spec["openapi"] == "3.1.0"
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert operations >= {"postMessage", "editMessage", "deleteMessage", "react", "unreact",
                          "history", "search", "listRooms", "listMembers", "openDirect",
                          "disconnectPerson"}


async def test_the_python_api_client(keyed: tuple[Served, dict[str, Client]],
                                     peer: PeerFactory) -> None:
    """client/api.py: every call, and a refusal as ApiError with its code and status."""
    served, clients = keyed
    alice = await peer("alice", server=served)
    await alice.join("lobby")
    async with ApiClient(served.url, clients["ops"].key) as api:
        posted = await api.post("lobby", "hello", client_id="c-1")
        assert await alice.next("message") == posted
        assert await api.post("lobby", "hello", client_id="c-1") == posted  # once
        await api.edit("lobby", posted["seq"], "hello, edited")
        await api.react("lobby", posted["seq"], "👍")
        await api.unreact("lobby", posted["seq"], "👍")
        assert [m["text"] for m in (await api.history("lobby"))["messages"]] == [
            "hello, edited"]
        assert (await api.search("lobby", "edit"))["results"][0]["message"]["seq"] == 1
        assert {r["name"] for r in await api.rooms()} == {"lobby"}
        assert await api.members("lobby") == ["alice"]
        assert await api.cursor("lobby", "main") is None
        assert await api.advance("lobby", "main", 1) == 1
        assert await api.cursor("lobby", "main") == 1
        await api.delete("lobby", posted["seq"])
        muted = await api.act("lobby", "mute", user="alice", seconds=60, client_id="m-1")
        while (await alice.next("change"))["kind"] != "mute":
            pass  # (the edit, reactions and delete before it)
        again = await api.act("lobby", "mute", user="alice", seconds=60, client_id="m-1")
        assert again["action"] == muted["action"]  # a retry is the action stored
        assert [a["kind"] for a in (await api.audit("lobby"))["actions"]] == ["mute"]
        assert (await api.room_info("lobby"))["people"][0]["user"] == "alice"
        await api.act("lobby", "ban", user="alice", reason="a ban by name, in open mode")
        while (await alice.next("change"))["kind"] != "ban":
            pass
        rejoin = await alice.call("join", {"room": "lobby"})
        assert rejoin["error"]["code"] == "forbidden" and "banned" in rejoin["error"]["message"]
        with pytest.raises(ApiError) as refused:
            await api.act("lobby", "create")  # name mode: no owners
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        with pytest.raises(ApiError) as refused:
            await api.direct("bob")  # name mode: no direct conversations
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        await api.disconnect("alice")
        await until(lambda: not alice.sio.connected)


async def test_a_backend_resumes_from_its_cursor(
        keyed: tuple[Served, dict[str, Client]]) -> None:
    """A consumer without a socket: reads on from its cursor, moves it once an
    entry is handled, and a restart (a new HTTP session) resumes after it."""
    served, clients = keyed
    ci = clients["ci"]
    for i in range(5):
        await ci.ok("POST", "/rooms/lobby/messages", {"text": f"m{i}"})
    path = "/rooms/lobby/cursors/deployer"
    assert (await ci.ok("GET", path))["seq"] is None
    page = await ci.ok("GET", "/rooms/lobby/messages", after=0, limit=3)
    handled = [m["seq"] for m in page["messages"]]
    assert (await ci.ok("PUT", path, {"seq": handled[-1]}))["seq"] == 3
    assert (await ci.ok("PUT", path, {"seq": 1}))["seq"] == 3  # never back
    async with aiohttp.ClientSession() as http:  # the backend restarted
        again = Client(http, served.url, ci.key)
        at = (await again.ok("GET", path))["seq"]
        rest = await again.ok("GET", "/rooms/lobby/messages", after=at)
        assert [m["seq"] for m in rest["messages"]] == [4, 5]
    assert await clients["reader"].refused("PUT", path, {"seq": -1}) == (400, "bad_request")
    assert (await clients["reader"].ok("GET", path))["seq"] is None  # its own identity's


async def test_a_backend_governs_rooms_by_the_rules_the_sockets_follow(
        serve: ServeFactory, peer: PeerFactory) -> None:
    """An admin key creates a private room and gives roles, a moderate key bans
    and reads the audit log; the people on sockets see each action in the
    room's stream, and the same rules hold whichever interface acts."""
    secrets = {name: new_key() for name in KEYS}
    served = await serve(jwt_secret=SECRET, api_keys=" ".join(
        entry(name, *KEYS[name], secrets[name]) for name in KEYS))
    async with aiohttp.ClientSession() as http:
        ops, mod, ci, reader = (Client(http, served.url, secrets[n])
                                for n in ("ops", "mod", "ci", "reader"))
        create = {"kind": "create", "private": True, "topic": "the team"}
        made = await ops.ok("POST", "/rooms/team/actions", create,
                            headers={"Idempotency-Key": "create-team"})
        assert made["action"]["from"] == "ops" and made["settings"]["private"] is True
        again = await ops.ok("POST", "/rooms/team/actions", create,
                             headers={"Idempotency-Key": "create-team"})
        assert again["action"]["seq"] == made["action"]["seq"]  # a retry, stored once
        assert await mod.refused("POST", "/rooms/team/actions", {"kind": "create"}) == (
            409, "conflict")
        alice = await peer("alice", server=served, auth={"token": token(name="alice")})
        bob = await peer("bob", server=served, auth={"token": token(name="bob")})
        assert (await alice.call("join", {"room": "team"}))["error"]["code"] == "forbidden"
        for name in ("alice", "bob"):
            await ops.ok("POST", "/rooms/team/actions", {"kind": "role", "user": name,
                                                         "role": "member"})
        await alice.join("team")
        await bob.join("team")
        ban = await mod.ok("POST", "/rooms/team/actions", {"kind": "ban", "user": "bob",
                                                           "seconds": 3600, "reason": "spam"})
        assert ban["standing"]["banned"] == ban["action"]["until"]
        assert (await bob.next("change"))["kind"] == "ban"
        assert (await alice.next("change"))["seq"] == ban["action"]["seq"]
        assert (await bob.call("send", {"room": "team", "text": "x"}))["error"]["code"] == \
            "not_member"
        # scopes: acting needs moderate; a moderator key may not do an owner's part
        assert await ci.refused("POST", "/rooms/team/actions", {"kind": "ban",
                                                                "user": "alice"}) == (
            403, "forbidden")
        assert await mod.refused("POST", "/rooms/team/actions", {"kind": "configure",
                                                                 "private": False}) == (
            403, "forbidden")
        assert await mod.refused("POST", "/rooms/team/actions", {"kind": "ban"}) == (
            400, "bad_request")
        assert await mod.refused("POST", "/rooms/team/actions", {"kind": "exile",
                                                                 "user": "x"}) == (
            400, "bad_request")
        assert await reader.refused("GET", "/rooms/team") == (403, "forbidden")  # private
        info = await ops.ok("GET", "/rooms/team")
        assert info["settings"]["topic"] == "the team" and info["you"] == {"role": "owner"}
        assert [(p["user"], p["role"], "banned" in p) for p in info["people"]] == [
            ("alice", "member", False), ("bob", None, True), ("ops", "owner", False)]
        log = await mod.ok("GET", "/rooms/team/actions", limit=2)
        assert [a["kind"] for a in log["actions"]] == ["ban", "role"] and log["more"]
        assert await reader.refused("GET", "/rooms/team/actions") == (403, "forbidden")
        # the stream, read on through the API, holds the actions with the messages
        stream = await ops.ok("GET", "/rooms/team/messages", after=0)
        assert [c["kind"] for c in stream["changes"]] == ["create", "role", "role", "ban"]
        # reports: a key reports a message, a moderator key reads and resolves them
        hello = await alice.send("team", "hello")
        reported = await ops.ok("POST", f"/rooms/team/messages/{hello['seq']}/reports",
                                {"reason": "testing"})
        assert reported["report"]["from"] == "alice"
        assert [r["seq"] for r in (await mod.ok("GET", "/rooms/team/reports"))["reports"]] \
            == [hello["seq"]]
        assert await ci.refused("GET", "/rooms/team/reports") == (403, "forbidden")
        closed = await mod.ok("DELETE", f"/rooms/team/messages/{hello['seq']}/reports")
        assert closed["resolved"] == 1


async def test_a_backend_posts_a_file_and_reads_one(
        keyed: tuple[Served, dict[str, Client]], peer: PeerFactory) -> None:
    """grantUpload, tus (tuspy), postMessage with attachments; fileLink for a
    file of the room; the read scope may not upload."""
    served, clients = keyed
    ci = clients["ci"]
    alice = await peer("alice", server=served)
    await alice.join("builds-2")
    log = b"build #8: all green\n" * 100
    grant = (await ci.ok("POST", "/rooms/builds-2/uploads",
                         {"name": "build-8.log", "size": len(log)}))["upload"]
    await asyncio.to_thread(tus_upload, served.url, grant, log)
    posted = (await ci.ok("POST", "/rooms/builds-2/messages",
                          {"attachments": [grant["id"]]}))["message"]
    assert posted["text"] == "" and posted["attachments"] == [
        {"id": grant["id"], "name": "build-8.log", "size": len(log), "type": "text/plain"}]
    assert (await alice.next("message"))["attachments"] == posted["attachments"]
    link = await ci.ok("GET", f"/rooms/builds-2/files/{grant['id']}")
    assert link["thumbnail"] is None and link["expires"] > 0
    async with aiohttp.ClientSession() as http, http.get(served.url + link["url"]) as r:
        assert await r.read() == log
    assert await ci.refused("GET", "/rooms/builds-2/files/" + "Z" * 22) == (404, "not_found")
    assert await clients["reader"].refused("POST", "/rooms/builds-2/uploads",
                                           {"name": "x", "size": 1}) == (403, "forbidden")
    assert await ci.refused("POST", "/rooms/builds-2/messages", {"text": ""}) == (
        400, "bad_request")


async def test_the_api_client_uploads_and_posts_a_file(
        keyed: tuple[Served, dict[str, Client]], tmp_path: Path) -> None:
    served, clients = keyed
    (tmp_path / "report.txt").write_text("all good\n")
    async with ApiClient(served.url, clients["ci"].key) as api:
        file_id = await api.upload("builds-3", tmp_path / "report.txt")
        posted = await api.post("builds-3", "the report", attachments=[file_id])
    assert posted["attachments"][0]["name"] == "report.txt"
