"""Token mode (HS256 JWT) and origin checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import pytest

from app.chat.auth import identify
from app.core.errors import ChatError
from client import ChatClient, ChatClientError

from ..conftest import TIMEOUT, ServeFactory, Served, sio_client
from ..tokens import OTHER, SECRET, token


def test_identify() -> None:
    """The name comes from name (or sub); a bad, expired or exp-less token is refused."""
    assert identify({"token": token(name="alice", sub="u1")}, SECRET).name == "alice"
    assert identify({"token": token(sub="u1")}, SECRET).name == "u1"
    assert identify({"name": "bob"}, "").name == "bob"  # open mode
    limited = identify({"token": token(sub="x", rooms=["a", "b"])}, SECRET)
    assert limited.may_join("a") and not limited.may_join("c")  # type: ignore[arg-type]
    assert not limited.moderator
    assert identify({"token": token(sub="m", moderator=True)}, SECRET).moderator
    for auth in ({"name": "alice"}, {"token": ""}, {"token": "abc"},
                 {"token": token(secret=OTHER, sub="x")},
                 {"token": token(sub="x", exp=int(time.time()) - 10)},
                 {"token": jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")},
                 {"token": token(sub="")}, {"token": token(sub="x", rooms="a")},
                 {"token": token(sub="x", moderator="yes")}):
        with pytest.raises(ChatError) as refused:
            identify(auth, SECRET)
        assert refused.value.code == "unauthorized", auth


async def test_token_mode_end_to_end(serve: ServeFactory, serializer: str,
                                     transport: str) -> None:
    """Connects need a valid token; the name is the token's, never the client's; the
    rooms claim limits joins; ChatClient supports it."""
    served = await serve(serializer=serializer, jwt_secret=SECRET)
    for auth, why in (({"name": "mallory"}, "no token"),
                      ({"token": token(secret=OTHER, sub="x")}, "forged"),
                      ({"token": token(sub="x", exp=1)}, "expired")):
        errors: asyncio.Queue[Any] = asyncio.Queue()
        sio = sio_client(serializer)
        sio.on("connect_error", errors.put_nowait, namespace="/chat")
        with pytest.raises(Exception):
            await sio.connect(served.url, auth=auth, namespaces=["/chat"],
                              transports=[transport], wait_timeout=TIMEOUT)
        error = await asyncio.wait_for(errors.get(), TIMEOUT)
        assert error["data"]["code"] == "unauthorized", why

    alice = ChatClient(served.url, "pretend-to-be-bob", serializer=serializer,
                       transports=[transport],
                       token=token(name="alice", rooms=["team"]))
    await alice.connect()
    try:
        ack = await alice.join("team")
        assert ack["members"] == ["alice"]
        sent = await alice.send("team", "hello")
        assert sent["from"] == "alice"
        with pytest.raises(ChatClientError) as refused:
            await alice.join("elsewhere")
        assert refused.value.code == "unauthorized"
    finally:
        await alice.close()


async def origin_status(served: Served, origin: str | None, **headers: str) -> int:
    all_headers = {**headers, **({"Origin": origin} if origin else {})}
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/socket.io/?EIO=4&transport=polling",
                            headers=all_headers) as response:
            return response.status


async def test_cross_origin_connections_are_refused(serve: ServeFactory) -> None:
    """Same origin, no Origin (non-browser) and configured origins may connect;
    any other browser origin is refused."""
    served = await serve(allowed_origins="https://chat.example.com, https://app.example.org")
    own = served.url
    assert await origin_status(served, None) == 200
    assert await origin_status(served, own) == 200
    assert await origin_status(served, "https://chat.example.com") == 200
    assert await origin_status(served, "https://evil.example.net") == 400
    assert await origin_status(served, "http://localhost:1") == 400
    # forwarding headers name nothing unless the proxy is trusted
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    assert await origin_status(served, "https://evil.example", **forwarded) == 400


async def test_behind_a_trusted_proxy_the_browser_origin_is_the_proxys(
        serve: ServeFactory) -> None:
    served = await serve(trust_forwarded=True)
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.proxy.test"}
    assert await origin_status(served, "https://chat.proxy.test", **proxied) == 200
    assert await origin_status(served, "https://evil.example", **proxied) == 400


async def test_only_the_allowed_hosts_are_answered(serve: ServeFactory) -> None:
    """With --allowed-hosts, a request naming another Host (DNS rebinding: Origin
    and Host both the attacker's name) is refused on every path: the page, a
    long-poll, a WebSocket handshake at the front door."""
    served = await serve(allowed_hosts="chat.example, chat.example:8080")
    rebound = {"Host": "rebind.example"}
    assert await origin_status(served, "http://rebind.example", **rebound) == 400
    assert await origin_status(served, None, Host="chat.example") == 200
    assert await origin_status(served, "http://chat.example:8080", Host="chat.example:8080") == 200
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/", headers=rebound) as page:
            assert page.status == 400
        async with http.get(served.url + "/", headers={"Host": "chat.example"}) as page:
            assert page.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(served.url + "/socket.io/?EIO=4&transport=websocket",
                                  headers={**rebound, "Origin": "http://rebind.example"})
        assert refused.value.status == 400
