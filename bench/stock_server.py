"""The stock python-socketio baseline for ``make bench``: the same events as
Roomcast (join with ``since``, send, the ``message`` broadcast) on an
untouched ``socketio.AsyncServer`` + aiohttp, rooms and seq numbers in memory,
no persistence, no checks beyond the payload's shape.

    python -m bench.stock_server --port 0 [--serializer msgpack|json] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import socketio
from aiohttp import web


@dataclass
class Room:
    seq: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    by_client_id: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def create_app(serializer: str) -> web.Application:
    sio = socketio.AsyncServer(async_mode="aiohttp", serializer=serializer,
                               cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)
    rooms: dict[str, Room] = {}
    names: dict[str, str] = {}

    @sio.on("connect", namespace="/chat")  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: Any, auth: Any = None) -> None:
        names[sid] = str(auth.get("name", "anon")) if isinstance(auth, dict) else "anon"

    @sio.on("disconnect", namespace="/chat")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: str = "") -> None:
        names.pop(sid, None)

    @sio.on("join", namespace="/chat")  # type: ignore[untyped-decorator]
    async def join(sid: str, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict) or not isinstance(req.get("room"), str):
            return {"ok": False, "error": {"code": "bad_request", "message": "room"}}
        room = rooms.setdefault(req["room"], Room())
        await sio.enter_room(sid, req["room"], namespace="/chat")
        since = req.get("since")
        start = since if isinstance(since, int) else room.seq - 50
        return {"ok": True, "room": req["room"], "seq": room.seq, "members": [],
                "messages": room.messages[max(0, start):], "more": False}

    @sio.on("send", namespace="/chat")  # type: ignore[untyped-decorator]
    async def send(sid: str, req: Any) -> dict[str, Any]:
        if (not isinstance(req, dict) or not isinstance(req.get("room"), str)
                or not isinstance(req.get("text"), str)):
            return {"ok": False, "error": {"code": "bad_request", "message": "room and text"}}
        if req["room"] not in sio.rooms(sid, namespace="/chat"):
            return {"ok": False, "error": {"code": "not_member", "message": "join first"}}
        room = rooms.setdefault(req["room"], Room())
        name = names.get(sid, "anon")
        key = (name, str(req.get("client_id")))
        if req.get("client_id") and key in room.by_client_id:
            return {"ok": True, "message": room.by_client_id[key]}
        room.seq += 1
        message = {"room": req["room"], "seq": room.seq, "from": name, "text": req["text"],
                   "ts": time.time(), "client_id": req.get("client_id")}
        room.messages.append(message)
        if req.get("client_id"):
            room.by_client_id[key] = message
        await sio.emit("message", message, room=req["room"], skip_sid=sid, namespace="/chat")
        return {"ok": True, "message": message}

    return app


async def serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()  # as Roomcast
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--serializer", choices=("msgpack", "json"), default="msgpack")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.install()
    app = create_app("default" if args.serializer == "json" else args.serializer)
    asyncio.run(serve(app, args.port))


if __name__ == "__main__":
    main()
