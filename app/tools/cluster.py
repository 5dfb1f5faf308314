"""``python -m app.tools.cluster``: several nodes behind nginx on this machine.

Starts N ``python -m app`` nodes on free ports, sharing one Redis and one
PostgreSQL database, then nginx with ``nginx/roomcast.conf`` in front of them
on one port. Prints ``nginx http://...`` and then ``node http://...`` for each
node once all of them answer ``/healthz``; Ctrl-C stops everything.
``make cluster`` runs it with the local Redis and PostgreSQL; the cluster
tests use :class:`Cluster` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp

# nginx/roomcast.conf, reached through the link app/nginx so that it ships in the package
CONF = Path(__file__).parent.parent / "nginx" / "roomcast.conf"
LISTENING = re.compile(rb"listening on http://[^:]+:(\d+)")
START_TIMEOUT = 30.0  # seconds for every node and nginx to answer


def nginx_conf(nodes: Sequence[int], listen: str, workdir: Path,
               template: Path = CONF) -> str:
    """A complete nginx.conf around ``template``: its upstream lists ``nodes``
    (127.0.0.1 ports), it listens on ``listen``, and files go under ``workdir``."""
    lines: list[str] = []
    for line in template.read_text().splitlines():
        if line.rstrip().endswith("# roomcast:nodes"):
            if not any("# roomcast:node " in kept for kept in lines):
                indent = line[:len(line) - len(line.lstrip())]
                lines += [f"{indent}server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;"
                          f"  # roomcast:node {port}" for port in nodes]
        elif line.rstrip().endswith("# roomcast:listen"):
            lines.append(f"    listen {listen};")
        else:
            lines.append(line)
    temp = workdir / "temp"
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{chr(10).join(lines)}
}}
"""


class Cluster:
    """N nodes and nginx, as child processes."""

    def __init__(self, *, nodes: int, port: int, store: str, redis: str, workdir: Path,
                 node_args: Sequence[str] = (), host: str = "127.0.0.1") -> None:
        self.count = nodes
        self.port = port
        self.host = host
        self.store = store
        self.redis = redis
        self.workdir = workdir
        self.node_args = list(node_args)
        self.nodes: list[asyncio.subprocess.Process] = []
        self.node_ports: list[int] = []
        self.nginx: asyncio.subprocess.Process | None = None
        self.logs: list[list[bytes]] = []
        self._collectors: list[asyncio.Future[None]] = []  # each node's stderr, read to the end

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Cluster:
        async with asyncio.timeout(START_TIMEOUT):
            for i in range(self.count):
                await self._start_node(i)
            (self.workdir / "temp").mkdir(parents=True, exist_ok=True)
            conf = self.workdir / "nginx.conf"
            if self.port == 0:
                self.port = _free_port(self.host)
            conf.write_text(nginx_conf(self.node_ports, f"{self.host}:{self.port}",
                                       self.workdir))
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            self.nginx = await asyncio.create_subprocess_exec(
                nginx, "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;")
            await _until_healthy(self.url)
        return self

    async def _start_node(self, i: int, port: int = 0) -> None:
        """Start node ``i`` (on ``port``: 0, a free one) and wait until it answers."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port),
            "--store", self.store, "--redis", self.redis, "--node-id", f"node{i}",
            "--trust-forwarded", "true", *self.node_args,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log: list[bytes] = []
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                raise RuntimeError(f"node{i} exited:\n" + b"".join(log).decode())
            log.append(line)
            if match := LISTENING.search(line):
                break
        port = int(match.group(1))
        self._collectors.append(asyncio.ensure_future(_collect(proc.stderr, log)))
        if i < len(self.nodes):  # (restarted)
            self.nodes[i], self.node_ports[i], self.logs[i] = proc, port, log
        else:
            self.nodes.append(proc)
            self.node_ports.append(port)
            self.logs.append(log)
        await _until_healthy(f"http://127.0.0.1:{port}")

    def node_log(self, i: int) -> str:
        return b"".join(self.logs[i]).decode()

    async def kill_node(self, i: int) -> None:
        self.nodes[i].kill()
        await self.nodes[i].wait()

    async def stop_node(self, i: int) -> int:
        """SIGTERM node ``i`` (it drains: see README, "Deploys") and wait for it
        to exit; its exit code."""
        self.nodes[i].send_signal(signal.SIGTERM)
        return await self.nodes[i].wait()

    async def start_node(self, i: int) -> None:
        """Start node ``i`` again, on its port (the one nginx lists) and id."""
        async with asyncio.timeout(START_TIMEOUT):
            await self._start_node(i, self.node_ports[i])

    async def stop(self) -> None:
        if self.nginx is not None and self.nginx.returncode is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                await asyncio.wait_for(self.nginx.wait(), 10)
            except asyncio.TimeoutError:
                self.nginx.kill()
                await self.nginx.wait()
        for proc in self.nodes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.nodes:
            await proc.wait()


async def _collect(stream: asyncio.StreamReader, log: list[bytes]) -> None:
    while line := await stream.readline():
        log.append(line)


def _free_port(host: str) -> int:
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def _until_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="roomcast-nginx-") as workdir:
        cluster = Cluster(nodes=args.nodes, port=args.port, store=args.store, redis=args.redis,
                          workdir=Path(workdir))
        try:
            await cluster.start()
            print(f"nginx {cluster.url}", flush=True)
            for port in cluster.node_ports:
                print(f"node http://127.0.0.1:{port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await cluster.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.tools.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (default 8080)")
    parser.add_argument("--store", default=os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
