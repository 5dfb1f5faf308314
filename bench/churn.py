"""Churn: many short connections (connect, join, send, leave), bounded in count and
time, against a fresh `python -m app` on loopback; then check that nothing grew.

    .venv/bin/python -m bench.churn [--cycles 3000] [--concurrency 50] [--seconds 120]

Prints the server's open file descriptors, resident memory, asyncio tasks,
Engine.IO sessions and presence entries before, after, and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from pathlib import Path

import aiohttp
import socketio

from .app_server import roomcast

GAUGES = ("roomcast_engineio_sessions", "roomcast_asyncio_tasks", "roomcast_connections",
          "roomcast_room_members", "roomcast_rooms")


async def state(pid: int, url: str) -> dict[str, float]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    found = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    rss = int(found[1]) if found else 0
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as response:
            text = await response.text()
    values: dict[str, float] = {"open fds": fds, "RSS (MB)": round(rss / 1024, 1)}
    for gauge in GAUGES:
        total = sum(float(v) for v in re.findall(rf"^{gauge}(?:{{[^}}]*}})? (\S+)$", text, re.M))
        values[gauge.removeprefix("roomcast_")] = total
    return values


async def one_cycle(url: str, i: int, transport: str) -> None:
    sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
    try:
        await sio.connect(url, auth={"name": f"churn{i % 200}"}, namespaces=["/chat"],
                          transports=[transport], wait_timeout=10)
        room = f"room{i % 20}"
        await sio.call("join", {"room": room}, namespace="/chat", timeout=10)
        await sio.call("send", {"room": room, "text": f"hello {i}"}, namespace="/chat",
                       timeout=10)
        if i % 3 == 0:
            await sio.call("leave", {"room": room}, namespace="/chat", timeout=10)
    finally:
        if i % 5 == 0 and sio.eio.ws is not None:
            await sio.eio.ws.close()  # an abrupt drop instead of a goodbye
        await sio.disconnect()


async def main(args: argparse.Namespace) -> None:
    flags = ("--max-connections-per-name", "1000", "--send-rate", "1000", "--send-burst", "1000")
    async with roomcast(*flags) as (pid, url):
        before = await state(pid, url)
        started = time.monotonic()
        done = 0
        semaphore = asyncio.Semaphore(args.concurrency)

        async def run(i: int) -> None:
            nonlocal done
            async with semaphore:
                if time.monotonic() - started > args.seconds:
                    return
                await one_cycle(url, i, "websocket" if i % 4 else "polling")
                done += 1

        await asyncio.gather(*(run(i) for i in range(args.cycles)))
        elapsed = time.monotonic() - started
        await asyncio.sleep(1)  # let the server finish tearing down the last ones
        after = await state(pid, url)
        print(f"{done} cycles in {elapsed:.1f} s ({done / elapsed:.0f}/s), "
              f"concurrency {args.concurrency}")
        print(f"{'':28}{'before':>10}{'after':>10}{'change':>10}")
        for key in before:
            print(f"{key:28}{before[key]:>10}{after[key]:>10}{after[key] - before[key]:>10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    asyncio.run(main(parser.parse_args()))
