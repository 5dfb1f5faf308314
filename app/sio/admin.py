"""The Socket.IO Admin UI (``--admin-ui``), with its logins throttled.

python-socketio's Admin UI checks a password on each CONNECT to ``/admin``
and nothing else: a peer could try 20,000 a second on one connection. Here
every login attempt costs a token from its client address's bucket
(:data:`LOGIN_BURST` at once, then one per :data:`LOGIN_REFILL_S` seconds; a
successful login gives its token back), so a minute holds a dozen guesses;
past that the attempt is refused without the password being looked at. A
connection that fails :data:`FAILURES_PER_CONNECTION` logins is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError

from ..core.limits import TokenBucket
from ..core.peers import client_address
from ..settings import Settings

log = logging.getLogger(__name__)

ADMIN_NAMESPACE = "/admin"
LOGIN_BURST = 5
LOGIN_REFILL_S = 10.0
FAILURES_PER_CONNECTION = 3
MAX_ADDRESSES = 10_000  # addresses remembered; the least recently seen go first

ConnectHandler = Callable[[str, dict[str, Any], Any], Awaitable[Any]]


class LoginThrottle:
    """Login attempts per client address, as token buckets."""

    def __init__(self, burst: int = LOGIN_BURST, refill_s: float = LOGIN_REFILL_S,
                 max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = 1 / refill_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def attempt(self, address: str) -> int:
        """Spend an attempt for ``address``: 0, or the ms until one is allowed."""
        bucket = self._buckets.pop(address, None) or TokenBucket(self.rate, self.burst, self._clock)
        self._buckets[address] = bucket
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return bucket.take()

    def succeeded(self, address: str) -> None:
        """A login that worked costs nothing."""
        bucket = self._buckets.get(address)
        if bucket is not None:
            bucket.charge(-1)


def enable_admin_ui(sio: socketio.AsyncServer, settings: Settings, node: str) -> LoginThrottle:
    """Serve the Admin UI's namespace, its logins throttled; returns the throttle."""
    admin = sio.instrument(auth={"username": settings.admin_user,
                                 "password": settings.admin_password},
                           mode="production", server_id=node, namespace=ADMIN_NAMESPACE)
    throttle = LoginThrottle()
    failures: dict[str, int] = {}  # failed logins per Engine.IO session

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        address = client_address(environ, settings.trust_forwarded)
        eio_sid = sio.manager.eio_sid_from_sid(sid, ADMIN_NAMESPACE)
        wait = throttle.attempt(address)
        try:
            if wait:
                raise ConnectionRefusedError(
                    f"too many failed logins; try again in {-(-wait // 1000)} s")
            result = await admin.admin_connect(sid, environ, auth)
        except ConnectionRefusedError:
            log.log(logging.DEBUG if wait else logging.WARNING, "admin login refused addr=%s%s",
                    address, " (throttled)" if wait else "")
            failures[eio_sid] = failures.get(eio_sid, 0) + 1
            if failures[eio_sid] >= FAILURES_PER_CONNECTION:
                failures.pop(eio_sid)
                # after the refusal is on its way
                asyncio.get_running_loop().call_soon(_close, sio, eio_sid)
            raise
        throttle.succeeded(address)
        failures.pop(eio_sid, None)
        log.info("admin login addr=%s", address)
        return result

    sio.on("connect", connect, namespace=ADMIN_NAMESPACE)
    log.info("Socket.IO Admin UI enabled on namespace %s", ADMIN_NAMESPACE)
    return throttle


def _close(sio: socketio.AsyncServer, eio_sid: str) -> None:
    task = asyncio.ensure_future(sio.eio.disconnect(eio_sid))
    _closing.add(task)
    task.add_done_callback(_closed)


_closing: set[asyncio.Future[Any]] = set()  # held until done


def _closed(task: asyncio.Future[Any]) -> None:
    _closing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("closing an admin connection failed", exc_info=task.exception())
