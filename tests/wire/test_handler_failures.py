"""A handler that fails half way leaves no trace, and its ack tells the truth.

A connection's membership of a room is held in three places: the namespace's
``conn.rooms``, the Socket.IO room (where broadcasts go) and presence (who is
listed). Failures are injected at each await of ``join``, ``leave`` and
``disconnect``, on both presence backends; afterwards the three agree, with
the ack: a failed join is in none, a join answered ok in all, a leave in none
(presence repaired by its housekeeping when its own call failed)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.errors import ChatError, ErrorCode
from app.core.models import RoomName
from app.chat.namespace import NAMESPACE
from app.appkeys import SIO_KEY
from app.presence import open_presence
from app.store import open_store

from ..conftest import TIMEOUT, Peer, ServeFactory, Served, sio_client, until
from ..services import REDIS_URL


class Faulty:
    """A store or presence whose next calls of a method raise, as told."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._faults: dict[str, list[BaseException]] = {}

    def fail(self, method: str, error: BaseException, times: int = 1) -> None:
        self._faults.setdefault(method, []).extend([error] * times)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        faults = self._faults.get(name)
        if not faults:
            return attr

        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise faults.pop(0)
        return failing


UNAVAILABLE = ChatError(ErrorCode.UNAVAILABLE, "injected outage")
BUG = RuntimeError("injected bug")


async def start_node(serve: ServeFactory, presence: str, **overrides: Any) -> Served:
    """A node on ``presence`` ("memory" or "redis") whose store and presence can
    be made to fail; presence repairs itself every 0.1 s."""
    if presence == "redis":
        overrides.update(redis=REDIS_URL, redis_prefix=f"test-{uuid.uuid4().hex[:8]}")

    async def faulty_store(url: str) -> Any:
        return Faulty(await open_store(url))

    async def faulty_presence(*args: Any, **kwargs: Any) -> Any:
        return Faulty(await open_presence(*args, **kwargs))

    return await serve(presence_ttl=0.3, store_factory=faulty_store,
                       presence_factory=faulty_presence, **overrides)


@pytest.fixture(params=["memory", "redis"])
async def node(serve: ServeFactory, request: pytest.FixtureRequest) -> Served:
    return await start_node(serve, request.param)


@pytest.fixture
async def alice(node: Served) -> AsyncIterator[Peer]:
    peer = Peer("alice", sio_client("msgpack"))
    await peer.sio.connect(node.url, auth={"name": "alice"}, namespaces=[NAMESPACE],
                           transports=["websocket"], wait_timeout=TIMEOUT)
    yield peer
    if peer.sio.connected:
        await peer.sio.disconnect()


def faulty(node: Served, what: str) -> Faulty:
    store = node.chat.store
    held = getattr(store, "store", store) if what == "store" else node.chat.presence
    assert isinstance(held, Faulty)  # (the store under its Deadlines)
    return held


async def copies(node: Served, peer: Peer, sid: str, room: str) -> dict[str, bool]:
    """Where the connection ``sid`` of ``peer`` is a member of ``room``."""
    conn = node.chat.connections.get(sid)  # type: ignore[call-overload]
    manager = node.app[SIO_KEY].manager
    held = node.chat.presence
    presence = held.inner if isinstance(held, Faulty) else held
    return {"conn.rooms": conn is not None and room in conn.rooms,
            "socket.io room": sid in manager.rooms.get(NAMESPACE, {}).get(room, {}),
            "presence": peer.name in await presence.members(RoomName(room))}


def everywhere(value: bool) -> dict[str, bool]:
    return {"conn.rooms": value, "socket.io room": value, "presence": value}


@pytest.mark.parametrize("what, method", [("store", "page"), ("presence", "join")])
@pytest.mark.parametrize("error", [UNAVAILABLE, BUG], ids=["outage", "bug"])
async def test_a_join_that_fails_leaves_no_trace(node: Served, alice: Peer, what: str,
                                                 method: str, error: BaseException) -> None:
    faulty(node, what).fail(method, error)
    ack = await alice.call("join", {"room": "r"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == ("unavailable" if error is UNAVAILABLE else "internal")
    assert await copies(node, alice, alice.sid, "r") == everywhere(False)
    assert (await alice.join("r"))["members"] == ["alice"]  # and it can join again
    assert await copies(node, alice, alice.sid, "r") == everywhere(True)


@pytest.mark.parametrize("error", [UNAVAILABLE, BUG], ids=["outage", "bug"])
async def test_a_join_done_is_answered_done(node: Served, alice: Peer,
                                            error: BaseException) -> None:
    """Presence recorded the join, then could not list the members: the join is
    done, and answered ok with the members this node knows of."""
    faulty(node, "presence").fail("members", error)
    ack = await alice.join("r")
    assert ack["members"] == ["alice"]
    assert await copies(node, alice, alice.sid, "r") == everywhere(True)


@pytest.mark.parametrize("method", ["leave", "members"])
@pytest.mark.parametrize("error", [UNAVAILABLE, BUG], ids=["outage", "bug"])
async def test_a_leave_is_done_whatever_presence_does(node: Served, alice: Peer,
                                                      method: str, error: BaseException) -> None:
    """The connection has left once the ack says so; a presence entry its failed
    call left behind is removed by housekeeping."""
    await alice.join("r")
    faulty(node, "presence").fail(method, error)
    await alice.ok("leave", {"room": "r"})
    presence = faulty(node, "presence").inner
    rounds = presence.rounds
    await until(lambda: presence.rounds > rounds + 1, TIMEOUT)  # a whole round since
    assert await copies(node, alice, alice.sid, "r") == everywhere(False)
    assert (await alice.join("r"))["members"] == ["alice"]


async def test_a_disconnect_leaves_every_room_whatever_fails(node: Served, alice: Peer) -> None:
    """Presence fails on the first of three rooms (a bug, then an outage): the
    disconnect still leaves the rest at once, and housekeeping the others."""
    sid = alice.sid
    for room in ("a", "b", "c"):
        await alice.join(room)
    presence = faulty(node, "presence")
    presence.fail("leave", BUG)
    presence.fail("leave", UNAVAILABLE)
    await alice.sio.disconnect()
    manager = node.app[SIO_KEY].manager
    await until(lambda: sid not in node.chat.connections
                and sid not in manager.rooms.get(NAMESPACE, {}).get(None, {}))
    assert await copies(node, alice, sid, "c") == everywhere(False)
    rounds = presence.inner.rounds
    await until(lambda: presence.inner.rounds > rounds + 1, TIMEOUT)
    for room in ("a", "b"):
        assert await copies(node, alice, sid, room) == everywhere(False)


@pytest.mark.parametrize("presence", ["memory", "redis"])
async def test_pipelined_joins_keep_the_room_limit(serve: ServeFactory, presence: str) -> None:
    """Ten joins at once of ten rooms, at most three allowed: three succeed, the
    rest are refused too_large, and the connection is in exactly those three."""
    node = await start_node(serve, presence, max_rooms=3)
    peer = Peer("alice", sio_client("msgpack"))
    await peer.sio.connect(node.url, auth={"name": "alice"}, namespaces=[NAMESPACE],
                           transports=["websocket"], wait_timeout=TIMEOUT)
    try:
        acks = await asyncio.gather(*(peer.call("join", {"room": f"r{i}"}) for i in range(10)))
        joined = [f"r{i}" for i, ack in enumerate(acks) if ack["ok"]]
        assert len(joined) == 3
        assert {ack["error"]["code"] for ack in acks if not ack["ok"]} == {"too_large"}
        for i in range(10):
            assert await copies(node, peer, peer.sid, f"r{i}") == everywhere(f"r{i}" in joined)
    finally:
        await peer.sio.disconnect()


async def test_a_bug_in_the_identity_check_is_the_servers(
        serve: ServeFactory, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect whose identity check raises (a bug, injected) is refused
    ``internal`` and logged at ERROR with its traceback: not blamed on the
    client's packet, and the server goes on serving."""
    from app.chat import connections

    def broken(auth: object, secret: str) -> None:
        raise RuntimeError("injected bug")

    served = await serve()
    monkeypatch.setattr(connections, "identify", broken)
    sio = sio_client("msgpack")
    errors: asyncio.Queue[Any] = asyncio.Queue()
    sio.on("connect_error", errors.put_nowait, namespace=NAMESPACE)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(served.url, auth={"name": "alice"}, namespaces=[NAMESPACE],
                          wait_timeout=TIMEOUT)
    error = await asyncio.wait_for(errors.get(), TIMEOUT)
    assert error["data"] == {"code": "internal", "message": "internal error"}
    failures = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert any("injected bug" in str(r.exc_info[1]) for r in failures if r.exc_info)
    assert not any("invalid Socket.IO packet" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    peer = Peer("alice", sio_client("msgpack"))
    await peer.sio.connect(served.url, auth={"name": "alice"}, namespaces=[NAMESPACE],
                           wait_timeout=TIMEOUT)
    await peer.join("r")
    await peer.sio.disconnect()


class Gate:
    """A store whose reads wait until opened, counting those waiting."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def page(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        return await self.inner.page(*args, **kwargs)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_connections_events_in_progress_are_bounded(serve: ServeFactory,
                                                            transport: str) -> None:
    """200 pipelined history calls while the store is stuck: at most
    --max-events-in-progress (5 here) of them are being handled; the rest wait
    unread, none is dropped, all are answered once the store answers; another
    connection is served meanwhile."""
    gates: list[Gate] = []

    async def gated(url: str) -> Any:
        gates.append(Gate(await open_store(url)))
        return gates[-1]

    served = await serve(max_events_in_progress=5, store_factory=gated)
    [gate] = gates
    peers = [Peer(name, sio_client("msgpack")) for name in ("alice", "bob")]
    for peer in peers:
        await peer.sio.connect(served.url, auth={"name": peer.name}, namespaces=[NAMESPACE],
                               transports=[transport], wait_timeout=TIMEOUT)
    alice, bob = peers
    try:
        gate.open.set()
        await alice.join("r")
        gate.open.clear()
        # (each its own read: identical reads asked in one turn share one,
        # app/store/shared.py)
        calls = [asyncio.ensure_future(alice.sio.call("history", {"room": "r", "limit": i + 1},
                                                      namespace=NAMESPACE, timeout=30))
                 for i in range(200)]
        await until(lambda: gate.waiting == 5)
        assert await bob.occupancy() == [("r", 1)]
        assert gate.waiting == 5  # still: the others wait unread
        gate.open.set()
        acks = await asyncio.gather(*calls)
        assert all(ack["ok"] for ack in acks) and len(acks) == 200
    finally:
        for peer in peers:
            await peer.sio.disconnect()


class HeldScript:
    """One of Redis presence's scripts, whose next call can be made to fail or to
    wait (before it runs) until released."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self._next: list[BaseException | asyncio.Event] = []
        self.reached = asyncio.Event()

    def fail_next(self, error: BaseException) -> None:
        self._next.append(error)

    def hold_next(self) -> asyncio.Event:
        release = asyncio.Event()
        self._next.append(release)
        return release

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._next:
            step = self._next.pop(0)
            if isinstance(step, BaseException):
                raise step
            self.reached.set()
            await step.wait()
        return await self.script(*args, **kwargs)


async def redis_node(serve: ServeFactory) -> tuple[Served, Any]:
    """A node on Redis presence whose housekeeping the test runs itself (its own
    rounds are 20 s apart), and that presence."""
    node = await serve(redis=REDIS_URL, redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
                       presence_ttl=60)
    return node, node.chat.presence


async def connected(node: Served, name: str) -> Peer:
    peer = Peer(name, sio_client("msgpack"))
    await peer.sio.connect(node.url, auth={"name": name}, namespaces=[NAMESPACE],
                           transports=["websocket"], wait_timeout=TIMEOUT)
    return peer


async def heard_about(watcher: Peer, marker: Peer, name: str, room: str) -> list[str]:
    """The presence events about ``name`` that ``watcher`` received, in order,
    up to ``marker`` joining ``room`` (everything announced before that join
    has arrived once its own announcement has)."""
    await marker.join(room)
    heard: list[str] = []
    while (event := await watcher.next("presence"))["user"] != marker.name:
        if event["user"] == name:
            heard.append(event["event"])
    return heard


async def test_housekeeping_keeps_a_join_whose_script_ran_but_has_not_resumed(
        serve: ServeFactory) -> None:
    """Alice's join has been recorded in Redis, its coroutine not yet resumed,
    when a housekeeping round reads the node's entries: she is not dropped,
    and bob hears one join, no leave."""
    node, presence = await redis_node(serve)
    bob, alice, carol = [await connected(node, n) for n in ("bob", "alice", "carol")]
    await bob.join("r")
    recorded = asyncio.Event()
    resume = asyncio.Event()
    script = presence._join

    async def recorded_then_held(*args: Any, **kwargs: Any) -> Any:
        result = await script(*args, **kwargs)
        recorded.set()
        await resume.wait()
        return result
    presence._join = recorded_then_held
    joining = asyncio.ensure_future(alice.join("r"))
    await asyncio.wait_for(recorded.wait(), TIMEOUT)
    await presence.housekeeping(node.chat.rooms.local_members, node.chat.rooms.announce_leave,
                                node.chat.rooms.announce_join)
    resume.set()
    await joining
    presence._join = script
    assert await copies(node, alice, alice.sid, "r") == everywhere(True)
    assert await heard_about(bob, carol, "alice", "r") == ["join"]


async def test_a_rejoin_during_a_repair_is_not_undone_by_it(serve: ServeFactory) -> None:
    """Alice's leave was not recorded in Redis (an outage), so a repair round sets
    out to drop her stale entry; before it does, she joins again. The room
    then lists her, at once, and the last bob hears of her is a join."""
    node, presence = await redis_node(serve)
    bob, alice, carol = [await connected(node, n) for n in ("bob", "alice", "carol")]
    await bob.join("r")
    await alice.join("r")
    assert (await bob.next("presence"))["user"] == "alice"
    leave = presence._leave = HeldScript(presence._leave)
    leave.fail_next(RedisConnectionError("injected outage"))
    await alice.ok("leave", {"room": "r"})  # done for the node, still in Redis
    release = leave.hold_next()  # the repair's drop of it, when it comes to it
    repair = asyncio.ensure_future(presence.housekeeping(
        node.chat.rooms.local_members, node.chat.rooms.announce_leave,
        node.chat.rooms.announce_join))
    await asyncio.wait_for(leave.reached.wait(), TIMEOUT)
    rejoining = asyncio.ensure_future(alice.join("r"))
    conn = node.chat.connections[alice.sid]
    await until(lambda: "r" in conn.rooms)  # her join is under way
    release.set()
    await repair
    await rejoining
    assert await copies(node, alice, alice.sid, "r") == everywhere(True)
    assert (await heard_about(bob, carol, "alice", "r"))[-1:] == ["join"]


async def test_a_leave_during_a_repair_is_not_undone_by_it(serve: ServeFactory) -> None:
    """Alice's join was not recorded in Redis (an outage), so a repair round sets
    out to restore it; before it does, she leaves. The room then does not
    list her, and the last bob hears of her is a leave."""
    node, presence = await redis_node(serve)
    bob, alice, carol = [await connected(node, n) for n in ("bob", "alice", "carol")]
    await bob.join("r")
    join = presence._join = HeldScript(presence._join)
    join.fail_next(RedisConnectionError("injected outage"))
    await alice.join("r")  # done for the node, not in Redis
    assert (await bob.next("presence"))["user"] == "alice"
    release = join.hold_next()  # the repair's restore of it
    repair = asyncio.ensure_future(presence.housekeeping(
        node.chat.rooms.local_members, node.chat.rooms.announce_leave,
        node.chat.rooms.announce_join))
    await asyncio.wait_for(join.reached.wait(), TIMEOUT)
    conn = node.chat.connections[alice.sid]
    leaving = asyncio.ensure_future(alice.ok("leave", {"room": "r"}))
    await until(lambda: "r" not in conn.rooms)  # her leave is under way
    release.set()
    await repair
    await leaving
    assert await copies(node, alice, alice.sid, "r") == everywhere(False)
    assert (await heard_about(bob, carol, "alice", "r"))[-1:] in ([], ["leave"])
