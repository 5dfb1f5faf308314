"""What operators watch: the delivery-lag histogram (local, and across Redis),
and the shipped Grafana dashboard and alert rules naming only metrics a node
serves."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import aiohttp

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, Served
from ..services import REDIS_URL

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


async def scrape(served: Served) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/metrics") as reply:
            return await reply.text()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}{{{wanted}}} (\S+)$", text, re.M)
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
