"""A loopback TCP proxy that a test can cut, like a network dropping out, or
slow down, like a poor mobile link."""

from __future__ import annotations

import asyncio
import contextlib
import socket


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``.

    ``cut()`` aborts every open connection; while ``offline`` is true, new
    connections are closed at once. ``stall()`` stops forwarding (bytes are
    held, new connections wait) until ``resume()``, like a link that goes
    silent and comes back. ``blackhole()`` silently kills every connection
    open now: from then on its bytes are dropped, both ways, and it is never
    closed (a middlebox that lost its state); new connections work. ``upstream``
    may be changed at any time (e.g. to a restarted server's new port).

    With ``rate`` (bytes a second), what the server sends reaches the client
    no faster than that, in slices of a twentieth of a second, and the proxy
    reads from the server only as fast as it forwards (small socket buffers
    on its side): the server meets a reader that slow, as over a real link.
    A proxy made with a rate (0: not yet) may change it at any time.
    """

    SLICE = 0.05  # seconds of a throttled link's traffic forwarded at once
    THROTTLED_BUFFER = 8192  # the proxy's receive buffer from the server, throttled

    def __init__(self, upstream: int, rate: int | None = None) -> None:
        self.upstream = upstream
        self.rate = rate  # bytes a second from the server; None, 0: as fast as it comes
        self.forwarded = 0  # bytes from the server to clients (throttled)
        self.received = 0  # bytes from clients to the server
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
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for source, sink, throttled in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(source, sink, throttled))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.rate is None:
            return await asyncio.open_connection("127.0.0.1", self.upstream)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.THROTTLED_BUFFER)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.upstream))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=self.THROTTLED_BUFFER)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    throttled: bool = False) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        try:
            while True:
                rate = self.rate if throttled else None
                data = await source.read(max(1, int(rate * self.SLICE)) if rate else 65536)
                if not data:
                    break
                await self._flowing.wait()
                if sink in self._black:
                    continue
                if rate:  # the link's pace: this slice leaves when the last has passed
                    due = max(due, loop.time() - self.SLICE) + len(data) / rate
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    self.forwarded += len(data)
                if not throttled:
                    self.received += len(data)
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
