"""``python -m client`` tail, send and bot, as real processes against a real server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from app.chat.namespace import NAMESPACE
from app.api.keys import entry, new_key
from client import ChatClient
from client.__main__ import format_change, format_message, printable

from ..conftest import TIMEOUT, Peer, sio_client
from ..processes import Process, start_server


@pytest.fixture
async def server_url(tmp_path: Path) -> AsyncIterator[str]:
    server, port = await start_server(tmp_path)
    yield f"http://127.0.0.1:{port}"
    assert await server.stop() == 0


async def cli(tmp_path: Path, *args: str) -> Process:
    return await Process.start("-m", "client", *args, cwd=tmp_path)


async def send(tmp_path: Path, url: str, name: str, room: str, text: str,
               *extra: str) -> tuple[int, list[str], list[str]]:
    proc = await cli(tmp_path, "send", "--url", url, "--name", name, "--room", room, *extra, text)
    lines = []
    code = await proc.wait(20)
    while not proc.stdout.empty():
        lines.append(proc.stdout.get_nowait())
    return code, lines, proc.stderr_lines


def test_format_shows_what_happened_to_a_message() -> None:
    """Replies, edits, deletes and reactions on the message's line; each change
    on a line of its own; a hostile edit escaped like a message."""
    assert format_message({"seq": 4, "from": "al", "text": "yes", "reply_to": 2,
                           "edited": 1, "reactions": [{"emoji": "👍", "count": 2}]}) \
        == "#4 al: (re #2) yes (edited) [👍 2]"
    assert format_message({"seq": 5, "from": "al", "text": "", "deleted": True}) \
        == "#5 al: (deleted)"
    assert format_change({"seq": 6, "from": "bo", "kind": "edit", "target": 4,
                          "text": HOSTILE}) == f"#6 bo edited #4: {HOSTILE_SHOWN}"
    assert format_change({"seq": 7, "from": "bo", "kind": "react", "target": 4,
                          "emoji": "🎉", "count": 3}) == "#7 bo reacted 🎉 on #4 (now 3)"
    assert format_change({"seq": 8, "from": "bo", "kind": "delete", "target": 4}) \
        == "#8 bo deleted #4"


async def test_tail_prints_changes_as_they_come(tmp_path: Path, server_url: str) -> None:
    tail = await cli(tmp_path, "tail", "--url", server_url, "--name", "watcher", "--room", "ch")
    peer = Peer("bob", sio_client("msgpack"))
    try:
        await tail.stderr_match(r"joined ch at seq 0", 20)
        await peer.sio.connect(server_url, auth={"name": "bob"}, namespaces=[NAMESPACE],
                               wait_timeout=TIMEOUT)
        await peer.join("ch")
        await peer.send("ch", "helo")
        await peer.ok("edit", {"room": "ch", "seq": 1, "text": "hello"})
        await peer.ok("react", {"room": "ch", "seq": 1, "emoji": "👍"})
        await peer.ok("delete", {"room": "ch", "seq": 1})
        assert [await tail.line() for _ in range(4)] == [
            "#1 bob: helo", "#2 bob edited #1: hello", "#3 bob reacted 👍 on #1 (now 1)",
            "#4 bob deleted #1"]
    finally:
        await peer.sio.disconnect()
        assert await tail.stop() == 0


def test_format_keeps_one_line_per_message() -> None:
    """Newlines in a text are escaped so each message stays on one line."""
    line = format_message({"seq": 3, "from": "al", "text": "a\nb\\c"})
    assert line == "#3 al: a\\nb\\\\c"


HOSTILE = "hi\x1b[2K\r#999 admin: forged\x07\x08\x9b31m\u202egnp.exe\u2066\u200d\x7f"
HOSTILE_SHOWN = ("hi\\x1b[2K\\r#999 admin: forged\\x07\\x08\\x9b31m\\u202egnp.exe\\u2066"
                 "\\u200d\\x7f")


def test_every_character_a_terminal_acts_on_is_escaped() -> None:
    """ESC, BEL, backspace, CSI (U+009B), DEL, bidi overrides and isolates and
    zero-width joiners are printed as escapes; letters of any script, emoji and
    spaces as they are."""
    assert printable(HOSTILE) == HOSTILE_SHOWN
    assert printable("Zoë 中文 😀 a b") == "Zoë 中文 😀 a b"
    assert format_message({"seq": 1, "from": "ev\x1b]0;il\x07", "text": "x"}) \
        == "#1 ev\\x1b]0;il\\x07: x"


async def test_tail_prints_a_hostile_message_escaped(tmp_path: Path, server_url: str) -> None:
    tail = await cli(tmp_path, "tail", "--url", server_url, "--name", "watcher", "--room", "esc")
    try:
        await tail.stderr_match(r"joined esc at seq 0", 20)
        code, lines, _ = await send(tmp_path, server_url, "mallory", "esc", HOSTILE)
        assert code == 0 and lines == [f"#1 mallory: {HOSTILE_SHOWN}"]
        assert await tail.line() == f"#1 mallory: {HOSTILE_SHOWN}"
    finally:
        assert await tail.stop() == 0


async def test_send_and_tail(tmp_path: Path, server_url: str) -> None:
    """tail prints recent messages, then each new one with seq, sender and text;
    send exits 0 once stored, and 1 with the code when refused."""
    code, lines, _ = await send(tmp_path, server_url, "alice", "lobby", "first")
    assert (code, lines) == (0, ["#1 alice: first"])
    tail = await cli(tmp_path, "tail", "--url", server_url, "--name", "watcher", "--room", "lobby")
    try:
        await tail.stderr_match(r"joined lobby at seq 1", 20)
        assert await tail.line() == "#1 alice: first"
        for text, transport in (("over websocket", "websocket"), ("over polling", "polling")):
            code, _, _ = await send(tmp_path, server_url, "bob", "lobby", text,
                                    "--transport", transport)
            assert code == 0
        assert await tail.line() == "#2 bob: over websocket"
        assert await tail.line() == "#3 bob: over polling"
        code, lines, errors = await send(tmp_path, server_url, "carol", "lobby", "x" * 4001)
        assert code == 1 and lines == [] and any("too_large" in e for e in errors)
        code, _, errors = await send(tmp_path, server_url, " ", "lobby", "hi")
        assert code == 1 and any("bad_name" in e for e in errors)
    finally:
        assert await tail.stop() == 0


async def test_send_a_file_and_download_it(tmp_path: Path, server_url: str) -> None:
    """send --file uploads and sends; tail shows the file; download saves it
    under its name; a refused upload exits 1 with the code."""
    (tmp_path / "notes ü.txt").write_text("the notes\n")
    code, lines, _ = await send(tmp_path, server_url, "alice", "docs", "here",
                                "--file", str(tmp_path / "notes ü.txt"))
    assert code == 0, lines
    (line,) = lines
    match = re.fullmatch(r"#1 alice: here \[file (\S+): notes ü.txt, 10 bytes\]", line)
    assert match, line
    out = tmp_path / "out"
    out.mkdir()
    proc = await Process.start("-m", "client", "download", "--url", server_url, "--name",
                               "bob", "--room", "docs", match[1], cwd=out)
    assert await proc.wait(20) == 0
    assert (out / "notes ü.txt").read_text() == "the notes\n"
    (tmp_path / "empty").write_bytes(b"")
    code, _, errors = await send(tmp_path, server_url, "alice", "docs", "",
                                 "--file", str(tmp_path / "empty"))
    assert code == 1 and any("bad_request" in e for e in errors)


async def test_tail_follows_mentions_from_any_room(tmp_path: Path, server_url: str) -> None:
    """tail --mentions prints each message that mentions you, from rooms it never joined."""
    tail = await cli(tmp_path, "tail", "--url", server_url, "--name", "Ana María",
                     "--mentions")
    peer = Peer("bob", sio_client("msgpack"))
    try:
        await tail.stderr_match(r"following mentions", 20)
        await peer.sio.connect(server_url, auth={"name": "bob"}, namespaces=[NAMESPACE],
                               wait_timeout=TIMEOUT)
        for room in ("ops", "dev"):
            await peer.join(room)
            await peer.send(room, f"not for you in {room}")
            await peer.send(room, f"@{{Ana María}} look at {room}")
        assert [await tail.line() for _ in range(2)] == [
            "@ops #2 bob: @{Ana María} look at ops", "@dev #2 bob: @{Ana María} look at dev"]
    finally:
        await peer.sio.disconnect()
        assert await tail.stop() == 0


async def test_bot_answers_commands(tmp_path: Path, server_url: str) -> None:
    """The bot answers !ping, !who, !echo and !help, once each, and ignores chatter;
    a room it is refused at start (a direct conversation's name, in name mode) is
    said and skipped, not the end of the bot."""
    bot = await cli(tmp_path, "bot", "--url", server_url, "--name", "botty", "--room", "lab",
                    "--room", "dm:nope", "--serializer", "msgpack")
    tail = await cli(tmp_path, "tail", "--url", server_url, "--name", "watcher", "--room", "lab")
    try:
        await bot.stderr_match(r"could not join dm:nope: forbidden", 20)
        await bot.stderr_match(r"answering in lab$", 20)
        await tail.stderr_match(r"joined lab", 20)
        for text in ("hello", "!ping", "!who", "!echo some words", "!help"):
            assert (await send(tmp_path, server_url, "alice", "lab", text))[0] == 0
        got = [await tail.line() for _ in range(9)]
        assert got[:3] == ["#1 alice: hello", "#2 alice: !ping", "#3 botty: pong"]
        assert got[3] == "#4 alice: !who"
        assert got[4].startswith("#5 botty: members: ") and "botty" in got[4]
        assert "watcher" in got[4]
        assert got[5:7] == ["#6 alice: !echo some words", "#7 botty: some words"]
        assert got[7] == "#8 alice: !help"
        assert got[8].startswith("#9 botty: commands: !ping")
        # a last plain message comes next: no command was answered twice
        assert (await send(tmp_path, server_url, "alice", "lab", "bye"))[0] == 0
        assert await tail.line() == "#10 alice: bye"
        for text in ("the deploy went fine", "!search DEPLOY", "!search nothing-like-it"):
            assert (await send(tmp_path, server_url, "alice", "lab", text))[0] == 0
        assert [await tail.line() for _ in range(5)] == [
            "#11 alice: the deploy went fine", "#12 alice: !search DEPLOY",
            "#13 botty: #11 alice: the deploy went fine",  # not the command, not itself
            "#14 alice: !search nothing-like-it",
            "#15 botty: nothing found for 'nothing-like-it'"]
        # mentioned, it answers the command after the mention, or with the help line
        for text in ("@botty !echo hi there", "thanks @botty."):
            assert (await send(tmp_path, server_url, "alice", "lab", text))[0] == 0
        got = [await tail.line() for _ in range(4)]
        assert got[:2] == ["#16 alice: @botty !echo hi there", "#17 botty: hi there"]
        assert got[2] == "#18 alice: thanks @botty."
        assert got[3].startswith("#19 botty: commands: !ping")
    finally:
        assert await bot.stop() == 0
        assert await tail.stop() == 0


async def test_a_bot_killed_twenty_times_answers_every_message_once(
        tmp_path: Path, server_url: str) -> None:
    """The bot with a cursor, SIGKILLed 20 times while people keep sending it
    commands (some while it is down), answers each of them exactly once: the
    server kept its place, and an answer it gives again after a crash (its
    cursor move not stored yet) is the same client_id, stored once."""
    heard: dict[int, list[str]] = {}  # the bot's answers, by the seq answered
    answered = asyncio.Event()

    def record(message: dict[str, Any]) -> None:
        if message["from"] == "botty":
            heard.setdefault(int(message["client_id"].rsplit(":", 1)[1]), []).append(
                message["text"])
            answered.set()

    async def until_answered(count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(heard) < count:
                answered.clear()
                await answered.wait()

    alice = ChatClient(server_url, "alice", on_message=record)
    await alice.connect()
    await alice.join("ops")
    sent: dict[int, str] = {}  # seq -> the command's word

    async def commands(n: int) -> None:
        for _ in range(n):
            word = str(len(sent))
            sent[(await alice.send("ops", f"!echo {word}"))["seq"]] = word

    def bot_process() -> Awaitable[Process]:
        return cli(tmp_path, "bot", "--url", server_url, "--name", "botty", "--room", "ops",
                   "--cursor", "main")
    try:
        for _ in range(20):
            bot = await bot_process()
            await bot.stderr_match(r"answering in ops$", 20)
            before = len(heard)
            await commands(5)
            await until_answered(before + 1, 20)  # mid-stream: killed while answering
            bot.proc.kill()
            await bot.wait()
            await commands(2)  # while it is down
        bot = await bot_process()
        await bot.stderr_match(r"answering in ops$", 20)
        await until_answered(len(sent), 30)
        assert await bot.stop() == 0
        assert len(sent) == 20 * 7
        assert heard == {seq: [word] for seq, word in sent.items()}
        stored: dict[int, list[str]] = {}  # and as the store has them
        page = await alice.history("ops", after=0, limit=200)
        while True:
            for m in page["messages"]:
                if m["from"] == "botty":
                    stored.setdefault(int(m["client_id"].rsplit(":", 1)[1]), []).append(
                        m["text"])
            if not page["more"]:
                break
            page = await alice.history("ops", after=page["messages"][-1]["seq"], limit=200)
        assert stored == heard
    finally:
        await alice.close()


async def test_post_goes_through_the_api_once_and_says_why_it_is_refused(
        tmp_path: Path) -> None:
    """roomcast-client post, as a CI job would run it: stored once however often
    it is run with the same --client-id; a bad key or room is refused (exit 1)."""
    key = new_key()
    server, port = await start_server(tmp_path, env={
        "ROOMCAST_API_KEYS": entry("ci", "publish", "builds", key)})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(2):
            proc = await Process.start("-m", "client", "post", "--url", url, "--room", "builds",
                                       "--client-id", "build-7", "build #7 failed",
                                       cwd=tmp_path, env={"ROOMCAST_API_KEY": key})
            assert await proc.wait(20) == 0, proc.stderr_lines
            assert await proc.line() == "#1 ci: build #7 failed"
        for args, env, says in (
                (["--room", "ops"], {"ROOMCAST_API_KEY": key}, "forbidden"),
                (["--room", "builds"], {"ROOMCAST_API_KEY": "rc_wrong"}, "unauthorized"),
                (["--room", "builds"], {"ROOMCAST_API_KEY": ""}, "API key")):
            proc = await Process.start("-m", "client", "post", "--url", url, *args, "x",
                                       cwd=tmp_path, env=env)
            assert await proc.wait(20) == 1
            assert any(says in line for line in proc.stderr_lines), proc.stderr_lines
    finally:
        assert await server.stop() == 0
