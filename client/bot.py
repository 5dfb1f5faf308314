"""A small bot: answers commands in the rooms it has joined.

``!ping`` -> ``pong``; ``!who`` -> the room's members; ``!echo X`` -> ``X``;
``!help`` -> the list of commands. It ignores its own messages and anything
that is not a command, and answers each command message once, even across
reconnects (the client delivers each message once).
"""

from __future__ import annotations

import logging

from .chat_client import JSON, ChatClient

log = logging.getLogger(__name__)

HELP = "commands: !ping, !who, !echo TEXT, !help"


class Bot:
    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.members: dict[str, list[str]] = {}
        client.on_message = self.on_message
        client.on_presence = self.on_presence

    async def join(self, room: str) -> None:
        ack = await self.client.join(room)
        self.members[room] = list(ack["members"])

    async def on_presence(self, event: JSON) -> None:
        self.members[event["room"]] = list(event["members"])

    async def on_message(self, message: JSON) -> None:
        if message["from"] == self.client.name or str(message.get("client_id")).startswith("bot:"):
            return  # our own (in token mode the name is the token's)
        reply = answer(message["text"], self.members.get(message["room"], []))
        if reply is not None:
            log.info("answering %s#%d in %s", message["from"], message["seq"], message["room"])
            await self.client.send(message["room"], reply,
                                   client_id=f"bot:{message['room']}:{message['seq']}")


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
