"""Messages per second posted through the HTTP API, beside the same through a socket.

    .venv/bin/python -m bench.api [--clients 8] [--seconds 10] [--runs 3]

Each run starts a fresh ``python -m app`` (SQLite, every message stored,
the per-connection and per-key limits lifted) and, one after the other in
alternating order, for ``--seconds`` each:

* **api**: ``--clients`` HTTP clients (aiohttp, one kept-alive connection
  each) post to a room of their own with ``POST /api/v1/rooms/{room}/messages``,
  one request in flight per client, each with an Idempotency-Key;
* **socket**: ``--clients`` python-socketio clients (WebSocket, msgpack),
  each joined to a room of its own, ``send`` with a client_id, one in flight
  per client.

Counts the stored messages each way (answered ok) and prints each run's
rates, their medians and the ratio api/socket. The load generator is this
process (uvloop), on the machine's other core.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiohttp
import socketio

from app.api.keys import entry, new_key

from .app_server import roomcast

NAMESPACE = "/chat"
UNLIMITED = ["--send-rate", "1000000", "--send-burst", "1000000", "--api-rate", "1000000",
             "--api-burst", "1000000", "--max-connections-per-address", "100000"]


async def through_api(url: str, key: str, clients: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    stored = 0

    async def client(i: int) -> None:
        nonlocal stored
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            while time.perf_counter() < stop:
                async with http.post(f"{url}/api/v1/rooms/api-{i}/messages",
                                     json={"text": "hello from a backend"},
                                     headers={"Idempotency-Key": uuid.uuid4().hex}) as reply:
                    if reply.status == 200 and (await reply.json())["ok"]:
                        stored += 1
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return stored / (time.perf_counter() - started)


async def through_socket(url: str, clients: int, seconds: float) -> float:
    socks = []
    for i in range(clients):
        sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
        await sio.connect(url, auth={"name": f"bench-{i}"}, namespaces=[NAMESPACE],
                          transports=["websocket"], wait_timeout=30)
        await sio.call("join", {"room": f"socket-{i}"}, namespace=NAMESPACE, timeout=30)
        socks.append(sio)
    stop = time.perf_counter() + seconds
    stored = 0

    async def client(i: int, sio: socketio.AsyncClient) -> None:
        nonlocal stored
        while time.perf_counter() < stop:
            ack = await sio.call("send", {"room": f"socket-{i}", "text": "hello from a socket",
                                          "client_id": uuid.uuid4().hex},
                                 namespace=NAMESPACE, timeout=30)
            if ack["ok"]:
                stored += 1
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, sio) for i, sio in enumerate(socks)))
        return stored / (time.perf_counter() - started)
    finally:
        await asyncio.gather(*(sio.disconnect() for sio in socks))


async def main(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"api": [], "socket": []}
    for run in range(args.runs):
        key = new_key()
        async with roomcast(*UNLIMITED, "--api-keys", entry("bench", "publish", "*", key)
                            ) as (_, url):
            order = ["api", "socket"] if run % 2 == 0 else ["socket", "api"]
            for way in order:
                rate = await (through_api(url, key, args.clients, args.seconds) if way == "api"
                              else through_socket(url, args.clients, args.seconds))
                rates[way].append(rate)
                print(f"run {run + 1} {way:>6}: {rate:8.0f} messages/s", flush=True)
    api, sock = statistics.median(rates["api"]), statistics.median(rates["socket"])
    print(f"\nmedian of {args.runs} runs, {args.clients} clients, one request in flight each:")
    print(f"  api    {api:8.0f} messages/s")
    print(f"  socket {sock:8.0f} messages/s")
    print(f"  api/socket {api / sock:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    try:
        import uvloop
        uvloop.run(main(parser.parse_args()))
    except ImportError:
        asyncio.run(main(parser.parse_args()))
