"""Fixtures: a real Roomcast server on 127.0.0.1:0 and real Socket.IO peers.

``serve(**settings)`` starts ``create_app(Settings(...))`` in-process on an
ephemeral port; ``peer(name)`` connects a python-socketio ``AsyncClient`` to
its ``/chat`` namespace over the test's transport and serializer, and records
every server event in a queue per event name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import socketio
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.core.models import Sid, now_ms
from app.chat.namespace import NAMESPACE
from app.chat.services import Chat
from app.eio.front import RoomcastRunner
from client.chat_client import SOCKETIO_SERIALIZERS
from app.appkeys import CHAT_KEY
from app.server import create_app
from app.settings import RATED, Settings
from app.presence import PresenceFactory, open_presence
from app.store import StoreFactory, open_store

from .services import S3_ENV, S3Server

if TYPE_CHECKING:  # (tests/jsclient.py imports this module)
    from .jsclient import JSClient

TIMEOUT = 5.0  # seconds any single expected event may take

TRANSPORTS = ["websocket", "polling"]
UNLIMITED: dict[str, float] = {
    **{f"{kind}_{shape}": 10**6 for kind in RATED for shape in ("rate", "burst")},
    "reply_bytes_rate": 10**12, "reply_bytes_burst": 10**12, "max_upload_rate": 10**12,
    # and nothing deferred: a dropped connection's presence goes at once, a node
    # shutting down closes every connection at once (each has tests of its own)
    "presence_grace": 0, "drain_window": 0}
UNLIMITED_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in UNLIMITED.items()]
SERIALIZERS = ["msgpack", "json"]


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Yield to the event loop until ``predicate()`` holds, at most ``timeout`` s.

    For server-side state with no event to wait on; the in-process server
    shares the test's loop, so each turn of the loop lets it make progress.
    """
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)  # one turn of the loop, not a timed wait


def refused(ack: dict[str, Any], code: str) -> str:
    """Assert ``ack`` refuses with ``code``; its message."""
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    return str(ack["error"]["message"])


def past(ms: int) -> None:
    """Return once the wall clock has passed ``ms`` (ms since the epoch), so that
    what is stored next has a later ``ts`` than what was: a spin of at most a
    millisecond, not a wait on time."""
    while now_ms() <= ms:
        pass


@dataclasses.dataclass
class Served:
    """A running server: its URL, settings and the live application."""

    url: str
    settings: Settings
    app: web.Application
    server: TestServer

    @property
    def chat(self) -> Chat:
        """The chat's services on this server."""
        return self.app[CHAT_KEY]


class PeerCalls:
    """The calls of a peer, over its ``call`` and the ``events`` it recorded:
    shared by :class:`Peer` (a real client) and the unit tier's LocalPeer."""

    events: defaultdict[str, asyncio.Queue[Any]]

    async def call(self, event: str, *args: Any) -> Any:
        raise NotImplementedError

    async def ok(self, event: str, data: Any = None) -> dict[str, Any]:
        """Call and assert success."""
        ack = await self.call(event, data) if data is not None else await self.call(event)
        assert ack["ok"] is True, ack
        return dict(ack)

    async def next(self, event: str) -> Any:
        return await asyncio.wait_for(self.events[event].get(), TIMEOUT)

    def pending(self, event: str) -> list[Any]:
        """Events of this kind received and not yet taken."""
        queue = self.events[event]
        return [queue.get_nowait() for _ in range(queue.qsize())]

    async def join(self, room: str, **extra: Any) -> dict[str, Any]:
        return await self.ok("join", {"room": room, **extra})

    async def send(self, room: str, text: str, **extra: Any) -> dict[str, Any]:
        ack = await self.ok("send", {"room": room, "text": text, **extra})
        return dict(ack["message"])

    async def occupancy(self) -> list[tuple[str, int]]:
        """The rooms list as (name, members), without where this person stands."""
        return [(r["name"], r["members"]) for r in (await self.ok("rooms"))["rooms"]]


async def barrier(sender: PeerCalls, receiver: PeerCalls, room: str) -> None:
    """Send a marker in ``room`` and wait until ``receiver`` gets it.

    Deliveries to one connection keep their order, so anything the server
    emitted to ``receiver`` before the marker has arrived once this returns.
    """
    marker = await sender.send(room, "-- barrier --")
    while (await receiver.next("message"))["seq"] != marker["seq"]:
        pass


class Peer(PeerCalls):
    """A real Socket.IO client connected to ``/chat``."""

    def __init__(self, name: str, sio: socketio.AsyncClient) -> None:
        self.name = name
        self.sio = sio
        self.events = defaultdict(asyncio.Queue)
        self.received: list[tuple[str, Any]] = []  # every event, in the order received
        for event in ("message", "change", "presence", "typing", "catch_up", "read", "mention",
                      "direct", "receipt"):
            sio.on(event, self._recorder(event), namespace=NAMESPACE)

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            self.received.append((event, data))
            self.events[event].put_nowait(data)
        return record

    @property
    def sid(self) -> Sid:
        return Sid(self.sio.get_sid(NAMESPACE))

    async def call(self, event: str, *args: Any) -> Any:
        data = args[0] if len(args) == 1 else (tuple(args) if args else None)
        return await self.sio.call(event, data, namespace=NAMESPACE, timeout=TIMEOUT)


def sio_client(serializer: str) -> socketio.AsyncClient:
    """A bare python-socketio client speaking ``serializer``, not reconnecting."""
    return socketio.AsyncClient(serializer=SOCKETIO_SERIALIZERS[serializer], reconnection=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix(*dimensions): run on both transports and both "
                            "serializers (where the wire matters), or on both values of the "
                            "dimensions named; other tests run on WebSocket and msgpack")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything alive once the tests are collected (modules, fixtures' code)
    lives to the end: out of the collector's way, so that each test's collection
    (collect_garbage) looks at what that test made, not at all of it again."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect after each test, so an unclosed session or socket is reported
    (as an error, by filterwarnings) against the test that leaked it; then
    freeze what is left, so the next test's collection looks at what that test
    made, not again at every library a test before it imported (Playwright,
    botocore and moto's S3 server hold a million objects between them: a
    collection of all of it took 0.1 s, after each of 1,200 tests)."""
    yield
    gc.collect()
    gc.freeze()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``transport`` and ``serializer``: every value for a test marked ``matrix``
    (the wire tier), the defaults (WebSocket, msgpack) for the others; a test
    that parametrizes one itself keeps its own values."""
    given = {name.strip() for marker in metafunc.definition.iter_markers("parametrize")
             for name in (marker.args[0].split(",") if isinstance(marker.args[0], str)
                          else marker.args[0])}
    marker = metafunc.definition.get_closest_marker("matrix")
    wide = set() if marker is None else set(marker.args or ("transport", "serializer"))
    for name, values in (("transport", TRANSPORTS), ("serializer", SERIALIZERS)):
        if name in metafunc.fixturenames and name not in given:
            metafunc.parametrize(name, values if name in wide else values[:1])


class RoomcastTestServer(TestServer):
    """aiohttp's test server on the runner ``python -m app`` uses (its front door
    answers WebSocket handshakes itself, :mod:`app.eio.front`)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return RoomcastRunner(self.app, **kwargs)


ServeFactory = Callable[..., Awaitable[Served]]


async def serving(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """``serve(**settings)``: start a server (stopped at the end of the test).
    The fixture ``serve`` is this; a module whose tests share an event loop
    makes it a fixture of that loop (``tests/system/test_page.py``)."""
    started: list[TestServer] = []

    async def start(*, store_factory: StoreFactory = open_store,
                    presence_factory: PresenceFactory = open_presence,
                    routes: Callable[[web.Application], None] | None = None,
                    **overrides: Any) -> Served:
        fields: dict[str, Any] = {"host": "127.0.0.1", "port": 0,
                                  "store": f"sqlite:///{tmp_path}/chat.db",
                                  "files": f"dir:{tmp_path}/files",
                                  "upload_spool": f"{tmp_path}/uploads",
                                  # tests send in bursts; the limits have their own tests
                                  **UNLIMITED}
        fields.update(overrides)
        settings = Settings(**fields)
        app = create_app(settings, store_factory=store_factory,
                         presence_factory=presence_factory)
        if routes is not None:  # what a test adds beside Roomcast (a sign-in service)
            routes(app)
        server = RoomcastTestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        started.append(server)
        return Served(str(server.make_url("")).rstrip("/"), settings, app, server)

    yield start
    for server in reversed(started):
        await server.close()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    async for start in serving(tmp_path):
        yield start


@pytest.fixture
async def served(serve: ServeFactory, serializer: str) -> Served:
    """The default server for protocol tests, in the test's serializer."""
    return await serve(serializer=serializer)


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def peer(served: Served, transport: str) -> AsyncIterator[PeerFactory]:
    """``await peer("alice")``: a connected peer on the test's transport."""
    clients: list[socketio.AsyncClient] = []

    async def connect(name: str, *, transports: list[str] | None = None,
                      server: Served | None = None, auth: dict[str, Any] | None = None
                      ) -> Peer:
        target = server or served
        sio = sio_client(target.settings.serializer)
        clients.append(sio)
        joined = Peer(name, sio)
        await sio.connect(target.url, auth=auth or {"name": name}, namespaces=[NAMESPACE],
                          transports=transports or [transport], wait_timeout=TIMEOUT)
        return joined

    yield connect
    for sio in clients:
        if sio.connected:
            await sio.disconnect()


@pytest.fixture
async def js() -> AsyncIterator[list[JSClient]]:
    """socket.io-client processes the test starts (``tests/jsclient.py``):
    stopped at its end."""
    started: list[JSClient] = []
    yield started
    for client in started:
        await client.stop()


@pytest.fixture
async def s3_files(monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``--files`` URL on a fresh bucket of a real S3-compatible server
    (``tests/services.py``), with the credentials in the environment."""
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    return await S3Server.shared().bucket()
