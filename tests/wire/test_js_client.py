"""socket.io-client 4 from npm (pinned in tests/node/package-lock.json) against
Roomcast, unpatched: WebSocket, long-polling and polling-then-upgrade, with
the default and the msgpack parser. A Python peer shares the room."""

from __future__ import annotations

import pytest

from app.chat.namespace import NAMESPACE

from ..conftest import TIMEOUT, Peer, Served, sio_client
from ..jsclient import JSClient

pytestmark = pytest.mark.matrix  # the wire matters here: both transports, both serializers


async def python_peer(served: Served, name: str) -> Peer:
    sio = sio_client(served.settings.serializer)
    joined = Peer(name, sio)
    await sio.connect(served.url, auth={"name": name}, namespaces=[NAMESPACE],
                      transports=["websocket"], wait_timeout=TIMEOUT)
    return joined


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]],
                         ids=["websocket", "polling", "upgrade"])
async def test_socketio_client_chats_with_a_python_peer(
        served: Served, js: list[JSClient], transports: list[str]) -> None:
    """Join and send with optional fields left ``undefined`` (the msgpack parser
    encodes them as an extension the server takes as absent), receive a busy
    room's messages in order, and (polling first) upgrade to WebSocket."""
    bob = await python_peer(served, "bob")
    try:
        await bob.join("interop")
        client = await JSClient.start(url=served.url, transports=transports,
                                      parser=served.settings.serializer, name="jess",
                                      room="interop", send=30, expect=60)
        js.append(client)
        connected = await client.line("connected")
        if len(transports) == 1:
            assert connected["transport"] == transports[0]
        assert (await client.line("joined"))["ok"] is True
        sent = await client.line("sent")
        assert sent["ok"] == [True] * 30
        assert sent["seqs"] == sorted(sent["seqs"])
        seen = [(await bob.next("message"))["text"] for _ in range(30)]
        assert seen == [f"jess {i}" for i in range(30)]
        for i in range(60):  # faster than one poll per message: batched polls
            await bob.send("interop", f"bob {i}")
        received = await client.line("received")
        assert received["texts"] == [f"bob {i}" for i in range(60)]
        if len(transports) == 2:
            assert received["transport"] == "websocket"
            assert any(line["step"] == "upgraded" for line in client.seen)
    finally:
        await bob.sio.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_socketio_client_edits_reacts_and_receives_changes(
        served: Served, js: list[JSClient], transports: list[str]) -> None:
    """socket.io-client with no help from us edits and reacts to its message
    (client_id left undefined) and receives a Python peer's changes as change
    events with their seq, kind, target and reaction counts."""
    bob = await python_peer(served, "bob")
    try:
        await bob.join("changes")
        mine = await bob.send("changes", "bob's")
        client = await JSClient.start(url=served.url, transports=transports,
                                      parser=served.settings.serializer, name="jess",
                                      room="changes", send=1, expect=0, change=True,
                                      changes=2)
        js.append(client)
        assert (await client.line("joined"))["ok"] is True
        sent = await client.line("sent")
        changed = await client.line("changed")
        assert changed["ok"] == [True, True], changed["errors"]
        assert changed["messages"][1]["text"] == "edited by js"
        assert changed["messages"][1]["reactions"] == [
            {"emoji": "🎉", "count": 1, "names": ["jess"]}]
        heard = [await bob.next("change") for _ in range(2)]
        assert [(c["kind"], c["target"]) for c in heard] == [
            ("edit", sent["seqs"][0]), ("react", sent["seqs"][0])]
        await bob.ok("edit", {"room": "changes", "seq": mine["seq"], "text": "bob's, edited"})
        await bob.ok("react", {"room": "changes", "seq": sent["seqs"][0], "emoji": "🎉"})
        got = (await client.line("changes"))["changes"]
        assert [(c["kind"], c["target"]) for c in got] == [
            ("edit", mine["seq"]), ("react", sent["seqs"][0])]
        assert got[0]["text"] == "bob's, edited" and got[1]["count"] == 2
        assert [c["seq"] for c in got] == [heard[1]["seq"] + 1, heard[1]["seq"] + 2]
    finally:
        await bob.sio.disconnect()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_socketio_client_reads_and_is_mentioned(
        served: Served, js: list[JSClient], transports: list[str]) -> None:
    """socket.io-client marks its room read, and receives mention events from a
    room it never joined."""
    bob = await python_peer(served, "bob")
    try:
        client = await JSClient.start(url=served.url, transports=transports,
                                      parser=served.settings.serializer, name="José Ñ",
                                      room="mine", send=2, expect=0, read=True, mentions=1)
        js.append(client)
        read = (await client.line("read"))["ack"]
        assert read == {"ok": True, "room": "mine", "read": 2, "unread": 0, "mentions": 0,
                        "seq": 2}
        await bob.join("elsewhere")
        await bob.send("elsewhere", "@{José Ñ} over here")
        assert (await client.line("mentioned"))["mentions"] == [
            {"room": "elsewhere", "text": "@{José Ñ} over here", "from": "bob"}]
    finally:
        await bob.sio.disconnect()


async def test_socketio_client_is_told_why_a_namespace_is_refused(
        served: Served, js: list[JSClient], transport: str) -> None:
    client = await JSClient.start(url=served.url, nsp="/nosuch", transports=[transport],
                                  parser=served.settings.serializer, name="jess",
                                  room="r", send=0, expect=0)
    js.append(client)
    assert (await client.line("connect_error"))["message"] == "Invalid namespace"
