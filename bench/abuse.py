"""Abuse: what two hostile peers cost a fresh ``python -m app`` in memory.

    .venv/bin/python -m bench.abuse [--flood-mb 200] [--connections 20] [--messages 3]

* **Unread-ping flood**: one WebSocket, no Socket.IO connect, sends
  ``--flood-mb`` MB of pings and reads nothing, as fast as the server takes
  them (bounded by ``--seconds``).
* **msgpack amplification**: ``--connections`` msgpack WebSockets each join
  ``/chat`` and send ``--messages`` 1 MB events holding an array of 990,000
  empty maps (about 70 MB of Python objects each, if decoded).

Prints the server's resident memory (VmRSS) before, at its peak while each
attack runs, and after, and whether an honest client could still chat. Every
loop is bounded in count and time; only loopback is used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from pathlib import Path

import msgpack
import socketio

from .app_server import roomcast

HANDSHAKE = ("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def rss_mb(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return round(int(found[1]) / 1024, 1) if found else 0.0


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (the mask is zero: XOR changes nothing)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


async def open_ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE.format(host=f"127.0.0.1:{port}").encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer


class Peak:
    """The server's highest RSS while a block runs (sampled every 50 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.mb = pid, 0.0

    async def watch(self) -> None:
        while True:
            self.mb = max(self.mb, rss_mb(self.pid))
            await asyncio.sleep(0.05)


async def ping_flood(port: int, megabytes: int, seconds: float) -> int:
    """Send pings and never read; returns how many MB the server took in."""
    _, writer = await open_ws(port)
    chunk = frame(0x9, b"p" * 125) * 8000  # about 1 MB of pings
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < megabytes and time.monotonic() < deadline:
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break  # the server stopped reading us: the bound at work
            sent += 1
    finally:
        writer.transport.abort()
    return sent


async def amplification(port: int, connections: int, messages: int) -> None:
    event = msgpack.packb({"type": 2, "nsp": "/chat", "data": ["send", [{}] * 990_000]})
    connect = msgpack.packb({"type": 0, "nsp": "/chat", "data": {"name": "x"}})

    async def one(i: int) -> None:
        reader, writer = await open_ws(port)
        try:
            writer.write(frame(0x2, connect) + frame(0x2, event) * messages)
            await asyncio.wait_for(writer.drain(), 30)
            await asyncio.wait_for(reader.read(), 30)  # until the server closes us
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.transport.abort()

    await asyncio.gather(*(one(i) for i in range(connections)))


async def honest_round_trip(url: str) -> bool:
    sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
    try:
        await sio.connect(url, auth={"name": "honest"}, namespaces=["/chat"], wait_timeout=10)
        await sio.call("join", {"room": "r"}, namespace="/chat", timeout=10)
        ack = await sio.call("send", {"room": "r", "text": "hi"}, namespace="/chat", timeout=10)
        return bool(ack.get("ok"))
    except Exception:
        return False
    finally:
        await sio.disconnect()


async def main(args: argparse.Namespace) -> None:
    async with roomcast() as (pid, url):
        port = int(url.rsplit(":", 1)[1])
        print(f"server pid {pid}, cpu: {os.cpu_count()} cores")
        for name, attack in (
                (f"unread-ping flood ({args.flood_mb} MB offered)",
                 lambda: ping_flood(port, args.flood_mb, args.seconds)),
                (f"msgpack amplification ({args.connections} x {args.messages} x 1 MB)",
                 lambda: amplification(port, args.connections, args.messages))):
            before = rss_mb(pid)
            peak = Peak(pid)
            watcher = asyncio.ensure_future(peak.watch())
            try:
                outcome = await attack()
            finally:
                watcher.cancel()
            after = rss_mb(pid)
            ok = await honest_round_trip(url)
            taken = f"; server took {outcome} MB before it stopped reading" \
                if isinstance(outcome, int) else ""
            print(f"{name}: RSS before {before} MB, peak {peak.mb} MB "
                  f"(+{peak.mb - before:.1f}), after {after} MB{taken}; "
                  f"honest client {'chats on' if ok else 'FAILED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood-mb", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--messages", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
