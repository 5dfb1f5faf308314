"""Abuse: arbitrary payloads at every event (property-based, both serializers) and
raw malformed frames over both transports. Nothing crashes, every event is
answered, nothing invalid is stored, other clients are undisturbed."""

from __future__ import annotations

import asyncio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.appkeys import SIO_KEY
from app.core.models import RoomName

from ..conftest import TIMEOUT, Peer, PeerFactory, Served, until
from ..payloads import EVENTS, ROOMS, check_fuzzed_ack, shaped, values
from ..rawclient import CONNECT, RawClient

pytestmark = pytest.mark.matrix("serializer")  # payloads as each serializer decodes them


@pytest.fixture
async def pair(served: Served, peer: PeerFactory) -> tuple[Served, Peer, Peer]:
    fuzzer, witness = await peer("fuzzer"), await peer("witness")
    for room in ROOMS:
        await witness.join(room)
    return served, fuzzer, witness


@pytest.mark.parametrize("transport", ["websocket"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_arbitrary_payloads_get_an_ack_and_store_nothing_invalid(
        pair: tuple[Served, Peer, Peer], data: st.DataObject) -> None:
    """Every event with any payload is answered with {ok: ...}; a refusal has a known
    code; whatever is stored is a valid message; the connection stays usable. (A
    few examples per serializer, as each decodes them; the many are a unit test,
    tests/unit/test_fuzz_events.py, of every event.)"""
    served, fuzzer, _ = pair
    serializer = served.settings.serializer
    event = data.draw(st.sampled_from(EVENTS))
    payload = data.draw(st.one_of(values(serializer), shaped(serializer)))
    ack = await fuzzer.call(event, payload)
    check_fuzzed_ack(ack, event, payload, served.settings.max_text_length)
    assert (await fuzzer.call("rooms"))["ok"] is True


async def test_history_stays_valid_after_fuzzing(pair: tuple[Served, Peer, Peer]) -> None:
    """After a burst of junk and valid sends, each room's seq is gap-free from 1."""
    served, fuzzer, witness = pair
    await fuzzer.join("r1")
    junk = [None, "x", {"room": "r1"}, {"room": "r1", "text": ""}, {"room": 5, "text": "x"},
            {"room": "r1", "text": "ok", "client_id": "c"}, {"room": "r1", "text": "ok2"}]
    await asyncio.gather(*(fuzzer.call("send", j) for j in junk * 5))
    page = await served.chat.store.page(RoomName("r1"), after=0, limit=200)
    assert [m.seq for m in page.messages] == [1, 2, 3, 4, 5, 6]
    assert {m.text for m in page.messages} == {"ok", "ok2"}


# Socket.IO-level garbage inside well-formed Engine.IO MESSAGE packets (both transports)
SIO_FRAMES = ["4", "4x", "49", "4/chat", "42/chat,", "42/chat,[", "42/chat,{}", "42/chat,[1]",
              "45-/chat,[]", "43/chat,1[]", "44/chat,{}", "41/nope,", "40/nope,",
              b"\x00", b"\xff" * 10, b"\xc1", b"\x81\xa4type", b"\x93\x02\xa5/chat",
              b"\x84\xa4type\x02\xa3nsp\xa5/chat\xa4data\x90\xa2id\x01",
              b"\x83\xa4type\x09\xa3nsp\xa5/chat\xa4data\xc0"]
# Engine.IO-level garbage and oversized frames
EIO_FRAMES = ["", "x", "9", "b", "bAAAA"]
BIG_FRAMES = ["4" + "A" * 2_000_000, b"\x00" * 2_000_000]  # polling: test_post_over_the_...


def frame_id(frame: str | bytes) -> str:
    return repr(frame[:12]) + f"..{len(frame)}"


@pytest.mark.parametrize("frame", SIO_FRAMES, ids=frame_id)
async def test_malformed_packets_disturb_no_one(served: Served, transport: str,
                                                peer: PeerFactory, frame: str | bytes) -> None:
    """Bad Socket.IO packets on either transport."""
    await check_frame(served, transport, peer, frame)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("frame", EIO_FRAMES, ids=frame_id)
async def test_frames_that_are_not_engineio_disturb_no_one(
        served: Served, transport: str, peer: PeerFactory, frame: str | bytes) -> None:
    """Frames (or POST bodies) that are not Engine.IO packets."""
    await check_frame(served, transport, peer, frame)


@pytest.mark.parametrize("transport", ["websocket"])
@pytest.mark.parametrize("frame", BIG_FRAMES, ids=frame_id)
async def test_oversized_websocket_frames_disturb_no_one(
        served: Served, transport: str, peer: PeerFactory, frame: str | bytes) -> None:
    """WebSocket messages over the transport's size limit."""
    await check_frame(served, transport, peer, frame)


async def check_frame(served: Served, transport: str, peer: PeerFactory,
                      frame: str | bytes) -> None:
    """Garbage, truncated or oversized frames, wrong namespaces and bad packet types:
    the server stays up, the sender is answered or dropped, others carry on, and a
    dropped sender leaves no trace."""
    alice, bob = await peer("alice"), await peer("bob")
    await alice.join("r")
    await bob.join("r")
    mallory = await RawClient.open(served.url, transport, served.settings.serializer)
    try:
        assert (await mallory.connect({"name": "mallory"}))["type"] == CONNECT
        await mallory.call("join", {"room": "r"})
        try:
            await mallory.send_eio(frame)
        except (ConnectionError, OSError):
            pass  # refused outright
        sent = await alice.send("r", "still fine")
        assert await bob.next("message") == sent
        try:  # mallory is either still usable or gone
            ack = await asyncio.wait_for(mallory.call("rooms"), TIMEOUT)
            assert ack["ok"] is True
        except (ConnectionError, OSError, asyncio.TimeoutError):
            sessions = served.app[SIO_KEY].eio.sockets
            await until(lambda: mallory.sid not in sessions and all(
                c.name != "mallory" for c in served.chat.connections.values()))
    finally:
        await mallory.close()


async def test_over_long_text_gets_an_ack_not_a_disconnect(served: Served, transport: str,
                                                           peer: PeerFactory) -> None:
    """Text far over the limit (every character escaped on the wire) is answered
    too_large: the transport's own limit is well above the largest legal event."""
    alice = await peer("alice")
    await alice.join("r")
    # 40,000 characters, ~240 KB on the wire with JSON: a POST larger than one read
    ack = await alice.call("send", {"room": "r", "text": "\u2028" * 40_000})
    assert ack["error"]["code"] == "too_large"
    assert (await alice.call("rooms"))["ok"] is True


async def test_post_over_the_transport_limit_is_logged(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A long-polling POST over the transport limit is refused and logged with why."""
    client = await RawClient.open(served.url, "polling", served.settings.serializer)
    try:
        assert (await client.connect({"name": "big"}))["type"] == CONNECT
        limit = served.app[SIO_KEY].eio.max_http_buffer_size
        status = await client.send_eio("4" + "x" * (limit + 10))
        assert status >= 400
        assert any("over the" in r.getMessage() and "byte limit" in r.getMessage()
                   for r in caplog.records)
    finally:
        await client.close()


async def test_websocket_message_over_the_limit_is_logged(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A WebSocket message over the transport limit closes that connection, and the
    log says why."""
    client = await RawClient.open(served.url, "websocket", served.settings.serializer)
    try:
        assert (await client.connect({"name": "big"}))["type"] == CONNECT
        limit = served.app[SIO_KEY].eio.max_http_buffer_size
        await client.send_eio("4" + "x" * (limit + 10))
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(client.recv(), TIMEOUT)
        await until(lambda: any("closing a WebSocket" in r.getMessage()
                                for r in caplog.records))
    finally:
        await client.close()
