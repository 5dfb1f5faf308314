"""A stock python-socketio client, run as its own process so nothing of
Roomcast's (which lifts python-engineio's limits process-wide) touches it.

    python tests/stock_client.py KIND TRANSPORT SERIALIZER SCENARIO URL

KIND is ``async`` (AsyncClient), ``sync`` (Client) or ``simple`` (SimpleClient).
Scenarios, each printing one JSON line at the end:

* ``busy``: join room ``busy``, print ``ready``, then receive messages until
  ``COUNT`` have come: ``{"seqs": [...], "connected": bool}``.
* ``pipeline``: join room ``pipe`` and send ``COUNT`` messages at once, each
  waiting for its ack: ``{"acked": n, "connected": bool}``.
* ``restart``: print ``ready`` once connected, then wait for the connection to
  drop and come back by itself: ``{"reconnected": bool}``.

This file imports nothing from Roomcast, nor from this folder.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import socketio

NAMESPACE = "/chat"
COUNT = 100
WAIT = 30.0  # seconds the whole scenario may take
SERIALIZERS = {"msgpack": "msgpack", "json": "default"}


def done(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


async def run_async(transport: str, serializer: str, scenario: str, url: str) -> None:
    sio = socketio.AsyncClient(serializer=SERIALIZERS[serializer])
    seqs: list[int] = []
    enough = asyncio.Event()
    connects = 0
    back = asyncio.Event()

    @sio.on("message", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    def on_message(message: dict[str, Any]) -> None:
        seqs.append(message["seq"])
        if len(seqs) >= COUNT:
            enough.set()

    @sio.on("connect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    def on_connect() -> None:
        nonlocal connects
        connects += 1
        if connects > 1:
            back.set()

    await sio.connect(url, namespaces=[NAMESPACE], transports=[transport],
                      auth={"name": f"stock-{scenario}"})
    try:
        if scenario == "busy":
            await sio.call("join", {"room": "busy"}, namespace=NAMESPACE)
            print("ready", flush=True)
            await asyncio.wait_for(enough.wait(), WAIT)
            done({"seqs": seqs, "connected": sio.connected})
        elif scenario == "pipeline":
            await sio.call("join", {"room": "pipe"}, namespace=NAMESPACE)
            acks = await asyncio.wait_for(asyncio.gather(*(
                sio.call("send", {"room": "pipe", "text": f"m{i}"}, namespace=NAMESPACE)
                for i in range(COUNT))), WAIT)
            done({"acked": sum(1 for ack in acks if ack.get("ok")),
                  "connected": sio.connected})
        else:
            print("ready", flush=True)
            await asyncio.wait_for(back.wait(), WAIT)
            done({"reconnected": connects == 2})
    finally:
        await sio.disconnect()


def run_sync(transport: str, serializer: str, scenario: str, url: str) -> None:
    sio = socketio.Client(serializer=SERIALIZERS[serializer])
    seqs: list[int] = []
    enough = threading.Event()
    connects = 0
    back = threading.Event()

    @sio.on("message", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    def on_message(message: dict[str, Any]) -> None:
        seqs.append(message["seq"])
        if len(seqs) >= COUNT:
            enough.set()

    @sio.on("connect", namespace=NAMESPACE)  # type: ignore[untyped-decorator]
    def on_connect() -> None:
        nonlocal connects
        connects += 1
        if connects > 1:
            back.set()

    sio.connect(url, namespaces=[NAMESPACE], transports=[transport],
                auth={"name": f"stock-{scenario}"})
    try:
        if scenario == "busy":
            sio.call("join", {"room": "busy"}, namespace=NAMESPACE)
            print("ready", flush=True)
            enough.wait(WAIT)
            done({"seqs": seqs, "connected": sio.connected})
        elif scenario == "pipeline":
            sio.call("join", {"room": "pipe"}, namespace=NAMESPACE)
            with ThreadPoolExecutor(COUNT) as pool:
                acks = list(pool.map(lambda i: sio.call(
                    "send", {"room": "pipe", "text": f"m{i}"}, namespace=NAMESPACE,
                    timeout=WAIT), range(COUNT)))
            done({"acked": sum(1 for ack in acks if ack.get("ok")),
                  "connected": sio.connected})
        else:
            print("ready", flush=True)
            back.wait(WAIT)
            done({"reconnected": connects == 2})
    finally:
        sio.disconnect()


def run_simple(transport: str, serializer: str, scenario: str, url: str) -> None:
    sio = socketio.SimpleClient(serializer=SERIALIZERS[serializer])
    sio.connect(url, namespace=NAMESPACE, transports=[transport],
                auth={"name": f"stock-{scenario}"})
    try:
        if scenario == "restart":
            print("ready", flush=True)
            done({"reconnected": simple_comes_back(sio)})
            return
        assert scenario == "busy", "SimpleClient runs the busy and restart scenarios"
        sio.call("join", {"room": "busy"})
        print("ready", flush=True)
        seqs: list[int] = []
        while len(seqs) < COUNT:
            event, message = sio.receive(timeout=WAIT)
            if event == "message":
                seqs.append(message["seq"])
        done({"seqs": seqs, "connected": sio.connected})
    finally:
        sio.disconnect()


def simple_comes_back(sio: socketio.SimpleClient) -> bool:
    """SimpleClient takes no callbacks: watch its ``connected_event``, which is
    cleared while it is away, until it is set again with a new session."""
    first = sio.sid
    deadline = time.monotonic() + WAIT
    while sio.connected_event.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)  # (a process of its own: this waits for the server to go)
    back = sio.connected_event.wait(max(0.0, deadline - time.monotonic()))
    return bool(back and sio.connected and sio.sid != first)


def main(kind: str, transport: str, serializer: str, scenario: str, url: str) -> None:
    if kind == "async":
        asyncio.run(run_async(transport, serializer, scenario, url))
    elif kind == "sync":
        run_sync(transport, serializer, scenario, url)
    else:
        run_simple(transport, serializer, scenario, url)


if __name__ == "__main__":
    main(*sys.argv[1:])
