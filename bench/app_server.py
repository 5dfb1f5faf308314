"""A fresh ``python -m app`` on loopback for the bench scripts (churn, abuse)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
from collections.abc import AsyncIterator

LISTENING = re.compile(rb"listening on http://[^:]+:(\d+)")


@contextlib.asynccontextmanager
async def roomcast(*flags: str, store: str = "") -> AsyncIterator[tuple[int, str]]:
    """Serve on a free port, with ``store`` (default: a SQLite store in a new
    temporary folder) and ``flags``; yield ``(pid, url)``, then stop it."""
    if not store:
        store = f"sqlite:///{tempfile.mkdtemp(prefix='roomcast-bench-')}/bench.db"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", "0",
        "--store", store, *flags, stderr=asyncio.subprocess.PIPE)
    assert server.stderr is not None
    while not (match := LISTENING.search(line := await server.stderr.readline())):
        if not line:
            raise SystemExit("the server did not start")
    drain = asyncio.ensure_future(server.stderr.read())  # its log is not needed
    try:
        yield server.pid, f"http://127.0.0.1:{match[1].decode()}"
    finally:
        server.terminate()
        await server.wait()
        await drain
