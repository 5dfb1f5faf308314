"""Probes for load balancers and orchestrators.

``GET /healthz``: 200 when this node can serve chat, else 503. Checked: the
message store answers; with ``--redis``, presence in Redis answers and
fan-out to the other nodes is subscribed. The body names each part, e.g.
``{"status": "ok", "node": "web1-3fa2c1", "store": "ok", "store_writer": "ok"}``;
``store_writer`` is "ok" or why the store's writer task last stopped (it is
restarted at once); with ``--redis`` it also reports ``presence_housekeeping``
("ok", or what failed in its last round), and ``files`` says whether the
last call to the file storage (attachments) worked. Those do not fail the
check: the node still serves its clients.

``GET /readyz``: the same checks, and 503 as soon as the node starts shutting
down (draining), so a load balancer stops sending it new clients before its
connections are closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiohttp import web

from .core.errors import ChatError
from .fanout import Fanout
from .appkeys import (CHAT_KEY, FILES_KEY, NODE_KEY, PRESENCE_KEY, SETTINGS_KEY, SIO_KEY,
                      STORE_KEY)

log = logging.getLogger(__name__)

PING_TIMEOUT = 2.0  # seconds a backend ping may take before we call it down
# reported, not failed on: background work that restarts by itself
REPORTED = ("status", "node", "store_writer", "presence_housekeeping", "files")


async def _check(ping: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(ping, PING_TIMEOUT)
    except ChatError as exc:
        return exc.message
    except asyncio.TimeoutError:
        return "ping timed out"
    return "ok"


async def healthz(request: web.Request) -> web.Response:
    return await _probe(request.app, draining_fails=False)


async def readyz(request: web.Request) -> web.Response:
    return await _probe(request.app, draining_fails=True)


async def _probe(app: web.Application, *, draining_fails: bool) -> web.Response:
    store = app[STORE_KEY]
    body = {"status": "ok", "node": app[NODE_KEY], "store": await _check(store.ping()),
            "store_writer": store.status()}
    if FILES_KEY in app:
        body["files"] = app[FILES_KEY].status()
    if draining_fails and CHAT_KEY in app and app[CHAT_KEY].draining:
        body["draining"] = "shutting down"
    if app[SETTINGS_KEY].redis:
        body["presence"] = await _check(app[PRESENCE_KEY].ping())
        body["presence_housekeeping"] = app[PRESENCE_KEY].status()
        fanout: Fanout = app[SIO_KEY].manager
        body["fanout"] = fanout.status()
    failing = {part: state for part, state in body.items()
               if part not in REPORTED and state != "ok"}
    if failing:
        body["status"] = "unavailable"
        log.warning("health check failed: %s", failing)
        return web.json_response(body, status=503)
    return web.json_response(body)
