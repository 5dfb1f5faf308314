"""The browser page: ``GET /`` (an aiohttp-jinja2 template) and ``/static/``.

The Socket.IO JavaScript client comes from the npm registry at the version
pinned in ``app/web/package-lock.json``; ``make run`` installs it and copies
its two browser builds into ``app/static/vendor/``, so the page works with no
internet access. The page loads the build that matches the server's
serializer (msgpack or the default JSON parser).

The page is installable: ``/manifest.webmanifest`` names it and its icons,
and ``/sw.js``, a service worker, keeps the app shell for a reload while the
server is away (never a message).

Every HTML response carries a Content-Security-Policy that allows scripts,
styles and connections from this origin only: no inline script runs, even if
some user text were ever mistaken for markup.

The emoji picker (emoji-picker-element, pinned like the rest) draws with
inline styles; rather than allow them on the chat page, it lives in a frame
of its own, ``/emoji-picker``, whose policy allows them and which holds no
user text: the page learns the chosen emoji by ``postMessage``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .chat.namespace import NAMESPACE
from .appkeys import SETTINGS_KEY

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
SOCKETIO_BUNDLES = {"msgpack": "socket.io.msgpack.min.js", "json": "socket.io.min.js"}

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'",
    "frame-ancestors 'none'",
])
# the picker's frame: inline styles allowed, nothing else; only this origin frames it
EMOJI_FRAME_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
    "form-action 'none'", "frame-ancestors 'self'",
])


def setup_page(app: web.Application, serializer: str) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("app", "templates"),
                         autoescape=jinja2.select_autoescape(default=True))
    app.router.add_get("/", index)
    app.router.add_get("/emoji-picker", emoji_picker)
    app.router.add_get("/manifest.webmanifest", _file("manifest.webmanifest",
                                                      "application/manifest+json"))
    # the service worker is served from the root, so that its scope is the site
    app.router.add_get("/sw.js", _file("sw.js", "text/javascript"))
    app.router.add_static("/static/", STATIC_DIR)
    app.on_response_prepare.append(_security_headers)
    bundle = VENDOR_DIR / SOCKETIO_BUNDLES[serializer]
    if not bundle.exists():
        log.warning("the browser page needs %s: run `make run` (or `make web`) to install it",
                    bundle)


def _file(name: str, content_type: str) -> Any:
    """A handler answering one file of ``app/static`` with its media type, to be
    checked by the browser each time (no-cache: a new release is seen at once)."""
    body = (STATIC_DIR / name).read_bytes()

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type,
                            headers={"Cache-Control": "no-cache"})
    return handle


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict[str, object]:
    settings = request.app[SETTINGS_KEY]
    return {"namespace": NAMESPACE, "serializer": settings.serializer,
            "socketio_bundle": SOCKETIO_BUNDLES[settings.serializer],
            "max_text_length": settings.max_text_length,
            "auth_mode": "token" if settings.jwt_secret else "name",
            "token_url": settings.token_url, "sign_in_url": settings.sign_in_url}


async def emoji_picker(request: web.Request) -> web.StreamResponse:
    response = aiohttp_jinja2.render_template("emoji-picker.html", request, {})
    response.headers["Content-Security-Policy"] = EMOJI_FRAME_POLICY
    return response
