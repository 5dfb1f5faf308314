"""The application factory: ``create_app(settings)`` -> ``web.Application``.

The aiohttp app serves the page (:mod:`app.page`), ``/healthz`` and ``/socket.io/``; a
python-socketio ``AsyncServer`` (our :class:`RoomcastServer`) is attached to
it, with the ``/chat`` namespace registered once the backends are open.
Each backend is one ``cleanup_ctx`` pair, so a failed start-up undoes only
what had been started and shutdown closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from . import health
from .sio.admin import enable_admin_ui
from .chat.auth import host_policy, origin_policy
from .api.keys import parse_keys
from .api.routes import API_KEY, Api, setup_api
from .chat.namespace import NAMESPACE, ChatNamespace
from .chat.recovery import RECOVERABLE
from .core.errors import ChatError, ErrorCode
from .fanout import Fanout, client_manager
from .files import open_files
from .hooks.relay import open_relay
from .hooks.service import Webhooks
from .eio.front import ENGINE_KEY, TIMEOUTS_KEY, head_deadlines
from .appkeys import (
    CHAT_KEY, FILES_KEY, METRICS_KEY, NODE_KEY, PRESENCE_KEY, SETTINGS_KEY, SHUTDOWN_KEY, SIO_KEY,
    STORE_KEY, WEBHOOKS_KEY,
)
from .metrics import Metrics
from .tracing import Tracing
from .sio.packet import BoundedMsgPackPacket
from .page import setup_page
from .presence import PresenceFactory, open_presence
from .settings import Settings
from .shutdown import ShutdownClock
from .sio.server import RoomcastServer
from .store import StoreFactory, open_store
from .store.deadline import Deadlines
from .uploads.routes import UPLOADS_KEY, Uploads, setup_uploads
from .ws.connection import CLOSE_TIMEOUT

log = logging.getLogger(__name__)

STARTUP_WAIT = 5.0  # seconds to wait for the Redis subscription at start-up
ADMIN_UI_ORIGIN = "https://admin.socket.io"


def watch_state(metrics: Metrics, sio: RoomcastServer, namespace: ChatNamespace,
                fanout: Fanout) -> None:
    """Gauges read at scrape time from the live state of this node."""
    chat = namespace.chat

    def connections() -> list[tuple[list[str], float]]:
        counts = {"websocket": 0, "polling": 0}
        for sid in list(chat.connections):
            transport = namespace.transport(sid)
            if transport in counts:
                counts[transport] += 1
        return [([transport, NAMESPACE], n) for transport, n in counts.items()]

    def rooms() -> list[tuple[list[str], float]]:
        return [([], len(chat.rooms.here()))]

    def members() -> list[tuple[list[str], float]]:
        return [([], len(chat.rooms.local_members()))]

    metrics.watch("roomcast_connections", "Open /chat connections on this node",
                  ["transport", "namespace"], connections)
    metrics.watch("roomcast_rooms", "Rooms with a member connected to this node", [], rooms)
    metrics.watch("roomcast_room_members", "Room memberships of this node's connections",
                  [], members)
    metrics.watch("roomcast_engineio_sessions", "Engine.IO sessions held by this node", [],
                  lambda: [([], len(sio.eio.sockets))])
    metrics.watch("roomcast_slow_readers_skipped", "Times a connection that catches up fell "
                  "behind its backlog bound and skipped live events rather than be cut "
                  "(a counter)", [], lambda: [([], sio.eio.skips)])
    metrics.watch("roomcast_deliveries_late", "Events (and pings) handed to a connection on "
                  "this node still not written to its socket, or taken by its poll, "
                  "--late-delivery-after seconds later; each counted once", [],
                  lambda: [([], sio.eio.budget.late)], counter=True)
    metrics.watch("roomcast_asyncio_tasks", "asyncio tasks alive in this process", [],
                  lambda: [([], len(asyncio.all_tasks()))])
    for name, (text, read) in fanout.gauges().items():
        metrics.watch(name, text, [], _unlabelled(read))


def _unlabelled(read: Callable[[], float]) -> Callable[[], list[tuple[list[str], float]]]:
    return lambda: [([], read())]


# our setting's values -> python-socketio's serializers (msgpack decoded within bounds)
SOCKETIO_SERIALIZERS: dict[str, object] = {"msgpack": BoundedMsgPackPacket, "json": "default"}


def refused_event_reply(reason: str) -> list[object]:
    """The ack of an event the Socket.IO layer refuses (a reserved name, none)."""
    return [{"ok": False, "error": ChatError(ErrorCode.BAD_REQUEST, reason).as_dict()}]


def create_app(settings: Settings, *, store_factory: StoreFactory = open_store,
               presence_factory: PresenceFactory = open_presence) -> web.Application:
    parse_keys(settings.api_keys)  # a bad entry stops the start, saying which and why
    host_check = host_policy(settings.allowed_hosts.split(","),
                             trust_forwarded=settings.trust_forwarded)
    app = web.Application(middlewares=[
        head_deadlines, *([_hosts_middleware(host_check)] if host_check else [])])
    app[SETTINGS_KEY] = settings
    app[NODE_KEY] = node = settings.node_name()
    app[METRICS_KEY] = metrics = Metrics()
    fanout = client_manager(settings, metrics, node, counted=NAMESPACE)
    sio = RoomcastServer(
        async_mode="aiohttp",
        client_manager=fanout,
        # browsers: this server's own origin, the configured ones, and the
        # hosted Admin UI when it is enabled
        cors_allowed_origins=origin_policy(
            settings.allowed_origins.split(",") + ([ADMIN_UI_ORIGIN] if settings.admin_ui else []),
            trust_forwarded=settings.trust_forwarded),
        host_check=host_check,
        serializer=SOCKETIO_SERIALIZERS[settings.serializer],
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        connect_timeout=settings.connect_timeout,
        # The transport's own limit, far above the largest legal event (every
        # character JSON-escaped as \uXXXX), so over-long text gets its
        # too_large ack rather than a dropped connection.
        max_http_buffer_size=max(1_000_000, 16 * 6 * settings.max_text_length),
        max_backlog_packets=settings.max_backlog_packets,
        max_backlog_bytes=settings.max_backlog_bytes,
        max_node_backlog_bytes=settings.max_node_backlog_bytes,
        max_poll_packets=settings.max_poll_packets,
        send_buffer=settings.socket_send_buffer,
        max_events_in_progress=settings.max_events_in_progress,
        refuse_event=refused_event_reply,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    sio.eio.budget.late_after = settings.late_delivery_after
    app[SIO_KEY] = sio
    app[ENGINE_KEY] = sio.eio
    app[TIMEOUTS_KEY] = (settings.header_timeout, settings.keepalive_timeout)

    app[SHUTDOWN_KEY] = clock = ShutdownClock(settings.shutdown_timeout)

    # Set up in this order; torn down in the order shutdown needs (chat_ctx):
    # handlers finish, the store drains, fan-out flushes, presence signs off.
    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        app[STORE_KEY] = Deadlines(await store_factory(settings.store),
                                   timeout=settings.store_timeout,
                                   max_pending=settings.store_max_pending)
        yield
        await app[STORE_KEY].close()  # (done already, unless start-up failed)

    async def presence_ctx(app: web.Application) -> AsyncIterator[None]:
        app[PRESENCE_KEY] = await presence_factory(
            settings.redis, prefix=settings.redis_prefix, node_id=node,
            ttl=settings.presence_ttl, max_connections=settings.redis_max_connections,
            grace=settings.presence_grace)
        yield
        await clock.step("presence sign-off", app[PRESENCE_KEY].close(), floor=1.0)

    async def files_ctx(app: web.Application) -> AsyncIterator[None]:
        app[FILES_KEY] = await open_files(settings.files)
        yield
        await app[FILES_KEY].close()

    async def chat_ctx(app: web.Application) -> AsyncIterator[None]:
        namespace = ChatNamespace(settings, app[STORE_KEY], app[PRESENCE_KEY], app[FILES_KEY],
                                  metrics)
        sio.register_namespace(namespace)
        app[CHAT_KEY] = chat = namespace.chat
        app[WEBHOOKS_KEY] = webhooks = Webhooks(settings, app[STORE_KEY], open_relay(
            settings.redis, prefix=settings.redis_prefix, node_id=node))
        chat.messages.watchers.append(webhooks.noticed)
        chat.retention.watchers.append(webhooks.tail.cut)
        if settings.api_keys:
            app[API_KEY] = Api(chat, settings, webhooks)
        app[UPLOADS_KEY] = Uploads(chat.attachments)
        metrics.watch("roomcast_webhooks_delivered_here", "Webhooks this node delivers "
                      "(holds the lease of)", [], lambda: [([], len(webhooks.deliverers))])
        metrics.watch("roomcast_webhook_events_delivered", "Events acknowledged by webhook "
                      "receivers, delivered by this node", [], lambda: [([], sum(
                          d.delivered for d in webhooks.deliverers.values()))])
        watch_state(metrics, sio, namespace, fanout)
        store = app[STORE_KEY]
        metrics.watch("roomcast_store_calls_in_flight", "Message store calls waiting for "
                      "the store (bounded by --store-max-pending)", [],
                      lambda: [([], store.pending if isinstance(store, Deadlines) else 0)])
        if settings.admin_ui:
            enable_admin_ui(sio, settings, node)
        tracer = None
        if settings.trace_endpoint:
            chat.tracer = fanout.tracer = tracer = Tracing(
                settings.trace_endpoint, settings.trace_sample, node=node)
        fanout.on_catch_up = chat.recovery.catch_up
        fanout.observers["change"] = chat.governance.observed
        fanout.droppable = RECOVERABLE
        sio.start_manager()
        await fanout.wait_subscribed(STARTUP_WAIT)
        chat.start()
        await webhooks.start()
        log.info("node %s ready", node)
        yield
        await chat.wait_handlers(clock.left())
        await chat.stop()
        await clock.step("webhooks' stop", webhooks.stop(), floor=1.0)
        # the store drains (appends called, not yet written), then what that lets
        # finish is broadcast, and fan-out publishes it before it closes
        await clock.step("the store's drain", app[STORE_KEY].close(),
                         abort=app[STORE_KEY].abort)
        await chat.wait_handlers(clock.left())
        await clock.step("fan-out's flush", fanout.close(), floor=1.0)
        if tracer is not None:  # (the exporter's own thread; bounded by its timeout)
            await clock.step("traces' export", asyncio.to_thread(tracer.shutdown), floor=1.0)

    app.cleanup_ctx.extend([store_ctx, presence_ctx, files_ctx, chat_ctx])
    app.on_shutdown.append(_disconnect_clients)

    setup_page(app, settings.serializer)
    setup_uploads(app)
    if settings.api_keys:  # the HTTP API is off unless a key is configured
        setup_api(app)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", metrics.handle)
    return app


def _hosts_middleware(check: Callable[[web.Request], bool]) -> Any:
    """Every path answers only the allowed Host values (``--allowed-hosts``);
    the Engine.IO server checks its own requests the same way."""
    @web.middleware
    async def hosts(request: web.Request, handler: Any) -> web.StreamResponse:
        if not check(request):
            return web.Response(status=400, text="unknown host")
        response: web.StreamResponse = await handler(request)
        return response
    return hosts


async def _disconnect_clients(app: web.Application) -> None:
    """On SIGINT/SIGTERM: stop taking sends and joins, close every Engine.IO
    session, so clients reconnect (to this server once restarted, or to
    another node). Handlers already running finish, and the backends close in
    order, when the contexts close (chat_ctx); all of it within one
    --shutdown-timeout (ShutdownClock)."""
    app[SHUTDOWN_KEY].start()
    sio = app[SIO_KEY]
    if CHAT_KEY in app:
        await app[CHAT_KEY].rooms.drain()  # /readyz answers 503 from now on
    window = app[SETTINGS_KEY].drain_window
    if window:
        log.info("shutting down: closing the connections over %g s (--drain-window)", window)
    count = await sio.close_all_sessions(over=window)
    log.info("shutting down: closed %d connections", count)
    await sio.eio.connections.wait_closed(CLOSE_TIMEOUT)  # their closing handshakes
    await sio.shutdown()
