"""What an operator sees: /metrics around real traffic, /readyz, logs, the Admin UI,
and the deployment files."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.appkeys import METRICS_KEY, STORE_KEY
from app.logs import JsonFormatter
from app.settings import ENV_PREFIX, Settings

from ..conftest import TIMEOUT, PeerFactory, ServeFactory, Served, sio_client, until
from ..processes import start_server
from ..rawclient import CONNECT, RawClient

ROOT = Path(__file__).resolve().parent.parent.parent


async def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_traffic(served: Served, transport: str,
                                      peer: PeerFactory) -> None:
    """Counters move with real traffic; gauges show the live state; labels never
    carry a room or user name."""
    before = await scrape(served)
    alice, bob, carol = await peer("alice"), await peer("bob"), await peer("carol")
    for user in (alice, bob, carol):
        await user.join("secret-room")
    for i in range(3):
        await alice.send("secret-room", f"m{i}")
    await alice.send("secret-room", "m0", client_id="same")
    await alice.send("secret-room", "m0", client_id="same")  # a repeat: not received again
    for _ in range(4):
        await bob.next("message")
        await carol.next("message")
    refused = await alice.call("send", {"room": "nope", "text": "x"})
    assert refused["error"]["code"] == "not_member"
    await alice.call("join", "not a map")
    after = await scrape(served)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("roomcast_messages_received_total") == 4
    assert delta("roomcast_messages_delivered_total") == 8  # 4 messages x 2 others
    assert delta("roomcast_broadcast_fanout_count", event="message") == 4
    assert delta("roomcast_broadcast_fanout_sum", event="message") == 8
    assert delta("roomcast_ack_seconds_count", event="send") == 6
    assert delta("roomcast_ack_seconds_count", event="join") == 4
    assert delta("roomcast_store_seconds_count", op="append") == 5
    assert delta("roomcast_refused_total", event="send", code="not_member") == 1
    assert delta("roomcast_refused_total", event="join", code="bad_request") == 1
    assert value(after, "roomcast_connections", transport=transport, namespace="/chat") == 3
    assert value(after, "roomcast_rooms") == 1
    assert value(after, "roomcast_room_members") == 3
    label_values = {v for _, labels in after for _, v in labels}
    assert not label_values & {"secret-room", "alice", "bob", "carol"}

    await bob.sio.disconnect()
    await until(lambda: len(served.chat.connections) == 2)
    final = await scrape(served)
    # python-socketio's client may close the transport before its goodbye packet
    # is read, so a clean client exit counts as "client" or "transport_close"
    left = {reason: value(final, "roomcast_disconnects_total", reason=reason)
            - value(before, "roomcast_disconnects_total", reason=reason)
            for reason in ("client", "transport_close")}
    assert sum(left.values()) == 1, left
    assert value(final, "roomcast_connections", transport=transport, namespace="/chat") == 2


async def test_refused_connects_and_disconnect_reasons_are_counted(
        serve: ServeFactory) -> None:
    """A refused connect counts under its code; heartbeat timeouts and shutdown
    disconnects count under their own reasons."""
    served = await serve(ping_interval=1, ping_timeout=1)
    refused = sio_client(served.settings.serializer)
    with pytest.raises(Exception):
        await refused.connect(served.url, auth={"name": ""}, namespaces=["/chat"],
                              wait_timeout=TIMEOUT)
    ghost = await RawClient.open(served.url, "websocket", served.settings.serializer)
    assert (await ghost.connect({"name": "ghost"}))["type"] == CONNECT
    ghost.answer_pings = False
    await asyncio.wait_for(until(lambda: not served.chat.connections, 10), 10)
    await ghost.close()
    staying = sio_client(served.settings.serializer)
    await staying.connect(served.url, auth={"name": "stay"}, namespaces=["/chat"],
                          wait_timeout=TIMEOUT)
    samples = await scrape(served)
    assert value(samples, "roomcast_refused_total", event="connect", code="bad_name") == 1
    assert value(samples, "roomcast_disconnects_total", reason="heartbeat_timeout") == 1
    await served.server.close()  # shutdown closes "stay"
    registry = served.app[METRICS_KEY].registry
    assert registry.get_sample_value("roomcast_disconnects_total",
                                     {"reason": "server_shutdown"}) == 1
    await staying.disconnect()


async def test_readyz(served: Served) -> None:
    """/readyz is 200 while the store answers, 503 while draining (where /healthz
    stays 200) and 503 once the store is gone."""
    async with aiohttp.ClientSession() as http:
        async def status(path: str) -> int:
            async with http.get(served.url + path) as response:
                return response.status
        assert await status("/readyz") == 200
        served.chat.draining = True
        assert (await status("/readyz"), await status("/healthz")) == (503, 200)
        served.chat.draining = False
        await served.app[STORE_KEY].close()
        assert await status("/readyz") == 503


async def test_log_lines_for_each_event(served: Served, peer: PeerFactory,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """connect, join, leave, refused and disconnect each log one line with the
    connection id, name and transport; message text is not logged."""
    caplog.set_level(logging.DEBUG, logger="app.chat")
    alice = await peer("alice")
    sid = alice.sid
    await alice.join("r")
    await alice.send("r", "top secret words")
    await alice.call("send", {"room": "elsewhere", "text": "x"})
    await alice.ok("leave", {"room": "r"})
    await alice.sio.disconnect()
    await until(lambda: not served.chat.connections)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.chat"]
    for kind in ("connect", "join", "refused send", "leave", "disconnect"):
        matching = [line for line in lines if line.startswith(kind + " ")]
        assert len(matching) == 1, (kind, lines)
        assert f"sid={sid}" in matching[0] and "name='alice'" in matching[0]
        assert re.search(r"transport=(websocket|polling)", matching[0]), matching[0]
    assert re.search(r"reason=(client disconnect|transport close)$",
                     next(x for x in lines if x.startswith("disconnect")))
    assert not any("top secret" in line for line in lines)


def test_json_log_lines() -> None:
    """The json format writes one parseable object per line."""
    record = logging.LogRecord("app.chat", logging.INFO, __file__, 1,
                               "join sid=%s name=%r", ("abc", "zoë"), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "info" and entry["logger"] == "app.chat"
    assert entry["message"] == "join sid=abc name='zoë'" and entry["ts"]


async def test_server_logs_json_when_asked(tmp_path: Path) -> None:
    """`--log-format json`: every line the server writes is a JSON object."""
    server, port = await start_server(tmp_path, "--log-format", "json")
    assert await server.stop() == 0
    assert server.stderr_lines
    for line in server.stderr_lines:
        assert json.loads(line)["message"]


async def test_admin_ui_namespace(serve: ServeFactory) -> None:
    """With the Admin UI on, /admin accepts its credentials, refuses others, and
    reports server stats."""
    served = await serve(admin_ui=True, admin_password="s3cret", serializer="json")
    wrong = sio_client("json")
    with pytest.raises(Exception):
        await wrong.connect(served.url, auth={"username": "admin", "password": "nope"},
                            namespaces=["/admin"], wait_timeout=TIMEOUT)
    admin = sio_client("json")
    stats: asyncio.Queue[Any] = asyncio.Queue()
    admin.on("server_stats", stats.put_nowait, namespace="/admin")
    await admin.connect(served.url, auth={"username": "admin", "password": "s3cret"},
                        namespaces=["/admin"], wait_timeout=TIMEOUT)
    try:
        report = await asyncio.wait_for(stats.get(), 10)
        assert "clientsCount" in report
    finally:
        await admin.disconnect()
    assert "s3cret" not in repr(served.settings)


def test_env_template_lists_every_setting() -> None:
    """nginx/roomcast.env names every setting with its default."""
    text = (ROOT / "nginx" / "roomcast.env").read_text()
    listed = dict(re.findall(r"^#(ROOMCAST_\w+)=(.*)$", text, re.MULTILINE))
    for f in dataclasses.fields(Settings):
        var = ENV_PREFIX + f.name.upper()
        assert var in listed, var
        default = f.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert listed[var] == shown, (var, listed[var], shown)


def test_systemd_unit_runs_the_server_from_the_env_file() -> None:
    """The unit reads the env file, runs `python -m app` and stops it with SIGTERM."""
    unit = (ROOT / "nginx" / "roomcast@.service").read_text()
    assert "EnvironmentFile=/etc/roomcast/roomcast.env" in unit
    assert re.search(r"^ExecStart=\S+python -m app$", unit, re.MULTILINE)
    assert "KillSignal=SIGTERM" in unit and "ROOMCAST_PORT=%i" in unit
