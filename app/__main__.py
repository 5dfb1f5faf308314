"""``python -m app``: settings from argv and env, logging, serve until a signal."""

from __future__ import annotations

import sys

try:  # first: do the installed libraries have the shape Roomcast relies on?
    from . import compat  # noqa: F401
except RuntimeError as exc:  # compat.IncompatibleLibrary: say so, without a traceback
    sys.exit(f"roomcast: {exc}")

import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

try:  # the server's own libraries: `pip install roomcast` alone brings the client's
    from . import logs
    from .eio.front import RoomcastRunner
    from .server import create_app
    from .settings import Settings
except ModuleNotFoundError as exc:
    sys.exit(f"roomcast: the server needs {exc.name}, which is not installed: "
             "pip install 'roomcast[server]' (or the locked requirements.txt)")

log = logging.getLogger("app")

BACKLOG = 2048  # pending connections the kernel queues for us (capped by somaxconn)


async def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    # access_log=None: every long-poll would be a line; the app.chat log says what matters
    runner = RoomcastRunner(create_app(settings), handle_signals=False, access_log=None,
                            shutdown_timeout=settings.shutdown_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before anyone can know we are up
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        # a deep accept queue: a reconnect storm must not meet dropped SYNs and the
        # client's 1 s retransmit (the default backlog is 128; Node uses 511)
        site = web.TCPSite(runner, settings.host, settings.port, backlog=BACKLOG)
        await site.start()
        tune_gc()
        for host, port, *_ in runner.addresses:
            log.info("listening on http://%s:%d", host, port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        log.info("stopped")


def tune_gc() -> None:
    """Keep the cycle collector out of the way of delivery. Its young
    generation was collected thousands of times a minute under load, finding
    nothing (chat traffic makes little cyclic garbage), and each full
    collection walked every connection's objects: 80 ms pauses with 1,000
    clients, the p99 latency of whole rate steps (``make bench``). Objects
    alive at start-up are frozen out of collections; the thresholds are raised
    so collections are rare but still happen."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (Linux, macOS), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> None:
    settings = Settings.load(sys.argv[1:] if argv is None else argv)
    logs.configure(settings.log_level, settings.log_format)
    try:
        run(serve(settings))
    except (OSError, ValueError) as exc:  # the port is taken; a bad --api-keys entry
        log.error("cannot serve: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
