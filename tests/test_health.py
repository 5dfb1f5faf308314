"""GET /healthz reports whether the server and its store are usable."""

from __future__ import annotations

import aiohttp

from app.keys import STORE_KEY

from .conftest import ServeFactory


async def test_healthz_follows_the_store(serve: ServeFactory) -> None:
    """200 with a small JSON body while the store answers; 503 once it is closed."""
    served = await serve()
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/healthz") as response:
            assert response.status == 200
            body = await response.json()
            assert (body["status"], body["store"]) == ("ok", "ok") and body["node"]
        await served.app[STORE_KEY].close()
        async with http.get(served.url + "/healthz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["status"] == "unavailable" and body["store"]
