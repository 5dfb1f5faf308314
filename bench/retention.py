"""S1 while retention removes a million messages, beside S1 with nothing to remove.

    .venv/bin/python -m bench.retention [--runs 3] [--messages 1000000] [--rooms 100]
                                        [--stores sqlite,postgresql]

For each store and run: ``--messages`` messages, all older than any
retention, loaded in bulk into ``--rooms`` rooms (:mod:`bench.bulk`). Then
the fan-out scenario of ``make bench`` (S1: 10 other rooms x 100 members,
the Node load generator) against ``python -m app`` on that store twice:
first with no retention (nothing is removed), then with ``--retention``
one day and ``--retention-interval 1``, so that the sweep starts a second
after the server does and removes the million while S1 runs, in batches of
``--retention-batch`` (``--batch``, default 200). The bench polls the store's own
record of how far each room was purged, and reports how long the million
took to go and what S1 measured meanwhile. Prints each run's S1 figures
with and without the purge, their medians, and the ratios.

(The runs cannot alternate their order: the purge consumes the load, and a
load takes minutes; so each run is without, then with.)
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from contextlib import closing
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from app.store.sqlite import path_from_url

from . import __main__ as s1
from .app_server import roomcast
from .bulk import loaded
from .search import DATABASE_URL, Texts
from .webhooks import UNLIMITED, medians

POLL = 0.5  # seconds between two looks at how far the purge has gone
TEXTS = 50_000


async def purged(url: str) -> int:
    """How many entries the store says its rooms were purged of."""
    if url.startswith("sqlite"):
        def read() -> int:
            with closing(sqlite3.connect(path_from_url(url))) as conn:
                return int(conn.execute("SELECT COALESCE(SUM(upto), 0) FROM purged")
                           .fetchone()[0])
        return await asyncio.to_thread(read)
    schema = dict(parse_qsl(urlsplit(url).query))["schema"]
    conn = await asyncpg.connect(DATABASE_URL, server_settings={"search_path": schema})
    try:
        return int(await conn.fetchval("SELECT COALESCE(SUM(upto), 0) FROM purged"))
    finally:
        await conn.close()


async def s1_on(url: str, args: argparse.Namespace, retention: bool) -> dict[str, float]:
    flags = [*UNLIMITED]
    if retention:
        flags += ["--retention", "86400", "--retention-interval", "1",
                  "--retention-batch", str(args.batch)]
    async with roomcast(*flags, store=url) as (pid, served):
        started = time.monotonic()
        done_at: list[float] = []

        async def watch() -> None:
            while await purged(url) < args.messages:
                await asyncio.sleep(POLL)
            done_at.append(time.monotonic() - started)

        watching = asyncio.ensure_future(watch()) if retention else None
        result = await asyncio.to_thread(s1.loadgen, {
            "scenario": "fanout", "url": served, "serializer": "msgpack", "polling": 0,
            "stepSeconds": args.step_seconds, "serverPid": pid, "run": s1.run_id()})
        s1_took = time.monotonic() - started
        if watching is not None:
            await asyncio.wait_for(watching, 600)
    moderate = result["moderate"]
    figures = {"max msgs/s (p99 < 100 ms)": result["max_delivered_per_s"],
               "p50 ms @ 10k msgs/s": moderate["p50_ms"],
               "p99 ms @ 10k msgs/s": moderate["p99_ms"],
               "server CPU % @ 10k msgs/s": moderate["server_cpu_pct"],
               "lost + repeated": sum(s["lost"] + s["repeated"] for s in
                                      [moderate, result["fixed"], *result["steps"]]),
               "S1 s": s1_took}
    if retention:
        figures["purge s"] = done_at[0]
        figures["removed/s"] = args.messages / done_at[0]
    return figures


async def main(args: argparse.Namespace) -> None:
    source = Texts(seed=1)
    texts = [source.text() for _ in range(TEXTS)]
    for kind in args.stores.split(","):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for run in range(args.runs):
            print(f"{kind} run {run + 1}: loading {args.messages:,} messages", flush=True)
            async with loaded(kind, DATABASE_URL, texts, args.messages, args.rooms) as url:
                for retention in (False, True):
                    runs[retention].append(await s1_on(url, args, retention))
                    print(f"  {'purging' if retention else 'no purge'}: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in runs[retention][-1].items()),
                          flush=True)
        without, with_ = medians(runs[False]), medians(runs[True])
        print(f"\n{kind}: S1 fan-out, median of {args.runs} runs: nothing to remove | "
              f"removing {args.messages:,} | ratio")
        for k, v in without.items():
            ratio = with_[k] / v if v else float("nan")
            print(f"  {k:<28} {v:10.1f} {with_[k]:10.1f} {ratio:8.2f}x")
        print(f"  the purge took {with_['purge s']:.1f} s "
              f"({with_['removed/s']:,.0f} entries/s)\n", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--step-seconds", type=float, default=2.5)
    parser.add_argument("--stores", default="sqlite,postgresql")
    try:
        import uvloop
        uvloop.run(main(parser.parse_args()))
    except ImportError:
        asyncio.run(main(parser.parse_args()))
