"""Uploads: their throughput, and the chat's S1 while ten 100 MB uploads run.

    .venv/bin/python -m bench.uploads [--runs 3] [--size-mb 100] [--parallel 10]
                                      [--parts throughput,s1]

Each run starts a fresh ``python -m app`` (SQLite, every message stored; its
files in a directory of a temporary folder, ``dir:``), on loopback. Uploads go
from this process with the client's own tus uploader (``client/uploads.py``,
8 MB requests), each granted over a python-socketio connection (``upload``),
then sent in a message and that message deleted (which deletes the file): the
whole life of an attachment, and the disk holds no more than the uploads in
flight.

**throughput**: one ``--size-mb`` upload alone, then ``--parallel`` at once:
MB/s (MB = 10^6 bytes) from the first request to the last byte acknowledged.

**s1**: the fan-out scenario of ``make bench`` (S1: 10 rooms x 100 members,
the Node load generator) against Roomcast alone, and with ``--parallel``
uploads of ``--size-mb`` running from before the ramp starts until it ends
(each worker starts another as one finishes), in alternating order; prints
both, the ratios with/without, and what was uploaded meanwhile. The uploads
share the machine's two cores with the server and the generator: this is
the chat's latency while the node also takes ten large files, on one box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from client.uploads import tus_upload

from . import __main__ as s1

NAMESPACE = "/chat"
ROOM = "uploads"


def server_flags(folder: str, size: int, rate: str | None = None) -> list[str]:
    return [*(["--max-upload-rate", rate] if rate else []),
            "--files", f"dir:{folder}/files", "--upload-spool", f"{folder}/uploads",
            "--max-file-bytes", str(size), "--max-upload-bytes-per-day", str(10 ** 15),
            "--max-uploads-in-flight", "1000", "--change-rate", "1000000",
            "--change-burst", "1000000"]


class Uploader:
    """``parallel`` workers uploading ``source`` over and over until stopped."""

    def __init__(self, url: str, source: Path, parallel: int) -> None:
        self.url = url
        self.source = source
        self.parallel = parallel
        self.size = source.stat().st_size
        self.seconds: list[float] = []  # each upload's, first request to last byte
        self.uploaded = 0  # bytes, finished uploads only
        self.stop = asyncio.Event()

    async def run(self, rounds: int | None = None) -> None:
        sio = socketio.AsyncClient(serializer="msgpack", reconnection=False)
        await sio.connect(self.url, auth={"name": "uploader"}, namespaces=[NAMESPACE],
                          transports=["websocket"], wait_timeout=30)
        await sio.call("join", {"room": ROOM}, namespace=NAMESPACE, timeout=30)
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.gather(*(self._worker(sio, http, rounds)
                                       for _ in range(self.parallel)))
        finally:
            await sio.disconnect()

    async def _worker(self, sio: socketio.AsyncClient, http: aiohttp.ClientSession,
                      rounds: int | None) -> None:
        done = 0
        while not self.stop.is_set() and (rounds is None or done < rounds):
            ack = await sio.call("upload", {"room": ROOM, "name": "big.bin",
                                            "size": self.size}, namespace=NAMESPACE, timeout=60)
            assert ack["ok"], ack
            started = time.perf_counter()
            await tus_upload(http, self.url, ack["upload"], self.source)
            self.seconds.append(time.perf_counter() - started)
            self.uploaded += self.size
            done += 1
            sent = await sio.call("send", {"room": ROOM, "text": "",
                                           "attachments": [ack["upload"]["id"]]},
                                  namespace=NAMESPACE, timeout=60)
            assert sent["ok"], sent
            deleted = await sio.call("delete", {"room": ROOM, "seq": sent["message"]["seq"]},
                                     namespace=NAMESPACE, timeout=60)
            assert deleted["ok"], deleted


def mb(n: float) -> float:
    return n / 1e6


async def throughput_run(source: Path, parallel: int, args: argparse.Namespace
                         ) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        server = s1.start_server("roomcast", "msgpack", folder, extra=server_flags(
            folder, source.stat().st_size, args.max_upload_rate))
        try:
            alone = Uploader(server.url, source, 1)
            started = time.perf_counter()
            await alone.run(rounds=1)
            one = mb(alone.uploaded) / (time.perf_counter() - started)
            many = Uploader(server.url, source, parallel)
            started = time.perf_counter()
            await many.run(rounds=1)
            together = mb(many.uploaded) / (time.perf_counter() - started)
        finally:
            server.stop()
    return {"one upload MB/s": one, f"{parallel} at once MB/s (all)": together,
            f"{parallel} at once: slowest s": max(many.seconds)}


async def s1_run(source: Path, parallel: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        server = s1.start_server("roomcast", "msgpack", folder, extra=server_flags(
            folder, source.stat().st_size, args.max_upload_rate))
        uploader = Uploader(server.url, source, parallel) if parallel else None
        running = asyncio.ensure_future(uploader.run()) if uploader else None
        try:
            if uploader is not None:  # under way before the ramp starts
                while uploader.uploaded == 0 and not running.done():  # type: ignore[union-attr]
                    await asyncio.sleep(0.1)  # (a bench waits for its load to be there)
            started = time.perf_counter()
            figures, _ = await asyncio.to_thread(s1.fanout, server, args, 0)
            lasted = time.perf_counter() - started
        finally:
            if uploader is not None and running is not None:
                uploader.stop.set()
                await running
            server.stop()
    if uploader is not None:
        figures["MB uploaded during S1"] = mb(uploader.uploaded)
        figures["upload MB/s during S1"] = mb(uploader.uploaded) / lasted
    return figures


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main(args: argparse.Namespace) -> None:
    parts = args.parts.split(",")
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "big.bin"
        with source.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1_000_000))
        assert source.stat().st_size == size
        print(s1.machine(), flush=True)
        print(f"server --max-upload-rate: {args.max_upload_rate or 'its default'}", flush=True)
        if "throughput" in parts:
            runs = []
            for run in range(args.runs):
                runs.append(await throughput_run(source, args.parallel, args))
                print(f"throughput run {run + 1}: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in runs[-1].items()), flush=True)
            print(f"\nupload throughput ({args.size_mb} MB files), median of {args.runs} runs:")
            for k, v in medians(runs).items():
                print(f"  {k:<32} {v:10.1f}")
            print(flush=True)
        if "s1" in parts:
            by: dict[int, list[dict[str, float]]] = {0: [], args.parallel: []}
            for run in range(args.runs):
                order = (0, args.parallel) if run % 2 == 0 else (args.parallel, 0)
                for parallel in order:
                    by[parallel].append(await s1_run(source, parallel, args))
                    print(f"s1 run {run + 1} uploads={parallel}: {by[parallel][-1]}",
                          flush=True)
            without, with_ = medians(by[0]), medians(by[args.parallel])
            print(f"\nS1 fan-out, median of {args.runs} runs: no upload | {args.parallel} "
                  f"uploads of {args.size_mb} MB running | ratio")
            for k in with_:
                if k in without:
                    ratio = with_[k] / without[k] if without[k] else float("nan")
                    print(f"  {k:<28} {without[k]:10.1f} {with_[k]:10.1f} {ratio:8.2f}x")
                else:
                    print(f"  {k:<28} {'':>10} {with_[k]:10.1f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=2.5)
    parser.add_argument("--serializer", default="msgpack")
    parser.add_argument("--parts", default="throughput,s1")
    parser.add_argument("--max-upload-rate", help="the server's (default: its own default)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments: Any = parse()
    try:
        import uvloop
        uvloop.run(main(arguments))
    except ImportError:
        asyncio.run(main(arguments))
