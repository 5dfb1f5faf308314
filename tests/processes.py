"""Run ``python -m app`` and ``python -m client`` as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .conftest import TIMEOUT, UNLIMITED_FLAGS

STARTUP_TIMEOUT = 20.0  # seconds for a fresh interpreter to import and bind
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")


class Process:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: asyncio.Queue[str] = asyncio.Queue()
        self.stderr_lines: list[str] = []
        self._stderr_changed = asyncio.Event()  # a line came, or stderr ended
        self._readers = [asyncio.ensure_future(self._read(proc.stdout, self.stdout.put_nowait)),
                         asyncio.ensure_future(self._read(proc.stderr, self._stderr))]

    @classmethod
    async def start(cls, *args: str, cwd: Path, env: dict[str, str] | None = None,
                    executable: str = sys.executable) -> Process:
        """``executable ARGS`` (this Python by default) in ``cwd``."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            executable, *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader | None,
                    sink: Callable[[str], None]) -> None:
        assert stream is not None
        while line := await stream.readline():
            sink(line.decode().rstrip("\n"))
        self._stderr_changed.set()

    def _stderr(self, line: str) -> None:
        self.stderr_lines.append(line)
        self._stderr_changed.set()

    async def stderr_match(self, pattern: str | re.Pattern[str],
                           timeout: float = TIMEOUT) -> re.Match[str]:
        """Wait for a stderr line matching ``pattern``; return the match."""
        regex = re.compile(pattern)
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for line in self.stderr_lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.stderr_lines)
                if self._readers[1].done():
                    raise AssertionError(f"stderr ended before {pattern!r}:\n"
                                         + "\n".join(self.stderr_lines))
                self._stderr_changed.clear()
                await self._stderr_changed.wait()

    async def line(self, timeout: float = TIMEOUT) -> str:
        return await asyncio.wait_for(self.stdout.get(), timeout)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit code (killing it if it hangs)."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError("did not exit in time:\n" + "\n".join(self.stderr_lines))
        await asyncio.gather(*self._readers)
        return code

    async def wait(self, timeout: float = TIMEOUT) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return code


async def start_server(cwd: Path, *args: str,
                       env: dict[str, str] | None = None) -> tuple[Process, int]:
    """``python -m app --host 127.0.0.1 --port 0 ARGS``; returns it and its bound port."""
    server = await Process.start("-m", "app", "--host", "127.0.0.1", "--port", "0",
                                 *UNLIMITED_FLAGS, *args, cwd=cwd, env=env)
    match = await server.stderr_match(LISTENING, STARTUP_TIMEOUT)
    return server, int(match.group(1))
