"""A large room's presence: coalesced per tick against today's per-event broadcast.

Two Roomcast nodes on one Redis and PostgreSQL (``bench/__main__.py``'s
cluster: both nodes on one core, the generator and Redis on the other); the
Node load generator (``loadgen.js``, scenario ``presence``) puts ``--members``
clients in one room, spread over the nodes, then ``--churners`` more join and
leave it, ``--rate`` joins and leaves a second in all, for ``--seconds``. Each
size runs twice: with the defaults (a room past ``--presence-list-max`` 100
gets a first page and coalesced changes once a tick) and with
``--presence-list-max`` raised above the room (every join and leave is one
event with the whole member list, to every member: how Roomcast, like most
stacks, told presence before).

    .venv/bin/python -m bench.large_rooms [--members 1000 10000] [--rate 200] [--seconds 10]

Prints per run: the join ack's p50 and p99, the presence bytes and events a
member received a second (mean, and the p99 member's bytes), each node's CPU
(% of a core), and whether every member was still connected at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from .__main__ import LOADGEN_CORE, loadgen, run_id, start_cluster

PER_EVENT = ["--presence-list-max", "1000000"]  # every change to every member, with the list


def measure(members: int, per_event: bool, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="roomcast-bench-") as data_dir:
        cluster = start_cluster("roomcast", 2, "msgpack", data_dir,
                                extra=[*(PER_EVENT if per_event else []),
                                       "--join-rate", "1000", "--join-burst", "1000",
                                       "--leave-rate", "1000", "--leave-burst", "1000"])
        try:
            result = loadgen({"scenario": "presence", "urls": [n.url for n in cluster.nodes],
                              "serializer": "msgpack", "members": members,
                              "churners": args.churners, "rate": args.rate,
                              "seconds": args.seconds, "run": run_id(),
                              "pids": [n.proc.pid for n in cluster.nodes],
                              "timeLimitSeconds": args.time_limit},
                             time_limit=args.time_limit + 30, core=LOADGEN_CORE)
        except RuntimeError as exc:  # the generator gave up (its time limit): say so
            result = {"failed": str(exc)[:200]}
        finally:
            cluster.stop()
    return {"members": members, "per_event": per_event, **result}


def show(row: dict[str, Any]) -> None:
    how = "per-event (today's)" if row["per_event"] else "coalesced"
    if "failed" in row:
        print(f"{row['members']:>6} members, {how:<20}: did not finish ({row['failed']})")
        return
    print(f"{row['members']:>6} members, {how:<20}: join p50 {row['join_p50_ms']} ms,"
          f" p99 {row['join_p99_ms']} ms ({row['joins']} joins, {row['refused']} refused);"
          f" presence {row['presence_bytes_per_s_mean']:,} B/s a member (p99"
          f" {row['presence_bytes_per_s_p99']:,}), {row['presence_events_per_s_mean']} events/s;"
          f" node CPU {row['cpu_percent']} %; connected at the end"
          f" {row['members_connected_at_end']}/{row['members']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--churners", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200, help="joins and leaves a second")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--time-limit", type=float, default=300)
    args = parser.parse_args()
    for members in args.members:
        for per_event in (False, True):
            row = measure(members, per_event, args)
            show(row)


if __name__ == "__main__":
    main()
