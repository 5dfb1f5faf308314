"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from .chat.services import Chat
from .files import FileStorage
from .hooks.service import Webhooks
from .shutdown import ShutdownClock
from .sio.server import RoomcastServer
from .metrics import Metrics
from .presence import Presence
from .settings import Settings
from .store import MessageStore

SETTINGS_KEY = web.AppKey("settings", Settings)
NODE_KEY = web.AppKey("node", str)
METRICS_KEY = web.AppKey("metrics", Metrics)
SIO_KEY = web.AppKey("sio", RoomcastServer)
STORE_KEY = web.AppKey("store", MessageStore)
FILES_KEY = web.AppKey("files", FileStorage)
PRESENCE_KEY = web.AppKey("presence", Presence)
CHAT_KEY = web.AppKey("chat", Chat)
SHUTDOWN_KEY = web.AppKey("shutdown", ShutdownClock)
WEBHOOKS_KEY = web.AppKey("webhooks", Webhooks)
