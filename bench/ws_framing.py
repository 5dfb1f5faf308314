"""Our RFC 6455 framing beside wsproto's sans-I/O one, on a chat server's work.

    .venv/bin/python -m bench.ws_framing [--frames N] [--runs R]

The Engine.IO issue asks for a well-kept sans-I/O WebSocket implementation
unless a benchmark shows it cannot hold the figures; this is that benchmark.
wsproto 1.3 is the one installed (python-engineio's client brings it);
websockets is not in the lock. Three measures, each the median of the runs:

* **read**: masked client text frames of a typical event (60 bytes), fed in
  4 KB chunks as the kernel hands them over, to whole messages;
* **write**: unmasked server text frames of a typical message (200 bytes);
* **idle memory**: what one more server-side connection object costs
  (tracemalloc, over 2,000 of them).

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, cast

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import Message, TextMessage

from app.ws.connection import OpenConnections, WebSocketConnection
from app.ws.frames import FIN, TEXT, frame

EVENT = b'42/chat,7["send",{"room":"lobby","text":"hello there, all"}]'
MESSAGE = ('42/chat,["message",{"room":"lobby","seq":1234,"user":"alice","text":"'
           + "x" * 120 + '","ts":1764547200.123}]')


def masked(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((FIN | TEXT, 0x80 | len(payload))) + mask + body


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return None

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def ws_message(self, data: str | bytes) -> None:
        self.n += 1

    def ws_closed(self) -> None:
        pass

    def ws_writable(self, writable: bool) -> None:
        pass


def chunks(n: int) -> list[bytes]:
    stream = b"".join(masked(EVENT) for _ in range(n))
    return [stream[i:i + 4096] for i in range(0, len(stream), 4096)]


def read_ours(parts: list[bytes], n: int) -> float:
    connection = WebSocketConnection(cast(asyncio.Transport, _Transport()), OpenConnections(),
                                     max_size=1 << 20)
    listener = _Count()
    connection.listen(listener)
    start = time.perf_counter()
    for part in parts:
        connection.data_received(part)
    elapsed = time.perf_counter() - start
    assert listener.n == n, listener.n
    return elapsed


def read_wsproto(parts: list[bytes], n: int) -> float:
    connection = Connection(ConnectionType.SERVER)
    got = 0
    start = time.perf_counter()
    for part in parts:
        connection.receive_data(part)
        for event in connection.events():
            if isinstance(event, TextMessage) and event.message_finished:
                got += 1
    elapsed = time.perf_counter() - start
    assert got == n, got
    return elapsed


def write_ours(n: int) -> float:
    payload = MESSAGE.encode()
    start = time.perf_counter()
    for _ in range(n):
        frame(TEXT, payload)
    return time.perf_counter() - start


def write_wsproto(n: int) -> float:
    connection = Connection(ConnectionType.SERVER)
    start = time.perf_counter()
    for _ in range(n):
        connection.send(Message(data=MESSAGE))
    return time.perf_counter() - start


def per_connection(make: Callable[[], Any], count: int = 2000) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [make() for _ in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == count
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n = args.frames
    parts = chunks(n)
    results: dict[str, list[float]] = {}
    runs: list[tuple[str, Callable[[], float]]] = [
        ("read ours", lambda: read_ours(parts, n)),
        ("read wsproto", lambda: read_wsproto(parts, n)),
        ("write ours", lambda: write_ours(n)),
        ("write wsproto", lambda: write_wsproto(n))]
    for _ in range(args.runs):
        for name, run in runs:
            results.setdefault(name, []).append(n / run())
    registry = OpenConnections()
    ours_bytes = per_connection(lambda: WebSocketConnection(
        cast(asyncio.Transport, _Transport()), registry, max_size=1 << 20))
    wsproto_bytes = per_connection(lambda: Connection(ConnectionType.SERVER))
    print(f"WebSocket framing, {n:,} frames, median of {args.runs} runs")
    print(f"  {'measure':<28}{'ours':>14}{'wsproto':>14}{'ours/wsproto':>14}")
    for measure in ("read", "write"):
        ours = statistics.median(results[f"{measure} ours"])
        theirs = statistics.median(results[f"{measure} wsproto"])
        print(f"  {measure + ' frames/s':<28}{ours:>14,.0f}{theirs:>14,.0f}{ours / theirs:>13.2f}x")
    print(f"  {'bytes per idle connection':<28}{ours_bytes:>14,.0f}{wsproto_bytes:>14,.0f}"
          f"{ours_bytes / wsproto_bytes:>13.2f}x")


if __name__ == "__main__":
    main()
