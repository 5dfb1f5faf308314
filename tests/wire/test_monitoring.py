"""What operators watch: the delivery-lag histogram (local, and across Redis),
deliveries still unwritten after a bound, and the shipped Grafana dashboard
and alert rules naming only metrics a node serves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, Served, until
from ..proxy import Proxy
from ..services import REDIS_URL

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


async def scrape(served: Served) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/metrics") as reply:
            return await reply.text()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}{{{wanted}}} (\S+)$" if wanted else rf"^{name} (\S+)$",
                      text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_delivery_lag_is_measured_on_every_node_and_the_dashboards_name_real_metrics(
        serve: ServeFactory, peer: PeerFactory) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    a, b = [await serve(store="memory://", redis=REDIS_URL, redis_prefix=prefix,
                        node_id=f"node{i}") for i in range(2)]
    alice, bob = await peer("alice", server=a), await peer("bob", server=b)
    await alice.join("r")
    await bob.join("r")
    await alice.send("r", "measured")  # (stored on a: local there, across Redis on b)
    await bob.next("message")
    texts: dict[str, str] = {}

    async def counted() -> bool:
        texts["a"], texts["b"] = await scrape(a), await scrape(b)
        return (sample(texts["a"], "roomcast_delivery_lag_seconds_count", hop="local") >= 1
                and sample(texts["b"], "roomcast_delivery_lag_seconds_count", hop="redis") >= 1)
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not await counted():  # (each scrape is the wait)
        assert asyncio.get_running_loop().time() < deadline, "the delivery lag was not counted"
    served = {m for t in texts.values() for m in re.findall(r"^# HELP (\S+)", t, re.M)}

    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs and all(panel["gridPos"] for panel in dashboard["panels"])
    alerts = (MONITORING / "prometheus-alerts.yml").read_text()
    named = set(re.findall(r"roomcast_[a-z_]+", " ".join(exprs) + alerts))
    missing = []
    for name in sorted(named):
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        if base not in served and name not in served:
            missing.append(name)
    assert missing == [], f"named but not served: {missing}"
    assert {"roomcast_delivery_lag_seconds", "roomcast_fanout_up"} <= {
        next((n.removesuffix(s) for s in SUFFIXES if n.endswith(s)), n) for n in named}


@pytest.mark.matrix("transport")
async def test_deliveries_a_stalled_reader_has_not_taken_are_counted_late_once(
        serve: ServeFactory, peer: PeerFactory) -> None:
    """A member whose link stalls (nothing is cut: the bounds are far off) is
    handed messages it does not take: each still unwritten 0.3 s on is counted
    in ``roomcast_deliveries_late_total``, once; what a member that reads takes
    is never counted."""
    served = await serve(late_delivery_after=0.3, socket_send_buffer=16384,
                         max_backlog_bytes=10_000_000)
    link = await Proxy(int(served.url.rsplit(":", 1)[1]), rate=10_000_000).start()
    try:
        carol = await peer("carol", server=dataclasses.replace(served, url=link.url))
        await carol.join("r")
        bob = await peer("bob", server=served)
        await bob.join("r")
        await bob.send("r", "before the stall")
        await carol.next("message")
        assert sample(await scrape(served), "roomcast_deliveries_late_total") == 0

        link.stall()
        count = 100
        for i in range(count):
            await bob.send("r", f"{i:03d} " + "x" * 1000)

        async def counted() -> bool:
            return sample(await scrape(served), "roomcast_deliveries_late_total") > 0
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not await counted():  # (each scrape is the wait)
            assert asyncio.get_running_loop().time() < deadline, "nothing was counted late"
        link.resume()
        await until(lambda: carol.events["message"].qsize() >= count, TIMEOUT)
        after = sample(await scrape(served), "roomcast_deliveries_late_total")
        assert 0 < after <= count + 1  # each at most once (a ping may be among them)
        await bob.send("r", "after the stall")
        await until(lambda: carol.events["message"].qsize() == count + 1, TIMEOUT)
        assert sample(await scrape(served), "roomcast_deliveries_late_total") == after
    finally:
        await link.close()
