"""A small bot: answers commands in the rooms it has joined.

``!ping`` -> ``pong``; ``!who`` -> the room's members; ``!echo X`` -> ``X``;
``!search WORDS`` -> the newest messages of the room with those words (not
commands, not the bot's); ``!help`` -> the list of commands. Mentioned (``@bot ...`` in a
room it has joined, or any message of a direct conversation with it, which
it joins as soon as someone opens one), it
answers the command after the mention (``@bot !who``), or with the help line.
It ignores its own messages and anything else, and answers each message
once, even across reconnects (the client delivers each message once).
"""

from __future__ import annotations

import logging

from app.chat.mentions import mention_of, mentioned

from .chat_client import JSON, ChatClient, ChatClientError

log = logging.getLogger(__name__)

HELP = "commands: !ping, !who, !echo TEXT, !search WORDS, !help"
SEARCH_SHOWN = 3  # matches in a !search answer
QUOTE_MAX = 80  # characters of each match quoted


class Bot:
    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.members: dict[str, list[str]] = {}
        client.on_message = self.on_message
        client.on_presence = self.on_presence
        client.on_direct = self.on_direct

    async def join_directs(self) -> None:
        """Join the direct conversations people opened with the bot (token mode)."""
        for room, standing in (await self.client.unread()).items():
            if "with" in standing:
                await self.join(room)

    async def on_direct(self, event: JSON) -> None:
        await self.join(event["room"])

    async def join(self, room: str) -> None:
        ack = await self.client.join(room)
        self.members[room] = list(ack["members"])

    async def on_presence(self, event: JSON) -> None:
        self.members[event["room"]] = list(event["members"])

    async def on_message(self, message: JSON) -> None:
        if message["from"] == self.client.name or str(message.get("client_id")).startswith("bot:"):
            return  # our own (in token mode the name is the token's)
        text = message["text"].strip()
        addressed = self.addressed(message)
        if addressed is not None:
            text = addressed or "!help"
        command, _, words = text.partition(" ")
        if command == "!search":
            reply: str | None = await self.search(message["room"], words)
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
