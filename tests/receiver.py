"""A webhook receiver as its users would write one (docs/api.md): it checks the
signature, drops a repeated event by its id, and answers 2xx only once what it
took is recorded.

In a test's own loop (:class:`Receiver`, told to fail or to hang), or as a
process that a test kills and starts again::

    python -m tests.receiver PORT SECRET LOG

where every event taken is a line of LOG (``id type``), written and synced
before the answer, and then ``took N`` (events taken in all) a line of its
stdout; a restarted receiver reads LOG to know what it has.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from app.hooks.webhook import verify

TIMEOUT = 5.0  # seconds a test waits for events (as tests.conftest; not imported:
# a receiver process starts again and again, and should start fast)


class Receiver:
    def __init__(self, secret: str = "", log: Path | None = None, *,
                 progress: bool = False) -> None:
        self.secret = secret
        self.log = log
        self.seen: set[str] = set()
        self.events: list[dict[str, Any]] = []  # taken, each once, in the order taken
        self.requests = 0
        self.repeats = 0  # events received again (and dropped)
        self.refused = 0  # requests whose signature did not verify
        self.fail_with: int | None = None  # answer this status instead
        self.hang = False  # answer nothing, until released
        self.released = asyncio.Event()
        self.headers: list[dict[str, str]] = []
        self.arrived = asyncio.Condition()
        self.progress = progress
        if log is not None and log.exists():
            self.seen = {line.split()[0] for line in log.read_text().splitlines() if line}

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.read()
        self.requests += 1
        self.headers.append(dict(request.headers))
        if self.hang:
            await self.released.wait()  # (no answer until the test lets it go)
        if self.fail_with is not None:
            return web.Response(status=self.fail_with)
        if not verify(self.secret, request.headers.get("Roomcast-Signature", ""), payload,
                      time.time()):
            self.refused += 1
            return web.Response(status=401)
        taken = []
        for event in json.loads(payload)["events"]:
            if event["id"] in self.seen:
                self.repeats += 1
                continue
            self.seen.add(event["id"])
            taken.append(event)
        if self.log is not None and taken:
            with self.log.open("a") as out:
                out.write("".join(f"{e['id']} {e['type']}\n" for e in taken))
                out.flush()
                os.fsync(out.fileno())
        async with self.arrived:
            self.events.extend(taken)
            self.arrived.notify_all()
        if self.progress and taken:
            print("took", len(self.seen), flush=True)
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Until ``count`` events were taken; them."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.events) >= count)
        return self.events

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app


async def serve(port: int, secret: str, log: Path) -> None:
    runner = web.AppRunner(Receiver(secret, log, progress=True).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("receiving", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
