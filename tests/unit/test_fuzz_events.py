"""Every /chat event with arbitrary payloads (property-based), through the events'
acks on a node's services: each is answered {ok: ...}, a refusal has a known
code and is never internal, whatever is stored is a valid message, the
connection stays usable. (The wire tier sends a few per serializer, as each
decodes them: tests/wire/test_fuzz.py.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chat.events import EVENTS

from ..payloads import ROOMS, check_fuzzed_ack, shaped, values
from .chat import Harness, LocalPeer

ALL = [*EVENTS, "nosuch", "message", "connect", "disconnect"]


@pytest.fixture
async def fuzzer(node: Harness) -> LocalPeer:
    witness = await node.peer("witness")
    for room in ROOMS:
        await witness.join(room)
    return await node.peer("fuzzer")


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_every_event_with_any_payload_gets_an_ack_and_stores_nothing_invalid(
        node: Harness, fuzzer: LocalPeer, data: st.DataObject) -> None:
    event = data.draw(st.sampled_from(ALL))
    payload = data.draw(st.one_of(values("msgpack"), shaped("msgpack")))
    ack = await fuzzer.call(event, payload)
    check_fuzzed_ack(ack, event, payload, node.settings.max_text_length)
    assert (await fuzzer.call("rooms"))["ok"] is True
