"""Room members by the thousand: bare JSON Socket.IO clients on WebSockets that
record the presence events they get (for tests of what others cost a room)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp


class Member:
    """One connection in one room; :meth:`read` answers pings and records events."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.presence: list[dict[str, Any]] = []  # presence events, in order
        self.seqs: list[int] = []  # of the message events, in order
        self.message = asyncio.Event()  # a message event arrived

    @classmethod
    async def seat(cls, session: aiohttp.ClientSession, url: str, name: str,
                   room: str = "big") -> Member:
        """Connect (the server must speak JSON), join ``room``, wait for the ack."""
        ws = await session.ws_connect(url + "/socket.io/?EIO=4&transport=websocket")
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str("40/chat," + json.dumps({"name": name}))
        assert (await ws.receive_str()).startswith("40/chat,")
        await ws.send_str('42/chat,1["join",' + json.dumps({"room": room}) + "]")
        while not (await ws.receive_str()).startswith("43/chat,1"):
            pass
        return cls(ws)

    @property
    def leaves(self) -> list[str]:
        return [e["user"] for e in self.presence if e["event"] == "leave"]

    async def read(self) -> None:
        async for frame in self.ws:
            data = str(frame.data)
            if data == "2":
                await self.ws.send_str("3")
            elif data.startswith('42/chat,["presence"'):
                self.presence.append(json.loads(data[len("42/chat,"):])[1])
            elif data.startswith('42/chat,["message"'):
                self.seqs.append(json.loads(data[len("42/chat,"):])[1]["seq"])
                self.message.set()
