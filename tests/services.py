"""PostgreSQL and Redis for the tests: ``DATABASE_URL`` / ``REDIS_URL`` when set,
else this machine's local services. A service that cannot be reached fails the
test (never a skip)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A store URL on a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in DATABASE_URL else "?"
    yield f"{DATABASE_URL}{separator}schema={schema}"
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayRedis:
    """A redis-server of our own on an ephemeral port, for tests that stop it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Future[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *options: str) -> ThrowawayRedis:
        """Start it. A port picked free can be taken by another process before
        redis-server binds it: then it starts again on fresh ports (its own, and
        a ``--cluster-port``), three times at most; any other failure is raised
        with what redis-server said."""
        attempts = 3
        while True:
            self.proc = await asyncio.create_subprocess_exec(
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), *options,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            assert self.proc.stdout is not None
            said: list[bytes] = []
            async with asyncio.timeout(10):
                while line := await self.proc.stdout.readline():  # b"": it exited
                    said.append(line)
                    if b"Ready to accept connections" in line:
                        asyncio.ensure_future(self.proc.stdout.read())  # keep draining its log
                        return self
                await self.proc.wait()
            output = b"".join(said).decode(errors="replace")
            attempts -= 1
            if "Address already in use" not in output or not attempts:
                raise RuntimeError(f"redis-server did not start:\n{output}")
            self.port = free_port()
            options = tuple(str(free_port()) if before == "--cluster-port" else option
                            for before, option in zip(("", *options), options))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


class ThrowawayRedisCluster:
    """A Redis Cluster of our own on loopback ports: ``masters`` masters with one
    replica each, so that a test can kill a master and see its replica take
    over (``cluster-node-timeout`` 1 s; the other shards keep serving meanwhile)."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [ThrowawayRedis(workdir / f"n{i}") for i in range(masters * 2)]
        self.masters = masters

    @property
    def url(self) -> str:
        """What Roomcast is given: any one node, with the cluster scheme."""
        return f"redis-cluster://127.0.0.1:{self.nodes[0].port}"

    async def start(self) -> ThrowawayRedisCluster:
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            # the bus port named (by default the port + 10,000: past 65,535 for
            # an ephemeral port above 55,535, and the cluster never formed)
            await node.start("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                             "--cluster-node-timeout", "1000",
                             "--cluster-require-full-coverage", "no",
                             "--cluster-replica-validity-factor", "0")
        create = await asyncio.create_subprocess_exec(
            "redis-cli", "--cluster", "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas", "1", "--cluster-yes",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(create.communicate(), 30)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{out.decode()}")
        async with asyncio.timeout(30):
            while not await self._healthy():
                await asyncio.sleep(0.1)  # (polling the cluster's own state: no event to wait on)
        return self

    async def info(self, node: ThrowawayRedis, *command: str) -> str:
        cli = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(node.port), *command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await cli.communicate()
        return out.decode()

    async def _healthy(self) -> bool:
        """Every live node sees the cluster ok, with ``masters`` masters serving."""
        live = [n for n in self.nodes if n.proc is not None and n.proc.returncode is None]
        for node in live:
            if "cluster_state:ok" not in await self.info(node, "cluster", "info"):
                return False
        return len(await self._serving(live[0])) == self.masters

    async def _serving(self, asked: ThrowawayRedis) -> dict[int, list[tuple[int, int]]]:
        """port -> slot ranges, of the masters ``asked`` sees serving slots."""
        serving = {}
        for line in (await self.info(asked, "cluster", "nodes")).splitlines():
            fields = line.split()
            flags = fields[2].split(",") if len(fields) > 2 else []
            if "master" not in flags or "fail" in flags or "fail?" in flags:
                continue
            spans = [span.partition("-") for span in fields[8:] if span[0].isdigit()]
            if spans:
                port = int(fields[1].split(":")[1].split("@")[0])
                serving[port] = [(int(lo), int(hi or lo)) for lo, _, hi in spans]
        return serving

    async def master_of(self, key: str) -> ThrowawayRedis:
        """The node that serves ``key``'s slot now."""
        asked = next(n for n in self.nodes if n.proc is not None and n.proc.returncode is None)
        slot = int((await self.info(asked, "cluster", "keyslot", key)).strip())
        for port, spans in (await self._serving(asked)).items():
            if any(lo <= slot <= hi for lo, hi in spans):
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves {key!r}")

    async def kill_and_fail_over(self, node: ThrowawayRedis) -> None:
        """SIGKILL a master; return once its replica serves its slots."""
        await node.stop()
        live = [n for n in self.nodes if n.proc is not None and n.proc.returncode is None]
        async with asyncio.timeout(30):
            while not await self._healthy() or node.port in await self._serving(live[0]):
                await asyncio.sleep(0.1)  # (as in start)

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


class ThrowawayPostgres:
    """A PostgreSQL server of our own (initdb in a temporary folder, run as the
    postgres user, trust auth) on an ephemeral port, for tests that stop it."""

    def __init__(self) -> None:
        self.port = free_port()
        # not under pytest's tmp_path: the postgres user cannot enter root's 0700 folders
        self.workdir = Path(tempfile.mkdtemp(prefix="roomcast-pg-"))
        self.datadir = self.workdir / "pgdata"
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        assert bins, "PostgreSQL server binaries not found under /usr/lib/postgresql"
        self.bin = bins[-1]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 \
            else list(command)

    async def _run(self, *command: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._as_postgres(*command), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()

    async def init(self) -> ThrowawayPostgres:
        self.datadir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir.parent, "postgres")
            shutil.chown(self.datadir, "postgres")
        await self._run(str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust",
                        "-U", "postgres", "--no-sync")
        return await self.start()

    async def start(self) -> ThrowawayPostgres:
        """Start the server and wait for its own word that it accepts connections."""
        self.proc = await asyncio.create_subprocess_exec(
            *self._as_postgres(str(self.bin / "postgres"), "-D", str(self.datadir),
                               "-p", str(self.port), "-k", str(self.datadir),
                               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        log = self.proc.stderr
        assert log is not None
        async with asyncio.timeout(20):
            while b"ready to accept connections" not in (line := await log.readline()):
                assert line, "postgres exited before it was ready"
        self._drain = asyncio.ensure_future(log.read())  # never let its log pipe fill
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            # signal postgres itself (runuser does not pass signals on)
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: like a crash
            await asyncio.wait_for(self.proc.wait(), 20)
            if self._drain is not None:
                await self._drain

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class S3Server:
    """A real S3-compatible server for the tests: moto's server mode, on an
    ephemeral port of this process (a thread), started once per session. Each
    test takes a bucket of its own (:meth:`bucket`)."""

    _started: S3Server | None = None

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # (the tests' dependency only)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self.endpoint = "http://127.0.0.1:%d" % self._server.get_host_and_port()[1]

    @classmethod
    def shared(cls) -> S3Server:
        if cls._started is None:
            cls._started = cls()
        return cls._started

    async def bucket(self) -> str:
        """A new bucket's ``--files`` URL (the credentials: see :data:`S3_ENV`)."""
        from aiobotocore.session import get_session
        name = f"t-{uuid.uuid4().hex[:16]}"
        async with get_session().create_client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1",
                aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"]) as client:
            await client.create_bucket(Bucket=name)
        return f"s3://{name}/files?endpoint={self.endpoint}&region=us-east-1"


# what the storage's client reads from the environment (moto takes any)
S3_ENV = {"AWS_ACCESS_KEY_ID": "roomcast-test", "AWS_SECRET_ACCESS_KEY": "roomcast-test-secret"}
