"""socket.io-client 4 from npm, driven from a test: ``tests/node/client.mjs`` in
a process of its own (the fixture ``js`` stops those a test started)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from .conftest import TIMEOUT

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "client.mjs"


class JSClient:
    """One ``node client.mjs`` process; its JSON lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []  # lines passed over by line()

    @classmethod
    async def start(cls, **config: Any) -> JSClient:
        node = shutil.which("node")
        assert node is not None, "node is needed (make test installs it)"
        assert (NODE_DIR / "node_modules" / "socket.io-client").exists(), \
            "run npm ci --prefix tests/node (make test does)"
        proc = await asyncio.create_subprocess_exec(
            node, str(SCRIPT), json.dumps(config), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def line(self, step: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next line of ``step`` (others on the way are kept in ``seen``)."""
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert raw, "the JS client ended: " + (await self._stderr())
            line: dict[str, Any] = json.loads(raw)
            if line["step"] == step:
                return line
            self.seen.append(line)

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
