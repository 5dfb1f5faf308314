"""The Admin UI's logins: throttled per address, a connection closed after a few failures."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from app.sio.admin import FAILURES_PER_CONNECTION, LOGIN_BURST, LOGIN_REFILL_S, LoginThrottle

from ..conftest import ServeFactory

GUESSES = 2000


def test_a_minute_admits_a_dozen_attempts_per_address() -> None:
    """2,000 attempts spread over a minute from one address: the burst, then one per
    refill period, pass; another address is not affected; a success costs nothing."""
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    admitted = 0
    for i in range(GUESSES):
        now[0] = 60.0 * i / GUESSES
        admitted += throttle.attempt("10.0.0.1") == 0
    assert LOGIN_BURST + 60 / LOGIN_REFILL_S - 1 <= admitted <= LOGIN_BURST + 60 / LOGIN_REFILL_S
    assert throttle.attempt("10.0.0.2") == 0
    for _ in range(10):
        assert throttle.attempt("10.0.0.3") == 0
        throttle.succeeded("10.0.0.3")
    busy = LoginThrottle(max_addresses=2)
    for address in ("a", "b", "c"):
        busy.attempt(address)
    assert len(busy._buckets) == 2  # bounded: the least recently seen is forgotten


async def test_two_thousand_guesses_cannot_be_made(serve: ServeFactory) -> None:
    """A peer guessing the Admin UI password as fast as it can: each connection is
    closed after FAILURES_PER_CONNECTION failed logins, only the first LOGIN_BURST
    guesses are checked at all, the rest are refused as throttled (the right password
    among them too), and the chat namespace is served throughout."""
    served = await serve(admin_ui=True, admin_password="s3cret", serializer="json")
    url = served.url + "/socket.io/?EIO=4&transport=websocket"
    refusals: list[str] = []
    started = asyncio.get_running_loop().time()

    async def guesser(session: aiohttp.ClientSession) -> None:
        while len(refusals) < GUESSES:
            async with session.ws_connect(url) as ws:
                assert (await ws.receive_str()).startswith("0")
                for _ in range(FAILURES_PER_CONNECTION):
                    guess = "s3cret" if len(refusals) == GUESSES // 2 else f"guess{len(refusals)}"
                    await ws.send_str("40/admin," + json.dumps(
                        {"username": "admin", "password": guess}))
                    reply = await ws.receive_str()
                    assert reply.startswith("44/admin,"), reply
                    refusals.append(json.loads(reply[len("44/admin,"):])["message"])
                closed = await ws.receive()
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(guesser(session) for _ in range(10)))
        elapsed = asyncio.get_running_loop().time() - started
        async with session.ws_connect(url) as chat:  # others are still served
            assert (await chat.receive_str()).startswith("0")
            await chat.send_str('40/chat,{"name":"bystander"}')
            assert (await chat.receive_str()).startswith("40/chat,")
    checked = [r for r in refusals if r == "authentication failed"]
    # the burst, and what refilled while guessing
    assert LOGIN_BURST <= len(checked) <= LOGIN_BURST + elapsed / LOGIN_REFILL_S
    throttled = [r for r in refusals if r.startswith("too many failed logins; try again in")]
    assert len(throttled) == len(refusals) - len(checked) >= GUESSES - len(checked)
