"""Prometheus metrics: ``GET /metrics``.

Each application has its own registry (tests run many apps in one process).
Labels are bounded: event names come from the protocol table, codes from
:class:`~app.core.errors.ErrorCode`, reasons from :data:`DISCONNECT_REASONS`;
never a room or a user name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# python-socketio's reasons -> our label values
DISCONNECT_REASONS = {
    "client disconnect": "client",
    "server disconnect": "server",
    "ping timeout": "heartbeat_timeout",
    "transport close": "transport_close",
    "transport error": "transport_error",
}
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5)
FANOUT_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class Metrics:
    """The counters and histograms the server updates as it works."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "roomcast_messages_received", "Messages stored (new sends, not repeats)",
            registry=r)
        self.messages_delivered = Counter(
            "roomcast_messages_delivered", "Message events handed to connections on this node",
            registry=r)
        self.fanout = Histogram(
            "roomcast_broadcast_fanout", "Connections on this node a room event went to",
            ["event"], buckets=FANOUT_BUCKETS, registry=r)
        self.delivery_lag = Histogram(
            "roomcast_delivery_lag_seconds", "From a message's commit in the store to this "
            "node handing it to its members' connections (hop: local, or redis: stored by "
            "another node)", ["hop"], buckets=LATENCY_BUCKETS, registry=r)
        self.ack_seconds = Histogram(
            "roomcast_ack_seconds", "Time from an event's arrival to its ack", ["event"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.store_seconds = Histogram(
            "roomcast_store_seconds", "Message store call latency", ["op"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.disconnects = Counter(
            "roomcast_disconnects", "Connections ended, by reason", ["reason"], registry=r)
        self.refused = Counter(
            "roomcast_refused", "Events and connects answered with an error, by code",
            ["event", "code"], registry=r)

    def disconnected(self, reason: str) -> None:
        self.disconnects.labels(DISCONNECT_REASONS.get(reason, reason if reason in (
            "server_shutdown", "slow_consumer", "token_expired") else "other")).inc()

    def watch(self, name: str, documentation: str, labels: list[str],
              read: Callable[[], Iterable[tuple[list[str], float]]], *,
              counter: bool = False) -> None:
        """A gauge (or a ``counter``, exposed as ``name_total``) read when
        scraped: ``read`` gives (label values, value) pairs."""
        self.registry.register(_Watched(name, documentation, labels, read, counter))

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE})


class _Watched(Collector):
    def __init__(self, name: str, documentation: str, labels: list[str],
                 read: Callable[[], Iterable[tuple[list[str], float]]], counter: bool) -> None:
        self._name, self._doc, self._labels, self._read = name, documentation, labels, read
        self._family = CounterMetricFamily if counter else GaugeMetricFamily

    def collect(self) -> Iterable[Metric]:
        family = self._family(self._name, self._doc, labels=self._labels)
        for values, value in self._read():
            family.add_metric(values, value)
        yield family
