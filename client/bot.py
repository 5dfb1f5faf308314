"""A small bot: answers commands in the rooms it has joined.

``!ping`` -> ``pong``; ``!who`` -> the room's members; ``!echo X`` -> ``X``;
``!search WORDS`` -> the newest messages of the room with those words (not
commands, not the bot's); ``!rules`` -> the room's topic, settings, owners and
moderators (a governed room); ``!export`` -> a file, ``ROOM.txt``, of the
room's latest messages; ``!help`` -> the list of commands. Mentioned
(``@bot ...`` in a room it has joined, or any message of a direct
conversation with it), it answers the command after the mention (``@bot
!who``), or with the help line. It ignores its own messages and anything
else, and answers each message once, even across reconnects (the client
delivers each message once; an answer's client id is the message's).

Direct conversations are joined on demand: when a message in one reaches
the bot as a mention (every message of a direct conversation mentions its
participants, joined or not). It stays in at most ``directs_held`` of them,
leaving the least recently active one for a new one, and leaves those
silent for ``direct_idle`` seconds when it joins another: however many
conversations people open with it, its own rooms are never filled up.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.chat.mentions import mention_of, mentioned

from .chat_client import JSON, ChatClient, ChatClientError

log = logging.getLogger(__name__)

DIRECTS_HELD = 20  # direct conversations the bot stays in at once
DIRECT_IDLE = 600.0  # seconds of silence after which it leaves one (when joining another)

HELP = "commands: !ping, !who, !echo TEXT, !search WORDS, !rules, !export, !help"
EXPORTED = 200  # messages in an !export file
SEARCH_SHOWN = 3  # matches in a !search answer
QUOTE_MAX = 80  # characters of each match quoted


class Bot:
    def __init__(self, client: ChatClient, *, directs_held: int = DIRECTS_HELD,
                 direct_idle: float = DIRECT_IDLE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.members: dict[str, list[str]] = {}
        # direct conversations joined: the seq they were joined at and when they
        # were last active, least recently active first
        self.directs: dict[str, tuple[int, float]] = {}
        self.directs_held = directs_held
        self.direct_idle = direct_idle
        self._clock = clock
        client.on_message = self.on_message
        client.on_presence = self.on_presence
        client.on_mention = self.on_mention

    async def join(self, room: str) -> JSON:
        ack = await self.client.join(room)
        self.members[room] = list(ack["members"])
        return ack

    async def join_all(self, rooms: list[str]) -> list[str]:
        """Join ``rooms``; return those joined (a refused one is logged and skipped)."""
        joined = []
        for room in rooms:
            try:
                await self.join(room)
                joined.append(room)
            except ChatClientError as exc:
                log.error("could not join %s: %s", room, exc)
        return joined

    async def leave(self, room: str) -> None:
        self.directs.pop(room, None)
        self.members.pop(room, None)
        try:
            await self.client.leave(room)
        except ChatClientError as exc:
            log.warning("could not leave %s: %s", room, exc)

    async def on_mention(self, event: JSON) -> None:
        """A direct conversation's message: join it if need be and answer the
        messages the join did not bring to ``on_message``."""
        room, message = event["room"], event["message"]
        if not room.startswith("dm:") or room in self.members and room not in self.directs:
            return  # a room's mention comes by on_message too
        if room not in self.directs:
            await self._enter_direct(room)
        if room in self.directs and message["seq"] <= self.directs[room][0]:
            await self.on_message(message)  # came before the join: not by on_message

    async def _enter_direct(self, room: str) -> None:
        now = self._clock()
        for idle in [r for r, (_, at) in self.directs.items() if at < now - self.direct_idle]:
            await self.leave(idle)
        while len(self.directs) >= self.directs_held:
            await self.leave(next(iter(self.directs)))
        while True:
            try:
                ack = await self.join(room)
                break
            except ChatClientError as exc:
                if exc.code != "too_large" or not self.directs:
                    log.error("could not join %s: %s", room, exc)
                    return
                await self.leave(next(iter(self.directs)))  # the server's bound is lower
        self.directs[room] = (ack["seq"], now)

    async def on_presence(self, event: JSON) -> None:
        room = event["room"]
        if "members" in event:  # a small room's whole list
            self.members[room] = list(event["members"])
            return
        # a large room's changes of a tick: applied to the names the bot knows
        here = set(self.members.get(room, ())) | set(event.get("joined", ()))
        self.members[room] = sorted(here - set(event.get("left", ())))

    async def on_message(self, message: JSON) -> None:
        room = message["room"]
        if message["from"] == self.client.name or str(message.get("client_id")).startswith("bot:"):
            return  # our own (in token mode the name is the token's)
        if room in self.directs:  # the most recently active now
            self.directs[room] = (self.directs.pop(room)[0], self._clock())
        text = message["text"].strip()
        addressed = self.addressed(message)
        if addressed is not None:
            text = addressed or "!help"
        command, _, words = text.partition(" ")
        if command == "!search":
            reply: str | None = await self.search(message["room"], words)
        elif command == "!rules":
            reply = await self.rules(message["room"])
        elif command == "!export":
            reply = await self.export(message)
        else:
            reply = answer(text, self.members.get(message["room"], []))
            if reply is None and addressed is not None:
                reply = HELP
        if reply is not None:
            log.info("answering %s#%d in %s", message["from"], message["seq"], message["room"])
            await self.client.send(message["room"], reply,
                                   client_id=f"bot:{message['room']}:{message['seq']}")

    def addressed(self, message: JSON) -> str | None:
        """What a message says to the bot once its mentions of the bot are taken
        out, if it mentions the bot (or is in a direct conversation); else None."""
        me = self.client.name
        if me not in mentioned(message["text"]) and not message["room"].startswith("dm:"):
            return None
        rest = message["text"].replace(mention_of(me), " ").replace(f"@{{{me}}}", " ")
        return " ".join(rest.split())

    async def export(self, asked: JSON) -> str | None:
        """Post the room's latest messages as a text file in answer to ``asked``
        (None: posted); what went wrong, otherwise."""
        room = asked["room"]
        try:
            page = await self.client.history(room, limit=EXPORTED)
            lines = [f"#{m['seq']} {m['from']}: {m['text']}"
                     + "".join(f" [file: {a['name']}]" for a in m.get("attachments", []))
                     for m in page["messages"] if not m.get("deleted")]
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{room}.txt"
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                await self.client.send_file(room, path, f"the latest {len(lines)} messages",
                                            client_id=f"bot:{room}:{asked['seq']}")
        except ChatClientError as exc:
            return f"could not export the room: {exc.message}"
        return None

    async def rules(self, room: str) -> str:
        """What governs ``room``: its topic and settings, its owners and moderators."""
        try:
            info = await self.client.room_info(room)
        except ChatClientError as exc:
            return f"could not read the room: {exc.message}"
        settings = info["settings"]
        if settings is None:
            return "nobody governs this room: anyone may join and write"
        said = [f"topic: {settings['topic']}" if settings["topic"] else "no topic",
                "private" if settings["private"] else "open to all"]
        if settings["locked"]:
            said.append("read-only")
        if settings["slow"]:
            said.append(f"slow mode: one message every {settings['slow']} s")
        for role in ("owner", "moderator"):
            names = [p["user"] for p in info["people"] if p["role"] == role]
            if names:
                said.append(f"{role}s: {', '.join(names)}")
        return "; ".join(said)

    async def search(self, room: str, words: str) -> str:
        """The best matches for ``words`` in ``room``: the newest few messages
        with them, leaving out commands and the bot's own answers."""
        if not words.strip():
            return "usage: !search WORDS"
        try:
            ack = await self.client.search(words, room=room, limit=20)
        except ChatClientError as exc:
            return f"search failed: {exc.message}"
        found = [r["message"] for r in ack["results"]
                 if not r["message"]["text"].startswith("!")
                 and r["message"]["from"] != self.client.name][:SEARCH_SHOWN]
        if not found:
            return f"nothing found for {words.strip()!r}"
        return "; ".join(f"#{m['seq']} {m['from']}: {_quote(m['text'])}" for m in found)


def _quote(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= QUOTE_MAX else line[:QUOTE_MAX - 1] + "…"


def answer(text: str, members: list[str]) -> str | None:
    """The bot's reply to ``text``, or None when it is not a command."""
    command, _, rest = text.strip().partition(" ")
    if command == "!ping":
        return "pong"
    if command == "!who":
        return "members: " + ", ".join(members)
    if command == "!echo":
        return rest.strip() or None
    if command == "!help":
        return HELP
    return None
