"""One Engine.IO session's state, with no I/O: what to send, what a packet means.

A :class:`Session` knows its transport, the long-polling queue and its
bounds, the heartbeat (is a pong owed?), the upgrade from long-polling to
WebSocket and whether it is closed. It decides; the engine
(:mod:`app.eio.server`) does the I/O, keeps the timers and calls back into
python-socketio. Tested with plain calls in ``tests/unit/test_eio_session.py``,
as websockets tests its sans-I/O protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import packets
from .packets import CLOSE, MESSAGE, NOOP, PING, PONG, Encoded, Packet

POLLING, WEBSOCKET = "polling", "websocket"

# what a received packet asks of the engine (Session.receive)
DELIVER, IGNORE, REPLY, HEARTBEAT, CLOSE_REQUESTED = range(5)

# upgrade steps (Session.upgrade_step)
PROBED, UPGRADED, UPGRADE_FAILED = range(3)


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds every session of one engine shares."""

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000  # bytes of one message or POST body (maxPayload)
    max_backlog_packets: int = 1000  # queued for a long-polling client
    max_backlog_bytes: int = 1_000_000  # queued (or unsent, on WebSocket)
    max_node_backlog_bytes: int = 0  # all sessions' unsent bytes together; 0: no bound
    max_poll_packets: int = 16  # in one poll response; 0: all that are queued
    max_payload_packets: int = 100_000  # in one POST body
    send_buffer: int = 65536  # a WebSocket's kernel send buffer (SO_SNDBUF); 0: the system's


RESUME_FRACTION = 8  # a session catching up goes live again below 1/8 of its bounds


class Session:
    """One client's Engine.IO session, from OPEN to closed."""

    __slots__ = ("sid", "environ", "transport", "limits", "closed", "awaiting_pong",
                 "upgrading", "data", "catches_up", "skipping", "_queue", "_queued_bytes",
                 "given", "written", "_marks", "_late_upto", "__weakref__")

    def __init__(self, sid: str, environ: dict[str, Any], transport: str,
                 limits: Limits) -> None:
        self.sid = sid
        self.environ = environ
        self.transport = transport
        self.limits = limits
        self.closed = False
        self.awaiting_pong = False
        self.upgrading: str | None = None  # the next upgrade message expected
        self.data: dict[str, Any] = {}  # python-socketio's per-session storage
        # Past its bounds a session is cut, unless its client catches up: then it
        # skips (drops what is queued that can be dropped, and is given no more
        # of it) until it is nearly drained, and is told to catch up (resume_due)
        self.catches_up = False
        self.skipping = False
        # (packet, droppable) for the next poll
        self._queue: deque[tuple[Encoded, bool]] | None = (
            deque() if transport == POLLING else None)
        self._queued_bytes = 0
        # frames (packets) given to the session, and how many of them have been
        # written, taken by a poll or dropped since: see overdue()
        self.given = 0
        self.written = 0
        self._marks: deque[tuple[float, int]] | None = None
        self._late_upto = 0

    @property
    def upgraded(self) -> bool:
        """On WebSocket (python-socketio's Admin UI asks)."""
        return self.transport == WEBSOCKET

    def open_packet(self, upgrades: list[str]) -> str:
        limits = self.limits
        return packets.open_packet(self.sid, upgrades, limits.ping_interval,
                                   limits.ping_timeout, limits.max_payload)

    # -- the long-polling queue -------------------------------------------------

    def push(self, packet: Encoded, droppable: bool = False) -> bool:
        """Queue ``packet`` for the next poll; False (and not queued) if the
        client is already as far behind as its bounds allow. A ``droppable``
        packet (what a client that catches up can fetch again) is dropped
        instead while the session skips."""
        queue = self._queue
        if queue is None:
            return True  # on WebSocket: nothing is queued here
        if droppable and self.skipping:
            return True
        if self._full():  # (the usual path only checks)
            answer = self.past_bound(droppable, self._full)
            if answer is not None:
                return answer
        queue.append((packet, droppable))
        self._queued_bytes += packets.size(packet)
        self.given += 1
        return True

    def push_control(self, packet: Encoded, *, first: bool = False) -> None:
        """Queue a packet of the protocol's own (a ping, a close): never refused,
        since at most one of each is ever waiting. A ping goes ``first``, ahead
        of what is queued (a reader far behind still hears the heartbeat)."""
        if self._queue is not None:
            if first:
                self._queue.appendleft((packet, False))
            else:
                self._queue.append((packet, False))
            self._queued_bytes += packets.size(packet)
            self.given += 1

    def _full(self) -> bool:
        """The long-polling queue is at its bounds."""
        limits = self.limits
        return (self.queued >= limits.max_backlog_packets
                or self._queued_bytes >= limits.max_backlog_bytes)

    def past_bound(self, droppable: bool, full: Callable[[], bool]) -> bool | None:
        """What to do with what is given to a session past its bounds (``full``
        says whether it still is): its caller's answer (False: cut it off;
        True: dropped, as a skipping session drops what can be fetched again),
        or None: room was made (the droppable waiting was dropped), take it."""
        if not self.catches_up:
            return False
        if not self.skipping:
            self.skip()
        if droppable:
            return True
        return False if full() else None  # what cannot be dropped fills it: not reading

    def skip(self) -> None:
        """Over its bounds, for a client that catches up: drop the droppable
        packets queued, and take no more of them until :meth:`resume_due`."""
        self.skipping = True
        queue = self._queue
        if queue:
            kept = [(packet, droppable) for packet, droppable in queue if not droppable]
            self.written += len(queue) - len(kept)
            queue.clear()
            queue.extend(kept)
            self._queued_bytes = sum(packets.size(packet) for packet, _ in kept)

    def resume_due(self, backlog_bytes: int) -> bool:
        """True once, when a skipping session has drained below a fraction of its
        bounds (``backlog_bytes`` unsent, on WebSocket): it is live again, and
        its client must be told to catch up on what it was not sent."""
        if not self.skipping:
            return False
        limits = self.limits
        if (backlog_bytes + self._queued_bytes > limits.max_backlog_bytes // RESUME_FRACTION
                or self.queued > limits.max_backlog_packets // RESUME_FRACTION):
            return False
        self.skipping = False
        return True

    @property
    def queued(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def take(self) -> list[Encoded]:
        """What one poll response carries: the packets queued, up to
        ``max_poll_packets`` (the rest wait for the next poll)."""
        queue = self._queue
        if not queue:
            return []
        limit = self.limits.max_poll_packets
        if not limit or len(queue) <= limit:
            batch = [packet for packet, _ in queue]
            queue.clear()
            self._queued_bytes = 0
        else:
            batch = [queue.popleft()[0] for _ in range(limit)]
            self._queued_bytes -= sum(packets.size(p) for p in batch)
        self.written += len(batch)
        return batch

    def drop_queue(self) -> None:
        """Forget what is queued (a session being cut: none of it will be sent)."""
        if self._queue:
            self._queue.clear()
        self._queued_bytes = 0
        self.written = self.given

    def take_all(self) -> list[Encoded]:
        """Everything queued (to write on the new WebSocket after an upgrade)."""
        queue = self._queue
        batch = [packet for packet, _ in queue] if queue else []
        self._queue = None
        self._queued_bytes = 0
        self.written += len(batch)
        return batch

    # -- deliveries that wait ------------------------------------------------------

    def overdue(self, now: float, after: float) -> int:
        """How many of the frames given to this session have, by ``now``, waited
        ``after`` seconds or more unwritten, each counted once (the first call
        that sees it late). Called at intervals while the session is behind:
        each call marks how many had been given by then (at most about ten
        marks an ``after`` apart), so a frame is known to be late once a mark
        taken after it was given is ``after`` old and it is still unwritten.
        Frames are taken as written in the order given (a ping that goes
        first shifts that by one)."""
        marks = self._marks
        if marks is None:
            marks = self._marks = deque()
        written, given = self.written, self.given
        while marks and marks[0][1] <= written:
            marks.popleft()
        if given > written and (not marks or (marks[-1][1] < given
                                              and now - marks[-1][0] >= after / 10)):
            marks.append((now, given))
        late = 0
        while marks and now - marks[0][0] >= after:
            upto = marks.popleft()[1]
            start = max(self._late_upto, written)
            if upto > start:
                late += upto - start
                self._late_upto = upto
        return late

    # -- the heartbeat ------------------------------------------------------------

    def ping(self) -> str:
        """The ping to send now; a pong is owed from here on."""
        self.awaiting_pong = True
        return packets.PING_TEXT

    # -- what the client sends ---------------------------------------------------

    def receive(self, packet: Packet) -> int:
        """What the engine must do with a packet from the client (DELIVER its
        data, REPLY with a pong, note the HEARTBEAT, close on CLOSE_REQUESTED, or
        IGNORE it); PacketError for a packet a client never sends."""
        kind = packet[0]
        if kind == MESSAGE:
            return DELIVER
        if kind == PONG:
            if not self.awaiting_pong:
                return IGNORE  # (the probe's answer, or one too many: harmless)
            self.awaiting_pong = False
            return HEARTBEAT
        if kind == PING:
            return REPLY
        if kind == CLOSE:
            return CLOSE_REQUESTED
        if kind == NOOP:
            return IGNORE
        raise packets.PacketError(f"a client may not send packet type {kind}")

    # -- upgrade: long-polling -> WebSocket -------------------------------------------

    def start_upgrade(self) -> bool:
        """A WebSocket for this session has been accepted; False if there may not
        be one (already on WebSocket, or one is already probing)."""
        if self.transport != POLLING or self.upgrading is not None or self.closed:
            return False
        self.upgrading = "2" + packets.PROBE
        return True

    def upgrade_step(self, data: str | bytes) -> int:
        """A message on the probing WebSocket: PROBED (answer ``3probe`` and end
        the waiting poll with a NOOP), UPGRADED (the session is on WebSocket:
        write what :meth:`take_all` returns there) or UPGRADE_FAILED (close the
        WebSocket; the session stays on long-polling)."""
        expected, self.upgrading = self.upgrading, None
        if expected == "2" + packets.PROBE and data == expected:
            self.upgrading = "5"
            return PROBED
        if expected == "5" and data == "5" and not self.closed:
            self.transport = WEBSOCKET
            return UPGRADED
        return UPGRADE_FAILED

    def close(self) -> bool:
        """Mark the session closed; True the first time."""
        if self.closed:
            return False
        self.closed = True
        self.upgrading = None
        return True


def pong_reply(packet: Packet) -> str:
    """The answer to a client's ping (its data echoed)."""
    data = packet[1]
    return packets.PONG_TEXT + (data if isinstance(data, str) else "")
