"""A loopback TCP proxy that a test can cut, like a network dropping out."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``.

    ``cut()`` aborts every open connection; while ``offline`` is true, new
    connections are closed at once. ``stall()`` stops forwarding (bytes are
    held, new connections wait) until ``resume()``, like a link that goes
    silent and comes back. ``blackhole()`` silently kills every connection
    open now: from then on its bytes are dropped, both ways, and it is never
    closed (a middlebox that lost its state); new connections work. ``upstream``
    may be changed at any time (e.g. to a restarted server's new port).
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.offline = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._black: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def blackhole(self) -> None:
        self._black |= self._writers

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.offline:
            writer.transport.abort()
            return
        try:
            await self._flowing.wait()
        except asyncio.CancelledError:  # the proxy closed while stalled
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                if sink in self._black:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(sink)
            self._black.discard(sink)
            sink.transport.abort()

    def cut(self) -> None:
        """Abort every connection now open through the proxy."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
