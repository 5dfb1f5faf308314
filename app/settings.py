"""Server settings: one frozen dataclass, loaded from flags over env over defaults.

Every field can be set by a ``--flag`` of ``python -m app`` and by a
``ROOMCAST_<FIELD>`` environment variable; a flag wins over the variable,
the variable over the default. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "ROOMCAST_"
SERIALIZERS = ("msgpack", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# what is metered per connection: a <kind>_rate and <kind>_burst field each
RATED = ("send", "change", "typing", "join", "leave", "history", "search", "rooms", "renew",
         "read", "direct", "members", "reply_bytes")


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Network
    host: str = field(default="0.0.0.0", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "TCP port; 0 picks a free one"})

    # Wire format
    serializer: str = field(default="msgpack", metadata={
        "help": "Socket.IO packet serializer: msgpack or json", "choices": SERIALIZERS})

    # Storage
    store: str = field(default="sqlite:///data/roomcast.db", metadata={
        "help": "message store URL: sqlite:///relative/path.db, sqlite:////abs/path.db, "
                "postgresql://user:password@host:5432/db, memory://"})

    store_timeout: float = field(default=5.0, metadata={
        "help": "seconds a message store call may take; then the client is answered "
                "unavailable"})
    store_max_pending: int = field(default=10_000, metadata={
        "help": "store calls that may be in flight at once (answered or not); past it, "
                "sends and reads are answered unavailable at once"})
    retention: int = field(default=0, metadata={
        "help": "seconds a room's messages and changes are kept, then removed (0: for "
                "ever); a room's owner may keep its own for less"})
    retention_interval: float = field(default=60.0, metadata={
        "help": "seconds between two looks for entries past their retention"})
    retention_batch: int = field(default=200, metadata={
        "help": "entries removed per transaction (each one a pause of the store's writes "
                "while it runs; a purge takes a fifth of the store's time at most)"})

    # Attachments (app.chat.attachments)
    files: str = field(default="dir:data/files", metadata={
        "help": "where attachments are kept: dir:relative/path or dir:/abs/path (a directory "
                "the nodes share), or s3://bucket/prefix?endpoint=URL&region=R (S3-compatible "
                "storage; credentials from the AWS_* variables)"})
    upload_spool: str = field(default="data/uploads", metadata={
        "help": "this node's directory for uploads in progress"})
    max_file_bytes: int = field(default=100 * 1024 * 1024, metadata={
        "help": "bytes in one uploaded file"})
    max_upload_bytes_per_day: int = field(default=1024 * 1024 * 1024, metadata={
        "help": "bytes one person may upload in a day (UTC), counted when an upload is "
                "granted (in the store: one count for every node)"})
    max_uploads_in_flight: int = field(default=100, metadata={
        "help": "uploads granted on this node and not yet finished, abandoned or expired"})
    max_upload_rate: float = field(default=50_000_000.0, metadata={
        "help": "bytes a second all uploads together may bring into this node; past it "
                "they are read more slowly (the chat keeps its share of the core)"})
    upload_expiry: float = field(default=24 * 3600.0, metadata={
        "help": "seconds an upload may take, and a finished one may wait to be sent in a "
                "message; then it is removed"})
    file_link_ttl: float = field(default=600.0, metadata={
        "help": "seconds a link to a file (for a person who may read its room) stays valid"})
    file_secret: str = field(default="", repr=False, metadata={
        "help": "secret that signs upload grants and file links (at least 32 bytes; the "
                "same on every node; prefer the variable); empty: one made at start, for "
                "one node"})

    # Cluster
    redis: str = field(default="", metadata={
        "help": "Redis URL (redis://host:6379/0) for fan-out and presence across nodes, "
                "or any node of a Redis Cluster (redis-cluster://host:7000; rediss:// and "
                "rediss-cluster:// for TLS); empty: this process alone"})
    redis_prefix: str = field(default="roomcast", metadata={
        "help": "prefix of every Redis key and channel (nodes of one cluster share it)"})
    node_id: str = field(default="", metadata={
        "help": "this node's name in logs and Redis; empty: host name + random suffix"})
    presence_ttl: float = field(default=15.0, metadata={
        "help": "seconds after which a silent node's presence entries are removed "
                "(with --redis); presence is checked against the live connections and "
                "repaired every third of it"})
    presence_grace: float = field(default=15.0, metadata={
        "help": "seconds a name stays present in a room after its connection dropped "
                "(not after a leave or a goodbye): back within it, on any node, nobody "
                "sees it leave or join; long enough to cover a node's restart; 0: at once"})
    presence_list_max: int = field(default=100, metadata={
        "help": "rooms of up to this many people get their whole member list with a join "
                "and with each arrival or departure, at once; larger ones a first page and "
                "a count (members pages the rest) and their changes coalesced"})
    presence_tick: float = field(default=1.0, metadata={
        "help": "seconds over which a large room's arrivals and departures are gathered "
                "into one presence event (per node)"})
    presence_max_names: int = field(default=50, metadata={
        "help": "names of arrivals, and of departures, one coalesced presence event lists "
                "(the count is always right; more: true says some were left out)"})
    redis_max_connections: int = field(default=100, metadata={
        "help": "connections this node's presence client may hold; more requests wait "
                "for a free one (up to 10 s); fan-out holds two of its own (on a Redis "
                "Cluster: per master)"})
    max_fanout_queue_bytes: int = field(default=32 * 1024 * 1024, metadata={
        "help": "bytes of events waiting to be published to the other nodes (with "
                "--redis); past it (and while Redis is unreachable) the other nodes' "
                "clients catch up from the store instead"})
    trust_forwarded: bool = field(default=False, metadata={
        "help": "take client addresses from X-Forwarded-For (only behind a proxy that "
                "sets it)"})

    # Heartbeat (python-socketio's names)
    ping_interval: float = field(default=25.0, metadata={
        "help": "seconds between server pings"})
    connect_timeout: float = field(default=45.0, metadata={
        "help": "seconds a new connection has to join a namespace before it is closed"})
    ping_timeout: float = field(default=20.0, metadata={
        "help": "seconds to wait for a pong before the peer counts as dead"})

    # Limits
    max_text_length: int = field(default=4000, metadata={
        "help": "longest message text in characters; longer is too_large"})
    send_rate: float = field(default=5.0, metadata={
        "help": "sends per second per connection, sustained (token bucket)"})
    send_burst: int = field(default=20, metadata={"help": "sends allowed in a burst"})
    change_rate: float = field(default=2.0, metadata={
        "help": "edits, deletes, reactions and unreactions per second per connection, "
                "sustained"})
    change_burst: int = field(default=20, metadata={"help": "changes allowed in a burst"})
    edit_window: float = field(default=0.0, metadata={
        "help": "seconds after sending during which a message may be edited (0: always)"})
    typing_rate: float = field(default=2.0, metadata={
        "help": "typing signals per second per connection, sustained"})
    typing_burst: int = field(default=5, metadata={"help": "typing signals in a burst"})
    join_rate: float = field(default=2.0, metadata={
        "help": "joins per second per connection, sustained"})
    join_burst: int = field(default=60, metadata={
        "help": "joins in a burst (a reconnecting client rejoins all its rooms at once)"})
    leave_rate: float = field(default=1.0, metadata={
        "help": "leaves per second per connection, sustained"})
    leave_burst: int = field(default=10, metadata={"help": "leaves in a burst"})
    history_rate: float = field(default=5.0, metadata={
        "help": "history requests per second per connection, sustained"})
    history_burst: int = field(default=30, metadata={"help": "history requests in a burst"})
    search_rate: float = field(default=1.0, metadata={
        "help": "searches per second per connection, sustained"})
    search_burst: int = field(default=10, metadata={"help": "searches in a burst"})
    max_searches: int = field(default=4, metadata={
        "help": "searches running at once on this node; past it a search is answered "
                "unavailable (searches have database connections of their own: "
                "they never hold up joins, history or sends)"})
    max_searches_per_name: int = field(default=1, metadata={
        "help": "searches one name may have running at once, over all its connections; "
                "past it, rate_limited"})
    search_timeout: float = field(default=2.0, metadata={
        "help": "seconds a search may take; then it is stopped in the database and "
                "answered unavailable"})
    rooms_rate: float = field(default=1.0, metadata={
        "help": "rooms-list requests per second per connection, sustained"})
    rooms_burst: int = field(default=10, metadata={"help": "rooms-list requests in a burst"})
    members_rate: float = field(default=2.0, metadata={
        "help": "member-list pages (members) per second per connection, sustained"})
    members_burst: int = field(default=20, metadata={"help": "member-list pages in a burst"})
    renew_rate: float = field(default=0.2, metadata={
        "help": "token renewals per second per connection, sustained (token mode)"})
    renew_burst: int = field(default=5, metadata={"help": "token renewals in a burst"})
    read_rate: float = field(default=2.0, metadata={
        "help": "read marks per second per connection, sustained"})
    read_burst: int = field(default=60, metadata={
        "help": "read marks in a burst (a client back online marks each room it shows)"})
    direct_rate: float = field(default=0.2, metadata={
        "help": "direct conversations opened per second per connection, sustained"})
    direct_burst: int = field(default=10, metadata={
        "help": "direct conversations opened in a burst"})
    max_new_directs_per_person: int = field(default=10, metadata={
        "help": "different direct conversations one person may open, per hour, that "
                "include the same other person (a bot, say; counted per node)"})
    record_joins: bool = field(default=False, metadata={
        "help": "record each person's first entry to a room as an entry of its stream "
                "(a `join` change every member receives, and webhooks of `joins` deliver); "
                "off: entering a room is presence only"})
    read_receipts: bool = field(default=True, metadata={
        "help": "show a room's members up to where each of them has read (false: "
                "markers stay private to their owner)"})
    max_reply_bytes: int = field(default=256_000, metadata={
        "help": "bytes of messages in one join or history reply, about (as encoded); "
                "past it the reply stops early with more=true"})
    reply_bytes_rate: float = field(default=1_000_000.0, metadata={
        "help": "bytes of join and history replies per second per connection, sustained"})
    reply_bytes_burst: int = field(default=4_000_000, metadata={
        "help": "bytes of join and history replies in a burst (at least max_reply_bytes)"})
    max_rooms: int = field(default=50, metadata={
        "help": "rooms one connection may be in at once"})
    max_connections_per_name: int = field(default=20, metadata={
        "help": "connections one name may hold on this node"})
    max_connections_per_address: int = field(default=100, metadata={
        "help": "connections from one client address on this node"})
    max_backlog_packets: int = field(default=1000, metadata={
        "help": "packets waiting for a slow client before it is disconnected "
                "(typing signals stop at half)"})
    max_backlog_bytes: int = field(default=1_000_000, metadata={
        "help": "bytes waiting for a slow client before it is disconnected"})
    max_node_backlog_bytes: int = field(default=256_000_000, metadata={
        "help": "bytes waiting for all slow clients together; past it the ones furthest "
                "behind are disconnected first (bounds memory however many stall at "
                "once); 0: no bound"})
    trace_endpoint: str = field(default="", metadata={
        "help": "OTLP/HTTP endpoint traces are exported to (e.g. "
                "http://collector:4318/v1/traces); empty: no tracing"})
    trace_sample: float = field(default=0.01, metadata={
        "help": "share of events traced when --trace-endpoint is set (0 to 1)"})
    late_delivery_after: float = field(default=5.0, metadata={
        "help": "seconds after which an event handed to a connection and still not "
                "written to its socket (or taken by its poll) is counted in "
                "roomcast_deliveries_late_total"})
    socket_send_buffer: int = field(default=65536, metadata={
        "help": "bytes the kernel may hold for one WebSocket (SO_SNDBUF; Linux doubles it "
                "for its bookkeeping). What waits there waits ahead of the next ping, out of "
                "the server's reach: Linux would grow it to megabytes for a slow reader. "
                "0: the system's default"})
    max_events_in_progress: int = field(default=50, metadata={
        "help": "events of one connection handled at once; past it the server stops "
                "reading that connection until one is done (nothing is dropped)"})
    max_poll_packets: int = field(default=16, metadata={
        "help": "packets in one long-polling response, the rest in the next (python-socketio "
                "clients drop a connection sent more than 16); 0: no limit"})

    # Access
    jwt_secret: str = field(default="", repr=False, metadata={
        "help": "HS256 secret: connects must carry a signed token (prefer the variable)"})
    token_url: str = field(default="", metadata={
        "help": "token mode: a path on this site (e.g. /auth/roomcast-token, served by your "
                "sign-in service behind the same proxy) the page fetches, with its cookies, "
                'for a fresh token as JSON {"token": ...} before the current one expires; '
                "empty: the page does not renew"})
    sign_in_url: str = field(default="", metadata={
        "help": "token mode: your sign-in page (a path on this site or an http(s) URL), "
                "which sends people back to /?token=...; the page links there when it has "
                "no valid token; empty: the page asks for a token to paste"})
    allowed_hosts: str = field(default="", metadata={
        "help": "comma-separated Host values to answer (with the port if not 80), e.g. "
                "chat.example.com,chat.example.com:8080; empty: any. Set it on a "
                "private network (against DNS rebinding)"})
    allowed_origins: str = field(default="", metadata={
        "help": "comma-separated origins allowed to connect from a browser besides "
                "this server's own, e.g. https://chat.example.com"})

    # HTTP connections (nginx's defaults: client_header_timeout, keepalive_timeout)
    header_timeout: float = field(default=60.0, metadata={
        "help": "seconds a request may take to send its head (request line and "
                "headers); then the connection is closed"})
    keepalive_timeout: float = field(default=75.0, metadata={
        "help": "seconds an idle HTTP connection is kept open for its next request"})

    # Shutdown
    shutdown_timeout: float = field(default=15.0, metadata={
        "help": "seconds the whole shutdown on SIGINT/SIGTERM may take (a step past "
                "it is logged and aborted), --drain-window included"})
    drain_window: float = field(default=5.0, metadata={
        "help": "seconds over which a node shutting down closes its connections, "
                "spread evenly in random order, so that its clients reconnect spread "
                "over time whatever client they use; less than --shutdown-timeout"})

    # Logging
    log_level: str = field(default="info", metadata={
        "help": "debug, info, warning or error", "choices": LOG_LEVELS})
    log_format: str = field(default="text", metadata={
        "help": "text (for people) or json (one object per line)", "choices": LOG_FORMATS})
    log_message_text: bool = field(default=False, metadata={
        "help": "include message text in debug logs (off: never logged)"})

    # Socket.IO Admin UI (https://admin.socket.io)
    admin_ui: bool = field(default=False, metadata={
        "help": "serve the Admin UI's /admin namespace (needs ROOMCAST_ADMIN_PASSWORD)"})
    admin_user: str = field(default="admin", metadata={"help": "Admin UI user name"})
    admin_password: str = field(default="", repr=False, metadata={
        "help": "Admin UI password", "env_only": True})

    # HTTP API (/api/v1/, docs/api.md)
    api_keys: str = field(default="", metadata={
        "help": "API keys, separated by spaces or ';', each NAME:SCOPES:ROOMS:SHA256 (the "
                "key's SHA-256: python -m app.tools.apikey makes a key and prints its "
                "entry); empty: no key is accepted"})
    api_rate: float = field(default=20.0, metadata={
        "help": "HTTP API requests per second one key may make (past its burst: 429 "
                "with Retry-After)"})
    api_burst: float = field(default=100.0, metadata={
        "help": "HTTP API requests one key may make at once"})
    api_max_body: int = field(default=1_000_000, metadata={
        "help": "bytes an HTTP API request body may have (past it: 413)"})
    max_webhooks: int = field(default=50, metadata={
        "help": "webhooks that may be configured (through the API, by an admin key)"})
    webhook_timeout: float = field(default=10.0, metadata={
        "help": "seconds a webhook's receiver has to answer a delivery (else: a failure)"})
    webhook_batch: int = field(default=100, metadata={
        "help": "entries (of one or more rooms) one webhook delivery reads at most"})
    webhook_linger: float = field(default=0.1, metadata={
        "help": "seconds at least between two deliveries of one webhook (one after a "
                "quiet spell goes at once): a busy webhook's deliveries grow, not multiply"})
    webhook_retry_min: float = field(default=1.0, metadata={
        "help": "seconds before retrying a webhook's first failure; each further failure "
                "doubles it (with full jitter) up to --webhook-retry-max"})
    webhook_retry_max: float = field(default=300.0, metadata={
        "help": "the longest wait between retries of a failing webhook"})
    webhook_give_up: float = field(default=86_400.0, metadata={
        "help": "seconds a delivery is retried before it is given up: kept as a dead "
                "letter (readable and replayable through the API) and passed"})
    webhook_rescan: float = field(default=30.0, metadata={
        "help": "seconds between a webhook's looks at every room for entries it has not "
                "delivered (notices of new entries are immediate; this catches lost ones)"})
    webhook_networks: str = field(default="", metadata={
        "help": "comma-separated CIDR blocks webhooks may post to besides public "
                "addresses (e.g. 10.1.0.0/16 for a receiver inside; 127.0.0.0/8 for one on "
                "this host); empty: public addresses only"})
    webhook_lease: float = field(default=15.0, metadata={
        "help": "seconds one node's hold on delivering a webhook lasts unless renewed "
                "(with --redis: another node takes over within it after a crash)"})

    def node_name(self) -> str:
        """``node_id``, or a new one made up from the host name and a random suffix."""
        return self.node_id or _default_node_id()

    def __post_init__(self) -> None:
        if self.serializer not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {', '.join(SERIALIZERS)}, "
                             f"not {self.serializer!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.ping_interval <= 0 or self.ping_timeout <= 0:
            raise ValueError("ping_interval and ping_timeout must be positive")
        if self.header_timeout <= 0 or self.keepalive_timeout <= 0:
            raise ValueError("header_timeout and keepalive_timeout must be positive")
        if self.redis_max_connections < 1 or self.max_fanout_queue_bytes < 1:
            raise ValueError("redis_max_connections and max_fanout_queue_bytes must be "
                             "at least 1")
        if self.max_backlog_bytes < self.max_reply_bytes:
            raise ValueError("max_backlog_bytes must be at least max_reply_bytes (a slow "
                             "client would be cut by its own join reply)")
        if self.retention < 0 or self.retention_interval <= 0 or self.retention_batch < 1:
            raise ValueError("retention must be 0 or more seconds, retention_interval "
                             "positive and retention_batch at least 1")
        if self.store_timeout <= 0 or self.store_max_pending < 1:
            raise ValueError("store_timeout must be positive and store_max_pending at least 1")
        if self.max_node_backlog_bytes < 0:
            raise ValueError("max_node_backlog_bytes must be 0 (no bound) or more")
        if self.socket_send_buffer < 0:
            raise ValueError("socket_send_buffer must be 0 (the system's default) or more")
        if self.max_new_directs_per_person < 1:
            raise ValueError("max_new_directs_per_person must be at least 1")
        if self.max_searches < 1 or self.max_searches_per_name < 1 or self.search_timeout <= 0:
            raise ValueError("max_searches and max_searches_per_name must be at least 1 and "
                             "search_timeout positive")
        if min(self.max_webhooks, self.webhook_batch) < 1:
            raise ValueError("max_webhooks and webhook_batch must be at least 1")
        if min(self.webhook_timeout, self.webhook_retry_min, self.webhook_rescan,
               self.webhook_lease) <= 0 or self.webhook_retry_max < self.webhook_retry_min \
                or min(self.webhook_give_up, self.webhook_linger) < 0:
            raise ValueError("the webhook times must be positive, and webhook_retry_max at "
                             "least webhook_retry_min")
        cidr_blocks(self.webhook_networks, "webhook_networks")  # (names a bad block)
        if self.max_events_in_progress < 1:
            raise ValueError("max_events_in_progress must be at least 1")
        if self.max_poll_packets < 0:
            raise ValueError("max_poll_packets must be 0 (no limit) or more")
        for kind in RATED:
            if getattr(self, kind + "_rate") <= 0 or getattr(self, kind + "_burst") < 1:
                raise ValueError(f"{kind}_rate must be positive and {kind}_burst at least 1")
        if not 1_000 <= self.max_reply_bytes <= self.reply_bytes_burst:
            raise ValueError("max_reply_bytes must be at least 1000 and at most "
                             "reply_bytes_burst")
        if self.token_url and not (self.token_url.startswith("/")
                                   and not self.token_url.startswith("//")):
            raise ValueError("token_url must be a path on this site, starting with one /")
        if self.sign_in_url and not (
                self.sign_in_url.startswith(("https://", "http://"))
                or self.sign_in_url.startswith("/") and not self.sign_in_url.startswith("//")):
            raise ValueError("sign_in_url must be a path on this site or an http(s) URL")
        if self.presence_list_max < 1 or self.presence_max_names < 1 \
                or self.presence_tick <= 0:
            raise ValueError("presence_list_max and presence_max_names must be at least 1 "
                             "and presence_tick positive")
        if not 0 <= self.trace_sample <= 1:
            raise ValueError("trace_sample must be between 0 and 1")
        if self.late_delivery_after <= 0:
            raise ValueError("late_delivery_after must be positive")
        if self.presence_grace < 0 or self.drain_window < 0:
            raise ValueError("presence_grace and drain_window may not be negative")
        if self.drain_window and self.drain_window >= self.shutdown_timeout:
            raise ValueError("drain_window must be less than shutdown_timeout (the drain "
                             "is part of the shutdown)")
        if self.max_text_length < 1:
            raise ValueError("max_text_length must be at least 1")
        if self.file_secret and len(self.file_secret.encode()) < 32:
            raise ValueError("file_secret must be at least 32 bytes")
        if min(self.max_file_bytes, self.max_upload_bytes_per_day,
               self.max_uploads_in_flight, self.max_upload_rate) < 1 \
                or self.upload_expiry <= 0 \
                or self.file_link_ttl <= 0:
            raise ValueError("the upload limits and times must be positive")
        if self.jwt_secret and len(self.jwt_secret.encode()) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes (RFC 7518 for HS256)")
        if self.admin_ui and not self.admin_password:
            raise ValueError(f"admin_ui needs a password: set {ENV_PREFIX}ADMIN_PASSWORD")

    @classmethod
    def load(cls, argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Settings:
        """Flags over ``ROOMCAST_*`` variables over defaults.

        Raises ``SystemExit`` (via argparse) with a message naming the flag or
        the variable that is wrong.
        """
        parser = argparse.ArgumentParser(
            prog="python -m app", description="Serve the Roomcast chat.",
            epilog=f"Each flag can also be set as {ENV_PREFIX}<NAME> in the environment.")
        secrets: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            kind = _field_type(f)
            var = ENV_PREFIX + f.name.upper()
            default: Any = f.default
            if var in environ:
                default = _convert(kind, environ[var], var, f.metadata.get("choices"), parser)
            if f.metadata.get("env_only"):  # secrets never go on a command line
                secrets[f.name] = default
                continue
            parser.add_argument(
                "--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=default,
                choices=f.metadata.get("choices"),
                help=f"{f.metadata.get('help', '')} [env {var}, default {f.default}]")
        values = vars(parser.parse_args(argv)) | secrets
        try:
            return cls(**values)
        except ValueError as exc:
            parser.error(str(exc))


def _flag(raw: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off`` or ``1/0``."""
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def _field_type(f: dataclasses.Field[Any]) -> Any:
    return {"str": str, "int": int, "float": float, "bool": _flag}[str(f.type)]


def _convert(kind: Any, raw: str, var: str, choices: Sequence[str] | None,
             parser: argparse.ArgumentParser) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        name = "true/false" if kind is _flag else kind.__name__
        parser.error(f"{var}={raw!r} is not a valid {name}")
    if choices is not None and value not in choices:
        parser.error(f"{var}={raw!r} must be one of {', '.join(choices)}")
    return value


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def cidr_blocks(setting: str, name: str) -> tuple[Network, ...]:
    """A setting of comma-separated CIDR blocks (ValueError names a bad one)."""
    found: list[Network] = []
    for block in filter(None, (b.strip() for b in setting.split(","))):
        try:
            found.append(ipaddress.ip_network(block, strict=False))
        except ValueError:
            raise ValueError(f"{name}: {block!r} is no CIDR block (say 10.1.0.0/16 or "
                             "fd00::/8)") from None
    return tuple(found)
