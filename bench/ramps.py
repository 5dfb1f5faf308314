"""Each ramp as a PNG: delivered msgs/s and p99 latency against the offered rate,
one line per server (every run of it), so a reader sees where each one bends.

``make bench`` draws one per fan-out scenario into ``bench/ramps/`` beside the
tables; ``draw`` takes the load generator's steps as it reports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"roomcast": "#1f77b4", "node": "#d62728", "stock": "#7f7f7f"}
LIMIT_MS = 100.0  # the p99 a step must stay under to count


def offered(step: dict[str, Any]) -> float:
    """Deliveries per second the step asked for: its send rate times the
    recipients of each message."""
    sent = step.get("sent") or 0
    return float(step["rate"]) * (float(step["expected"]) / sent if sent else 0.0)


def draw(title: str, ramps: dict[str, list[list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (delivered, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server, runs in ramps.items():
        colour = COLOURS.get(server, "#2ca02c")
        for i, steps in enumerate(runs):
            by_rate: dict[float, dict[str, Any]] = {}
            for step in steps:  # a step retried: its last try
                by_rate[float(step["rate"])] = step
            points = sorted(by_rate.values(), key=offered)
            x = [offered(s) / 1000 for s in points]
            label = server if i == 0 else None
            delivered.plot(x, [s["delivered_per_s"] / 1000 for s in points], "o-",
                           color=colour, alpha=0.8, markersize=3, label=label)
            latency.plot(x, [s["p99_ms"] for s in points], "o-", color=colour, alpha=0.8,
                         markersize=3, label=label)
    top = max((offered(s) / 1000 for runs in ramps.values() for steps in runs for s in steps),
              default=1.0)
    delivered.plot([0, top], [0, top], ":", color="#999999", linewidth=1, label="all offered")
    delivered.set(xlabel="offered (thousand deliveries/s)",
                  ylabel="delivered (thousand msgs/s)", title="throughput")
    latency.axhline(LIMIT_MS, linestyle=":", color="#999999", linewidth=1)
    latency.set(xlabel="offered (thousand deliveries/s)", ylabel="p99 latency (ms, log)",
                yscale="log", title="p99 latency (dotted: 100 ms)")
    for axes in (delivered, latency):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
