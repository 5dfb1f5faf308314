"""Slow readers: caught up, or cut (issue "never cut, never flap").

One server on its defaults (1 MB backlog bound, 64 KiB socket send buffer,
pings every 25 s); a room where a sender says ``--rate`` messages of 1 KB a
second for ``--seconds``; ``--fast`` ChatClients reading at loopback speed and
``--slow`` ChatClients each behind its own link (``tests/proxy.py``'s
throttled proxy) at a tenth of the room's byte rate. Run twice: the slow
readers saying ``auth.catch_up`` (as ChatClient does), then not (a stock
client's treatment: cut at the bound, then reconnect and rejoin with
``since``).

    .venv/bin/python -m bench.slow_readers [--rate 400] [--seconds 5] [--slow 10]

Prints per run: how often the slow readers were disconnected, whether each
got every message once, in order, how long after the burst each had it all
(against the least the link allows), the fast readers' delivery latency
(p50, p99: a slow reader must not delay them), the server's peak RSS and
the times it skipped live events for a reader (``roomcast_slow_readers_skipped``)
or cut one (``slow_consumer``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from client import ChatClient
from tests.proxy import Proxy

from .app_server import roomcast
from .webhooks import percentile

TEXT = 1000  # characters a message
ROOM = "busy"


@dataclass
class Reader:
    name: str
    client: ChatClient | None = None
    seqs: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # s, from the message's ts
    disconnects: int = 0
    done_at: float = 0.0  # monotonic: when it had every message


def rss_kb(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


def counter(metrics: str, pattern: str) -> float:
    match = re.search("^" + pattern + r" (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def run(catch_up: bool, args: argparse.Namespace) -> dict[str, Any]:
    total = int(args.rate * args.seconds)
    room_rate = args.rate * (TEXT + 60)  # bytes a second, about, as msgpack
    link = room_rate // 10
    async with roomcast("--send-rate", "100000", "--send-burst", "100000") as (pid, url):
        port = int(url.rsplit(":", 1)[1])
        proxies = [await Proxy(port, rate=link).start() for _ in range(args.slow)]
        readers = [Reader(f"fast{i}") for i in range(args.fast)] + \
            [Reader(f"slow{i}") for i in range(args.slow)]
        everything = asyncio.Event()

        def handlers(reader: Reader) -> dict[str, Any]:
            def on_message(message: dict[str, Any]) -> None:
                reader.seqs.append(message["seq"])
                reader.latencies.append(time.time() - message["ts"] / 1000)
                if len(reader.seqs) == total:
                    reader.done_at = time.monotonic()
                    if all(len(r.seqs) >= total for r in readers):
                        everything.set()

            def on_state(state: str) -> None:
                if state == "disconnected":
                    reader.disconnects += 1
            return {"on_message": on_message, "on_state": on_state}

        for i, reader in enumerate(readers):
            behind_link = reader.name.startswith("slow")
            reader.client = ChatClient(proxies[i - args.fast].url if behind_link else url,
                                       reader.name, reconnection_delay=0.5,
                                       reconnection_delay_max=2, **handlers(reader))
            if not catch_up:
                reader.client.auth["catch_up"] = False  # a stock client's treatment
            await reader.client.connect()
            await reader.client.join(ROOM)
        print(f"{len(readers)} readers in {ROOM}; sending", file=sys.stderr)
        sender = ChatClient(url, "sender")
        await sender.connect()
        await sender.join(ROOM)
        peak = rss_kb(pid)
        start = time.monotonic()
        sends = []
        for n in range(total):  # paced: n-th send at n / rate seconds
            await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
            sends.append(asyncio.ensure_future(sender.send(ROOM, f"{n:06d} " + "x" * (TEXT - 7))))
            if n % 50 == 0:
                peak = max(peak, rss_kb(pid))
        await asyncio.gather(*sends)
        burst_end = time.monotonic()
        print(f"sent {total} in {burst_end - start:.1f} s; waiting for the readers",
              file=sys.stderr)
        least = total * (TEXT + 60) / link  # s the link needs for it all, from the start
        waiting = asyncio.ensure_future(everything.wait())
        while not waiting.done():
            peak = max(peak, rss_kb(pid))
            await asyncio.wait([waiting], timeout=0.5)  # (a sample every half second)
            if time.monotonic() - start > 6 * least + 60:
                waiting.cancel()
                break
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
            metrics = await response.text()
        for reader in readers:
            assert reader.client is not None
            await reader.client.close()
        await sender.close()
        for proxy in proxies:
            await proxy.close()
    slow = [r for r in readers if r.name.startswith("slow")]
    fast = [r for r in readers if r.name.startswith("fast")]
    latencies = sorted(x for r in fast for x in r.latencies)
    complete = [r for r in slow if r.seqs == list(range(1, total + 1))]
    return {
        "catch_up": catch_up, "messages": total, "room_kbps": room_rate / 1000,
        "link_kbps": link / 1000, "least_s": least,
        "disconnects": sum(r.disconnects for r in slow),
        "complete": len(complete), "slow": len(slow),
        "done_after_burst_s": sorted((r.done_at or time.monotonic()) - burst_end for r in slow),
        "done_from_start_s": sorted((r.done_at or time.monotonic()) - start for r in slow),
        "fast_p50_ms": percentile(latencies, 0.5) * 1000 if latencies else 0.0,
        "fast_p99_ms": percentile(latencies, 0.99) * 1000 if latencies else 0.0,
        "peak_rss_mb": peak / 1024,
        "skipped": counter(metrics, r"roomcast_slow_readers_skipped"),
        "cut": counter(metrics, r'roomcast_disconnects_total\{reason="slow_consumer"\}'),
    }


def show(result: dict[str, Any]) -> None:
    done = result["done_from_start_s"]
    print(f"\n{'caught up (auth.catch_up)' if result['catch_up'] else 'stock (cut at the bound)'}:"
          f" {result['messages']} messages at {result['room_kbps']:.0f} KB/s,"
          f" {result['slow']} slow readers at {result['link_kbps']:.0f} KB/s")
    print(f"  slow readers disconnected: {result['disconnects']} times;"
          f" every message once, in order: {result['complete']}/{result['slow']}")
    print(f"  had it all, from the start: median {done[len(done) // 2]:.1f} s,"
          f" last {done[-1]:.1f} s (the link's least: {result['least_s']:.1f} s)")
    print(f"  fast readers' latency: p50 {result['fast_p50_ms']:.1f} ms,"
          f" p99 {result['fast_p99_ms']:.1f} ms")
    print(f"  server: peak RSS {result['peak_rss_mb']:.0f} MB; skipped live events"
          f" {result['skipped']:.0f} times; cut {result['cut']:.0f} readers")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=400, help="messages a second")
    parser.add_argument("--seconds", type=float, default=5, help="of sending")
    parser.add_argument("--fast", type=int, default=5, help="readers at loopback speed")
    parser.add_argument("--slow", type=int, default=10, help="readers at a tenth of the rate")
    args = parser.parse_args()
    for catch_up in (True, False):
        show(await run(catch_up, args))


if __name__ == "__main__":
    asyncio.run(main())
