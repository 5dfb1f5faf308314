"""``make bench`` (``python -m bench``): Roomcast beside two baselines, same run.

For each run and scenario, each server is started fresh on loopback, the
Node load generator (``bench/node/loadgen.js``, a separate process) drives it,
and the server is stopped. The servers take turns in a rotating order, so
that a noisy stretch of the machine does not fall on one of them only. The
table gives the median of the runs and the ratios Roomcast/baseline.

  roomcast  ``python -m app``, SQLite store (every message persisted), uvloop
  stock     ``bench/stock_server.py``: python-socketio's AsyncServer, same events
  node      ``bench/node/server.js``: socket.io 4, same events

Scenarios (``bench/README.md``): S1 fan-out over WebSocket (S1PG: Roomcast
on PostgreSQL; T1 and T100: Roomcast alone, tracing 1 % and 100 % of events
to an OTLP endpoint here, beside its own S1), S2 idle
connections, S3 fan-out with a fifth of the members on long-polling, S4 a
reconnect storm; C1 two nodes (members split) and C2 four nodes (rooms spread)
sharing a throwaway Redis (Roomcast on PostgreSQL, ``DATABASE_URL``; Node with
``@socket.io/redis-adapter``), every node on one core and the generator and
Redis on the other.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ramps import draw
from .trace_sink import TraceSink

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"

SERVERS = ("roomcast", "stock", "node")
SCENARIOS = ("s1", "s1pg", "t1", "t100", "s2", "s3", "s4", "s5", "c1", "c2")
TRACED = {"t1": 0.01, "t100": 1.0}  # scenario -> share of events traced; Roomcast only
CLUSTER_SCENARIOS = {"c1": 2, "c2": 4}  # scenario -> nodes; Roomcast and Node only
CLUSTER_SERVERS = ("roomcast", "node")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
# cluster scenarios: every node of a kind on one core, the generator and Redis on
# the other (this machine has two)
NODES_CORE, LOADGEN_CORE = "0", "1"
# S5: idle connections at the open-files limit (20,000 a process: what the
# server can hold, with its own files), held by two generator processes
IDLE_GENERATORS = 2
IDLE_SECONDS = 30.0  # the probe's window: longer than every server's 25 s ping interval
# S4's generators: one process decoding 1,000 rejoins' acks was the storm's limit
# with Roomcast (its ack carries the room's members and read positions)
STORM_GENERATORS = 2


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def server_command(name: str, port: int, serializer: str, data_dir: str) -> list[str]:
    if name == "roomcast":
        return [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port),
                "--serializer", serializer, "--store", f"sqlite:///{data_dir}/bench.db",
                "--log-level", "warning",
                # the generator is one address with thousands of clients, sending fast
                "--send-rate", "1000000", "--send-burst", "1000000",
                "--max-connections-per-address", "100000"]
    if name == "stock":
        return [sys.executable, "-m", "bench.stock_server", "--port", str(port), "--uvloop",
                "--serializer", serializer]
    return ["node", str(NODE_DIR / "server.js"), str(port), serializer]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(name: str, serializer: str, data_dir: str, *, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, core: str | None = None) -> Server:
    """Start one server; ``extra`` flags (Roomcast's), ``env`` variables, pinned
    to ``core`` if given."""
    port = free_port()
    command = server_command(name, port, serializer, data_dir) + (extra or [])
    if core is not None:
        command = ["taskset", "-c", core, *command]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sys.stderr,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Server(name, proc, f"http://127.0.0.1:{port}")
        except OSError:
            time.sleep(0.1)  # polling another process that is starting up
    proc.kill()
    raise RuntimeError(f"{name} did not start")


def loadgen(config: dict[str, Any], on_ready: Callable[[], None] | None = None,
            time_limit: float = 300, core: str | None = None) -> dict[str, Any]:
    """Run the generator with ``config`` (pinned to ``core`` if given); ``on_ready``
    runs when it reports it holds its connections (S2), after which it is told
    to close them."""
    command = ["node", str(NODE_DIR / "loadgen.js"), json.dumps(config)]
    if core is not None:
        command = ["taskset", "-c", core, *command]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    result: dict[str, Any] = {}
    deadline = time.monotonic() + time_limit
    for line in proc.stdout:
        message = json.loads(line)
        if message.get("ready"):
            if on_ready is not None:
                on_ready()
            proc.stdin.write("close\n")
            proc.stdin.flush()
        else:
            result = message
        if time.monotonic() > deadline:
            proc.kill()
            break
    if proc.wait(30) != 0 or not result:
        raise RuntimeError(f"load generator failed ({proc.returncode}) on {config}")
    return result


# -- scenarios: each returns {metric: value} --------------------------------------

def run_id() -> str:
    """A run's own prefix for room, user and client-id names: 8 hex digits, so
    that the load generator's names (``u<run>r<room>m<member>``) stay within
    the server's 32 characters however long the machine has been up (a pid
    and a monotonic clock made them 33 after a few hours)."""
    return secrets.token_hex(4)


# a fan-out figure: in how many runs the server carried the ramp's last step
# (its max msgs/s is then where the ramp ends, not where the server does)
AT_TOP = "runs at the ramp's top"
Steps = list[dict[str, Any]]  # a ramp's steps, as the load generator reports them
Measured = tuple[dict[str, float], Steps]  # a run's figures, and its ramp (if it has one)


def fanout(server: Server, args: argparse.Namespace, polling: float) -> Measured:
    result = loadgen({"scenario": "fanout", "url": server.url, "serializer": args.serializer,
                      "polling": polling, "stepSeconds": args.step_seconds,
                      "serverPid": server.proc.pid,
                      "run": run_id()})
    moderate = result["moderate"]
    last = result["steps"][-1] if result["steps"] else moderate  # the step the ramp ended on
    return {"max msgs/s (p99 < 100 ms)": result["max_delivered_per_s"],
            AT_TOP: int(result["at_top"]),
            # which was the limit: the one nearer a whole core at the ramp's end
            "server CPU % at the end": last["server_cpu_pct"],
            "generator CPU % at the end": last["loadgen_cpu_pct"],
            "p50 ms @ 10k msgs/s": moderate["p50_ms"], "p99 ms @ 10k msgs/s": moderate["p99_ms"],
            "server CPU % @ 10k msgs/s": moderate["server_cpu_pct"],
            "server CPU % @ 40k msgs/s": result["fixed"]["server_cpu_pct"],
            "lost + repeated": sum(s["lost"] + s["repeated"]
                                   for s in [moderate, result["fixed"], *result["steps"]])
            }, result["steps"]


def traced_fanout(sample: float, args: argparse.Namespace, data_dir: str) -> Measured:
    """S1 against Roomcast exporting a ``sample`` of its events' traces to a
    sink here (the spans it received, once the server has stopped and
    flushed, with the figures)."""
    with TraceSink() as sink:
        server = start_server("roomcast", args.serializer, data_dir, extra=[
            "--trace-endpoint", sink.endpoint, "--trace-sample", str(sample)])
        try:
            figures, steps = fanout(server, args, polling=0)
        finally:
            server.stop()
    return {**figures, "spans exported": sink.spans}, steps


def idle(server: Server, args: argparse.Namespace) -> dict[str, float]:
    before = server.rss_kb()
    held: dict[str, int] = {}
    result = loadgen({"scenario": "idle", "url": server.url, "serializer": args.serializer,
                      "connections": args.connections},
                     on_ready=lambda: held.update(rss=server.rss_kb()))
    return {"connects/s": result["connects_per_s"],
            "KB per connection": round((held["rss"] - before) / result["connections"], 1),
            "dropped while idle": result["connections"] - result["alive_at_end"]}


class Generators:
    """Load generators in processes of their own, which take turns with the
    runner a line at a time: each says a JSON line when ready, and another
    when told something; each bounds its own run in time."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        self.configs = configs
        self.procs = [subprocess.Popen(["node", str(NODE_DIR / "loadgen.js"), json.dumps(config)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for config in configs]

    def said(self, proc: subprocess.Popen[str], what: str | None = None) -> dict[str, Any]:
        """What ``proc`` says next (after being told ``what``, if given)."""
        assert proc.stdin is not None and proc.stdout is not None
        if what is not None:
            proc.stdin.write(what + "\n")
            proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator failed on {self.configs}")
        return dict(json.loads(line))

    def tell_all(self, what: str) -> list[dict[str, Any]]:
        """Tell every one ``what`` (all first, so that they start together),
        then what each says."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(what + "\n")
            proc.stdin.flush()
        return [self.said(proc) for proc in self.procs]

    def __enter__(self) -> Generators:
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        """Each ends by itself after its last line, given 30 s; at once on a failure."""
        for proc in self.procs:
            try:
                if failed is None:
                    proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()


def held_idle(server: Server, args: argparse.Namespace) -> dict[str, float]:
    """S5: ``args.held`` idle WebSockets over :data:`IDLE_GENERATORS` processes;
    once all are held, the server's memory, then its CPU and a probe's send
    round trips over :data:`IDLE_SECONDS` (every connection's heartbeat falls
    in it)."""
    before = server.rss_kb()
    config = {"scenario": "idle", "url": server.url, "serializer": args.serializer,
              "connections": args.held // IDLE_GENERATORS, "serverPid": server.proc.pid,
              "probeSeconds": IDLE_SECONDS, "holdSeconds": 300, "run": run_id()}
    with Generators([{**config, "prefix": f"g{i}-"} for i in range(IDLE_GENERATORS)]) as gens:
        ready = [gens.said(proc) for proc in gens.procs]
        held_rss = server.rss_kb()
        probe = gens.said(gens.procs[0], "probe")["probe"]
        print(f"[probe] {json.dumps(probe)}", file=sys.stderr, flush=True)
        ends = gens.tell_all("close")
    held = sum(r["connections"] for r in ready)
    return {"connections held": held,
            "KB per connection": round((held_rss - before) / held, 1),
            "server CPU % idle": probe["server_cpu_pct"],
            "probe p50 ms": probe["p50_ms"], "probe p99 ms": probe["p99_ms"],
            "dropped while idle": held - sum(end["alive_at_end"] for end in ends)}


def storm(server: Server, args: argparse.Namespace) -> dict[str, float]:
    """S4 over :data:`STORM_GENERATORS` processes, each with its own rooms: all
    told to rejoin at once, once every one has dropped its members and sent
    what they miss; timed from the first "go" to the last recovery (the
    generators' clocks are the same clock)."""
    config = {"scenario": "storm", "url": server.url, "serializer": args.serializer,
              "run": run_id(), "parts": STORM_GENERATORS}
    with Generators([{**config, "part": i} for i in range(STORM_GENERATORS)]) as gens:
        for proc in gens.procs:
            gens.said(proc)  # ready
        results = gens.tell_all("go")
    start = min(r["start"] for r in results)
    times = sorted(at - start for r in results for at in r["recovered_at"])
    return {"s until all recovered": round(times[-1] / 1000, 2) if times else float("nan"),
            "p50 ms to recover": round(statistics.median(times), 1) if times else float("nan"),
            "generator CPU % (busiest)": max(r["loadgen_cpu_pct"] or 0 for r in results),
            "lost + repeated + failed": sum(r["lost"] + r["repeated"] + r["failed"]
                                            for r in results)}


# -- cluster scenarios: several nodes sharing a throwaway Redis --------------------

@dataclass
class Cluster:
    nodes: list[Server]
    redis: subprocess.Popen[bytes]
    redis_port: int
    schema: str | None  # Roomcast's PostgreSQL schema, dropped at the end

    def subscriber_ports(self) -> set[int]:
        """The client ports of Redis's connections that subscribe to anything
        (``CLIENT LIST``: sub, psub or ssub above 0): each node's fan-out
        subscription, Roomcast's and @socket.io/redis-adapter's alike."""
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), "client", "list"],
                             capture_output=True, text=True, check=True).stdout
        ports = set()
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if any(int(fields.get(kind, "0")) > 0 for kind in ("sub", "psub", "ssub")):
                ports.add(int(fields["addr"].rsplit(":", 1)[1]))
        return ports

    def bytes_from_redis(self, ports: set[int]) -> list[int]:
        """What each node has received so far on its sockets from Redis with a
        local port in ``ports``, in bytes (the kernel's tcp_info ``bytes_received``)."""
        out = subprocess.run(["ss", "-tinpH", "state", "established",
                              f"( dport = :{self.redis_port} )"],
                             capture_output=True, text=True, check=True).stdout
        received: dict[int, int] = {}
        pid = port = None
        for line in out.splitlines():
            found = re.search(r"pid=(\d+)", line)
            if found:
                pid = int(found.group(1))
                local = re.search(r"\S+:(\d+)\s+\S+:%d\b" % self.redis_port, line)
                port = int(local.group(1)) if local else None
            got = re.search(r"bytes_received:(\d+)", line)
            if got and pid is not None and port in ports:
                received[pid] = received.get(pid, 0) + int(got.group(1))
        return [received.get(node.proc.pid, 0) for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.kill()
        self.redis.wait()
        if self.schema is not None:
            drop_schema(self.schema)


def schema_url(schema: str) -> str:
    """``DATABASE_URL`` with Roomcast's ``schema`` parameter (created on start)."""
    return f"{DATABASE_URL}{'&' if '?' in DATABASE_URL else '?'}schema={schema}"


def drop_schema(schema: str) -> None:
    subprocess.run(["psql", DATABASE_URL, "-qc", f"DROP SCHEMA {schema} CASCADE"],
                   check=True, capture_output=True)


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(["taskset", "-c", LOADGEN_CORE, "redis-server", "--port", str(port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=sys.stderr)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)  # polling another process that is starting up
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_cluster(name: str, nodes: int, serializer: str, data_dir: str,
                  extra: list[str] | None = None) -> Cluster:
    """``nodes`` servers of ``name`` on one Redis, all on NODES_CORE; Roomcast's
    share a fresh PostgreSQL schema (every message stored there), with the
    ``extra`` flags."""
    redis, redis_port = start_redis()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    schema = f"bench_{run_id()}" if name == "roomcast" else None
    started: list[Server] = []
    try:
        for i in range(nodes):
            if name == "roomcast":
                flags = ["--store", schema_url(str(schema)), "--redis", redis_url,
                         "--node-id", f"node{i}", "--redis-prefix", str(schema), *(extra or [])]
                started.append(start_server(name, serializer, data_dir, extra=flags,
                                            core=NODES_CORE))
            else:
                started.append(start_server(name, serializer, data_dir,
                                            env={"REDIS_URL": redis_url}, core=NODES_CORE))
    except BaseException:
        Cluster(started, redis, redis_port, schema).stop()
        raise
    return Cluster(started, redis, redis_port, schema)


def cluster_fanout(cluster: Cluster, args: argparse.Namespace, *, spread: bool) -> Measured:
    """S1's rooms with each room's members split over the nodes (its sender on the
    first: deliveries cross Redis), or with ``spread`` each room on one node (8
    rooms, two per node of four: what a node needs from Redis is nothing).
    Each client checks its room's seqs."""
    pids = [node.proc.pid for node in cluster.nodes] + [cluster.redis.pid]
    subscribers = cluster.subscriber_ports()
    before = cluster.bytes_from_redis(subscribers)
    result = loadgen({"scenario": "fanout", "urls": [node.url for node in cluster.nodes],
                      "serializer": args.serializer, "stepSeconds": args.step_seconds,
                      "pids": pids, "run": run_id(), "spread": spread,
                      **({"rooms": 8} if spread else {})}, core=LOADGEN_CORE)
    inbound = [after - was for after, was in zip(cluster.bytes_from_redis(subscribers), before)]
    moderate, fixed = result["moderate"], result["fixed"]
    figures: dict[str, float] = {"max msgs/s (p99 < 100 ms)": result["max_delivered_per_s"],
                                 AT_TOP: int(result["at_top"]),
                                 "p99 ms @ 10k msgs/s": moderate["p99_ms"]}
    for at, phase in (("10k", moderate), ("40k", fixed)):
        *nodes, redis = phase["cpu_pct_each"]
        for i, cpu in enumerate(nodes):
            figures[f"node{i} CPU % @ {at}"] = cpu
        figures[f"Redis CPU % @ {at}"] = redis
    if spread:  # what each node's subscription received, and per 1,000 messages sent
        sent = sum(s["sent"] for s in [moderate, fixed, *result["steps"]])
        for i, received in enumerate(inbound):
            figures[f"node{i} fan-out MB in"] = round(received / 1e6, 2)
        figures["fan-out KB in per 1k sent"] = round(statistics.median(inbound) / sent, 1)
    figures["seq violations"] = sum(s["lost"] + s["repeated"]
                                    for s in [moderate, fixed, *result["steps"]])
    return figures, result["steps"]


def run_scenario(scenario: str, server: Server, args: argparse.Namespace) -> Measured:
    if scenario in ("s1", "s1pg"):
        return fanout(server, args, polling=0)
    if scenario == "s3":
        return fanout(server, args, polling=0.2)
    if scenario == "s2":
        return idle(server, args), []
    if scenario == "s5":
        return held_idle(server, args), []
    return storm(server, args), []


TITLES = {
    "s1": "S1 fan-out: 10 rooms x 100 WebSocket members",
    "s1pg": "S1 with Roomcast storing every message in PostgreSQL (the baselines as in S1)",
    "t1": "T1: S1 with Roomcast tracing 1 % of events (OpenTelemetry, OTLP/HTTP); rc/s1: "
          "against its own S1 of the same runs",
    "t100": "T100: S1 with Roomcast tracing every event; rc/s1: against its own S1 of the "
            "same runs",
    "s2": "S2 idle: {connections} WebSocket connections",
    "s3": "S3 fan-out: 10 rooms x 100 members, 20 per room on long-polling",
    "s4": "S4 reconnect storm: 1,000 clients rejoin with since, 20 missed per room",
    "s5": "S5 idle at the limit: {held} WebSockets over two generator processes; then 30 s "
          "of the server's CPU and a probe's sends (one each 100 ms)",
    "c1": "C1 two nodes, one Redis: 10 rooms x 100 WebSocket members, half on each node "
          "(Roomcast: PostgreSQL store)",
    "c2": "C2 four nodes, one Redis: 8 rooms x 100 WebSocket members, each room on one "
          "node (Roomcast: PostgreSQL store)",
}


def title(scenario: str, args: argparse.Namespace) -> str:
    return TITLES[scenario].format(connections=f"{args.connections:,}", held=f"{args.held:,}")


def table(results: dict[str, dict[str, list[dict[str, float]]]],
          args: argparse.Namespace) -> str:
    lines = []
    for scenario in args.scenarios:
        if scenario not in results:
            continue
        lines.append("")
        lines.append(title(scenario, args))
        header = f"  {'metric':<28}" + "".join(f"{name:>12}" for name in args.servers)
        ratios = [name for name in args.servers if name != "roomcast"]
        if "roomcast" in args.servers:
            header += "".join(f"{'rc/' + name:>11}" for name in ratios)
        untraced = results.get("s1", {}).get("roomcast") if scenario in TRACED else None
        if untraced:
            header += f"{'rc/s1':>11}"
        lines.append(header)
        per_server = results[scenario]
        metrics = list(next(iter(per_server.values()))[0])
        for metric in metrics:
            summary = sum if metric == AT_TOP else statistics.median
            medians = {name: summary(r[metric] for r in per_server[name])
                       for name in args.servers if per_server.get(name)}
            row = f"  {metric:<28}" + "".join(f"{medians.get(name, float('nan')):>12,.1f}"
                                              for name in args.servers)
            if "roomcast" in medians and metric != AT_TOP and not metric.startswith(
                    ("lost", "dropped", "seq")):
                for name in ratios:
                    base = medians.get(name)
                    row += f"{medians['roomcast'] / base:>10.2f}x" if base else f"{'-':>11}"
                if untraced and metric in untraced[0]:
                    base = statistics.median(r[metric] for r in untraced)
                    row += f"{medians['roomcast'] / base:>10.2f}x" if base else f"{'-':>11}"
            lines.append(row)
    lines.append("")
    lines.append(f"medians of {args.runs} run(s) (\"{AT_TOP}\": how many of them); "
                 "ratio = Roomcast / baseline "
                 f"(for ms, KB, s and CPU lower is better); {args.serializer} on the wire")
    return "\n".join(lines)


def busy_core(core: str) -> subprocess.Popen[bytes]:
    """A process that keeps ``core`` busy until killed (at exit at the latest):
    what a noisy neighbour does to a VM's core."""
    hog = subprocess.Popen(["taskset", "-c", core, sys.executable, "-c", "while True: pass"])
    atexit.register(hog.kill)
    return hog


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, Node {node}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario and server")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated: s1,s1pg,s2,s3,s4,c1,c2")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="comma-separated: roomcast,stock,node")
    parser.add_argument("--serializer", choices=("msgpack", "json"), default="msgpack")
    parser.add_argument("--connections", type=int, default=10_000, help="S2's connections")
    parser.add_argument("--held", type=int, default=19_500,
                        help="S5's connections (each process may open 20,000 files here)")
    parser.add_argument("--step-seconds", type=float, default=2.5,
                        help="length of each rate step in S1/S3")
    parser.add_argument("--noisy", action="store_true",
                        help="the noisy-day configuration: a busy process on core 1 "
                             "throughout (each scenario's servers and generator share "
                             "the machine with it)")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--png-dir", type=Path, default=Path(__file__).parent / "ramps",
                        help="where each ramp's PNG goes (one per fan-out scenario)")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.servers = [s for s in args.servers.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS) | set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")

    print(f"machine: {machine()}", flush=True)
    hog = busy_core(LOADGEN_CORE) if args.noisy else None
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    ramps: dict[str, dict[str, list[Steps]]] = {}  # scenario -> server -> each run's ramp
    started = time.monotonic()
    for run in range(args.runs):
        for scenario in args.scenarios:
            order = args.servers[run % len(args.servers):] + args.servers[:run % len(args.servers)]
            for name in order:
                if scenario in CLUSTER_SCENARIOS and name not in CLUSTER_SERVERS \
                        or scenario in TRACED and name != "roomcast":
                    continue
                with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as data_dir:
                    if scenario in CLUSTER_SCENARIOS:
                        cluster = start_cluster(name, CLUSTER_SCENARIOS[scenario],
                                                args.serializer, data_dir)
                        try:
                            figures, steps = cluster_fanout(cluster, args,
                                                            spread=scenario == "c2")
                        finally:
                            cluster.stop()
                    elif scenario in TRACED:
                        figures, steps = traced_fanout(TRACED[scenario], args, data_dir)
                    else:
                        on_pg = (scenario, name) == ("s1pg", "roomcast")
                        schema = f"bench_{run_id()}" if on_pg else None
                        server = start_server(name, args.serializer, data_dir, extra=[
                            "--store", schema_url(schema)] if schema else None)
                        try:
                            figures, steps = run_scenario(scenario, server, args)
                        finally:
                            server.stop()
                            if schema:
                                drop_schema(schema)
                results.setdefault(scenario, {}).setdefault(name, []).append(figures)
                if steps and scenario not in TRACED:  # (S1's ramp is drawn)
                    ramps.setdefault(scenario, {}).setdefault(name, []).append(steps)
                print(f"run {run + 1}/{args.runs} {scenario} {name:<8} {json.dumps(figures)}",
                      flush=True)
    if hog is not None:
        hog.kill()
        print(f"noisy: a busy process on core {LOADGEN_CORE} throughout")
    print(table(results, args))
    for scenario, drawn in ramps.items():
        path = args.png_dir / f"{scenario}.png"
        draw(title(scenario, args), drawn, path)
        print(f"ramp: {path}")
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
