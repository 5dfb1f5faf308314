"""``GET /healthz``: 200 when the server and its store are usable, else 503."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .errors import ChatError
from .keys import STORE_KEY

log = logging.getLogger(__name__)

PING_TIMEOUT = 2.0  # seconds a store ping may take before we call it down


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[STORE_KEY].ping(), PING_TIMEOUT)
    except (ChatError, asyncio.TimeoutError) as exc:
        reason = exc.message if isinstance(exc, ChatError) else "store ping timed out"
        log.warning("health check failed: %s", reason)
        return web.json_response({"status": "unavailable", "store": reason}, status=503)
    return web.json_response({"status": "ok", "store": "ok"})
