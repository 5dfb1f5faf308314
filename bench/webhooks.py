"""Webhook delivery lag at 1,000 events/s, and S1 with ten webhooks subscribed.

    .venv/bin/python -m bench.webhooks [--runs 3] [--seconds 10] [--rate 1000]
                                       [--parts lag,s1]

**lag**: each run starts a fresh ``python -m app`` (SQLite, every message
stored) with one webhook on every room, and a receiver in this process
(aiohttp). Ten python-socketio clients, each in a room of its own, send
``--rate`` messages per second in all for ``--seconds`` (open loop: a send
leaves on its tick whatever the acks do), and one more client, a member of
every room, receives them. For every message the lag is the time it reached
the receiver (or the member's socket) less the time the store gave it (its
``ts``; one machine, one clock). Prints p50/p99 of both and the ratio
webhook/socket, per run and their medians.

**s1**: the fan-out scenario of ``make bench`` (S1: 10 rooms x 100 members,
the Node load generator) against Roomcast with no webhook and with ten
webhooks on every room (each posting to the receiver here), in alternating
order, same flags otherwise; prints both and the ratios with/without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import socketio
from aiohttp import web

from app.api.keys import entry, new_key

from . import __main__ as s1
from .app_server import roomcast

NAMESPACE = "/chat"
UNLIMITED = ["--send-rate", "1000000", "--send-burst", "1000000", "--api-rate", "1000000",
             "--api-burst", "1000000", "--max-connections-per-address", "100000",
             "--webhook-networks", "127.0.0.0/8"]  # (the receiver runs on this host)
SENDERS = 10
HOOKS_IN_S1 = 10


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Receiver:
    """Takes every delivery at once (204) and notes each message's lag."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.events = 0
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        delivery = await request.json()
        now = time.time() * 1000
        self.requests += 1
        for event in delivery["events"]:
            self.events += 1
            if event["type"] == "message":
                self.lags.append(now - event["message"]["ts"])
        return web.Response(status=204)

    async def start(self) -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}/hook"


@contextlib.asynccontextmanager
async def hooked(count: int) -> AsyncIterator[tuple[Receiver, int, str]]:
    """A fresh Roomcast with ``count`` webhooks on every room, each posting to
    one receiver here; yield the receiver, the server's pid and URL."""
    key = new_key()
    receiver = Receiver()
    runner, hook_url = await receiver.start()
    try:
        async with roomcast(*UNLIMITED, "--api-keys", entry("bench", "admin", "*", key)
                            ) as (pid, url):
            async with aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {key}"}) as http:
                for _ in range(count):
                    async with http.post(f"{url}/api/v1/webhooks",
                                         json={"url": hook_url, "rooms": ["*"]}) as reply:
                        assert reply.status == 201, await reply.text()
            yield receiver, pid, url
    finally:
        await runner.cleanup()


async def lag_run(rate: float, seconds: float) -> dict[str, float]:
    async with hooked(1) as (receiver, _, url):
        member_lags: list[float] = []
        member = socketio.AsyncClient(serializer="msgpack", reconnection=False)

        @member.on("message", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
        def on_message(message: dict[str, Any]) -> None:
            member_lags.append(time.time() * 1000 - message["ts"])
        await member.connect(url, auth={"name": "member"}, namespaces=[NAMESPACE],
                             transports=["websocket"], wait_timeout=30)
        senders = []
        for i in range(SENDERS):
            sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
            await sio.connect(url, auth={"name": f"sender-{i}"}, namespaces=[NAMESPACE],
                              transports=["websocket"], wait_timeout=30)
            await sio.call("join", {"room": f"lag-{i}"}, namespace=NAMESPACE, timeout=30)
            await member.call("join", {"room": f"lag-{i}"}, namespace=NAMESPACE, timeout=30)
            senders.append(sio)
        total = int(rate * seconds)
        sends: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        for n in range(total):  # open loop: the n-th send leaves at n / rate
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sio = senders[n % SENDERS]
            sends.append(asyncio.ensure_future(sio.call(
                "send", {"room": f"lag-{n % SENDERS}", "text": f"m{n}",
                         "client_id": uuid.uuid4().hex}, namespace=NAMESPACE, timeout=60)))
        acks = await asyncio.gather(*sends)
        sent_for = time.perf_counter() - started
        stored = sum(1 for ack in acks if ack["ok"])
        deadline = time.monotonic() + 60
        while (len(receiver.lags) < stored or len(member_lags) < stored) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # (a bench waits for the tail to arrive)
        for sio in [*senders, member]:
            await sio.disconnect()
    return {"events/s sent": stored / sent_for, "events delivered": len(receiver.lags),
            "of stored": stored, "requests": receiver.requests,
            "webhook p50 ms": percentile(receiver.lags, 0.5),
            "webhook p99 ms": percentile(receiver.lags, 0.99),
            "socket p50 ms": percentile(member_lags, 0.5),
            "socket p99 ms": percentile(member_lags, 0.99)}


async def s1_run(hooks: int, args: argparse.Namespace) -> dict[str, float]:
    async with hooked(hooks) as (receiver, pid, url):
        result = await asyncio.to_thread(s1.loadgen, {
            "scenario": "fanout", "url": url, "serializer": "msgpack", "polling": 0,
            "stepSeconds": args.step_seconds, "serverPid": pid, "run": s1.run_id()})
    moderate = result["moderate"]
    return {"max msgs/s (p99 < 100 ms)": result["max_delivered_per_s"],
            "p50 ms @ 10k msgs/s": moderate["p50_ms"], "p99 ms @ 10k msgs/s": moderate["p99_ms"],
            "server CPU % @ 10k msgs/s": moderate["server_cpu_pct"],
            "server CPU % @ 40k msgs/s": result["fixed"]["server_cpu_pct"],
            "lost + repeated": sum(s["lost"] + s["repeated"] for s in
                                   [moderate, result["fixed"], *result["steps"]]),
            "webhook events": receiver.events}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main(args: argparse.Namespace) -> None:
    parts = args.parts.split(",")
    if "lag" in parts:
        lags = []
        for run in range(args.runs):
            lags.append(await lag_run(args.rate, args.seconds))
            print(f"lag run {run + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in lags[-1].items()),
                  flush=True)
        m = medians(lags)
        print(f"\nwebhook lag at {args.rate:.0f} events/s, median of {args.runs} runs:")
        for k, v in m.items():
            print(f"  {k:<20} {v:10.1f}")
        print(f"  webhook/socket p50 {m['webhook p50 ms'] / m['socket p50 ms']:.2f}x, "
              f"p99 {m['webhook p99 ms'] / m['socket p99 ms']:.2f}x\n", flush=True)
    if "s1" in parts:
        runs: dict[int, list[dict[str, float]]] = {0: [], HOOKS_IN_S1: []}
        for run in range(args.runs):
            for hooks in ((0, HOOKS_IN_S1) if run % 2 == 0 else (HOOKS_IN_S1, 0)):
                runs[hooks].append(await s1_run(hooks, args))
                print(f"s1 run {run + 1} webhooks={hooks}: {runs[hooks][-1]}", flush=True)
        without, with_ = medians(runs[0]), medians(runs[HOOKS_IN_S1])
        print(f"\nS1 fan-out, median of {args.runs} runs: no webhook | {HOOKS_IN_S1} webhooks"
              " | ratio")
        for k in without:
            ratio = with_[k] / without[k] if without[k] else float("nan")
            print(f"  {k:<28} {without[k]:10.1f} {with_[k]:10.1f} {ratio:8.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--step-seconds", type=float, default=2.5)
    parser.add_argument("--parts", default="lag,s1")
    try:
        import uvloop
        uvloop.run(main(parser.parse_args()))
    except ImportError:
        asyncio.run(main(parser.parse_args()))
