"""OpenTelemetry tracing (``--trace-endpoint``): a sampled send is one trace
through parse, store, delivery, the publish to Redis and each other node's
delivery, exported over OTLP/HTTP and read back by a receiver that decodes
real OTLP (:mod:`tests.otlp`)."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from app import tracing
from app.tracing import Tracing

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, refused
from ..otlp import OtlpReceiver, Span
from ..services import REDIS_URL

pytestmark = pytest.mark.matrix("transport")


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    """(Asked for before the servers: it outlives them, for their last export.)"""
    started = await OtlpReceiver().start()
    yield started
    await started.close()


def named(spans: list[Span], name: str, trace: str | None = None) -> list[Span]:
    return [s for s in spans if s.name == name and (trace is None or s.trace == trace)]


async def test_a_send_is_one_trace_across_nodes(
        receiver: OtlpReceiver, serve: ServeFactory, peer: PeerFactory, transport: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    a, b = [await serve(store="memory://", redis=REDIS_URL, redis_prefix=prefix,
                        node_id=f"node{i}", trace_endpoint=receiver.endpoint,
                        trace_sample=1.0) for i in range(2)]
    alice, bob = await peer("alice", server=a), await peer("bob", server=b)
    await alice.join("r")
    await bob.join("r")
    text = "a secret never traced"
    sent = await alice.send("r", text)
    assert (await bob.next("message"))["seq"] == sent["seq"]

    def whole(spans: list[Span]) -> bool:
        sends = [s for s in named(spans, "chat.send") if s.attributes.get("roomcast.seq")
                 == sent["seq"]]
        return bool(sends) and len(named(spans, "deliver", sends[0].trace)) >= 2 \
            and bool(named(spans, "fanout.publish", sends[0].trace))
    await receiver.wait(whole, 3 * TIMEOUT)

    spans = receiver.spans
    send = next(s for s in named(spans, "chat.send") if s.attributes["roomcast.seq"]
                == sent["seq"])
    trace = send.trace
    assert send.parent == "" and send.kind == "server" and not send.error
    assert send.attributes["roomcast.transport"] == transport
    assert send.service["service.name"] == "roomcast"
    assert send.service["service.instance.id"] == "node0"
    by_name = {s.name: s for s in spans if s.trace == trace and s.name != "deliver"}
    for name in ("parse", "store.append", "fanout.publish"):
        assert by_name[name].parent == send.id, name
    assert by_name["fanout.publish"].kind == "producer"
    receive = by_name["fanout.receive"]
    assert receive.kind == "consumer" and receive.parent == by_name["fanout.publish"].id
    assert receive.service["service.instance.id"] == "node1"
    delivers = {s.parent: s for s in named(spans, "deliver", trace)}
    assert set(delivers) == {send.id, receive.id}  # on each node, under its own span
    assert delivers[receive.id].service["service.instance.id"] == "node1"
    assert all(text not in repr(s.attributes) and "alice" not in repr(s.attributes)
               for s in spans)


async def test_a_refused_event_is_an_error_span_with_its_code(
        receiver: OtlpReceiver, serve: ServeFactory, peer: PeerFactory) -> None:
    served = await serve(trace_endpoint=receiver.endpoint, trace_sample=1.0)
    carol = await peer("carol", server=served)
    refused(await carol.call("send", {"room": "elsewhere", "text": "hi"}), "not_member")
    await receiver.wait(lambda spans: bool(named(spans, "chat.send")), 3 * TIMEOUT)
    (send,) = named(receiver.spans, "chat.send")
    assert send.error and send.attributes["roomcast.error"] == "not_member"
    # checked, then refused before the store
    assert {s.name for s in receiver.spans if s.trace == send.trace} == {"chat.send", "parse"}


async def test_nothing_is_traced_at_a_sample_of_zero(
        receiver: OtlpReceiver, serve: ServeFactory, peer: PeerFactory) -> None:
    """The exporter flushes at shutdown: what it had would have arrived."""
    served = await serve(trace_endpoint=receiver.endpoint, trace_sample=0.0)
    dave = await peer("dave", server=served)
    await dave.join("r")
    for i in range(20):
        await dave.send("r", f"m{i}")
    await dave.sio.disconnect()
    await served.server.close()
    assert receiver.spans == []


@pytest.mark.matrix()
def test_tracing_off_needs_no_opentelemetry() -> None:
    """Off (no endpoint), the server needs none of the ``tracing`` extra: it
    is made with OpenTelemetry unimportable; asked to trace, it says what to
    install."""
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
from app.server import create_app
from app.settings import Settings
from app.tracing import Tracing
create_app(Settings(store="memory://"))
try:
    Tracing("http://127.0.0.1:4318/v1/traces", 1.0, node="n")
except RuntimeError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                          capture_output=True, text=True)
    assert "pip install roomcast[tracing]" in done.stdout, done


@pytest.mark.matrix()
async def test_what_a_traced_event_leaves_behind_is_not_traced_after_it(
        receiver: OtlpReceiver) -> None:
    """A timer or a task begun during a traced event inherits its context:
    once the event's span has ended, nothing done there is added to it."""
    tracer = Tracing(receiver.endpoint, 1.0, node="n", schedule_delay_ms=50)
    try:
        token = tracer.event("join", "websocket")
        assert token is not None
        inherited = contextvars.copy_context()  # (what call_later and tasks take)
        published = inherited.run(tracing.producer, "fanout.publish")
        assert published is not None
        published.end()
        tracer.end(token, {"ok": True})
        assert inherited.run(tracing.child, "deliver") is tracing.NOTHING
        assert inherited.run(tracing.producer, "fanout.publish") is None
    finally:
        await asyncio.to_thread(tracer.shutdown)
    assert {s.name for s in receiver.spans} == {"chat.join", "fanout.publish"}


@pytest.mark.matrix()
async def test_an_envelope_with_no_valid_traceparent_begins_no_trace(
        receiver: OtlpReceiver) -> None:
    tracer = Tracing(receiver.endpoint, 1.0, node="n", schedule_delay_ms=50)
    try:
        assert tracer.received("not a traceparent", "message") is None
        assert tracer.received("00-" + "0" * 32 + "-" + "0" * 16 + "-01", "message") is None
        assert tracing.child("deliver") is tracing.NOTHING  # (nothing became current)
    finally:
        await asyncio.to_thread(tracer.shutdown)
    assert receiver.spans == []
