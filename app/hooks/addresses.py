"""Where webhooks may post: public addresses, and the networks the operator
names (``--webhook-networks``, e.g. ``10.1.0.0/16`` for a receiver inside).

An admin key could otherwise point a webhook at the server's own network (a
metadata service, a database's HTTP port) and read what answers in the dead
letters. A literal address in a webhook's URL is checked when the webhook is
made and before every delivery; a host name is checked at every connection,
for every address it resolves to then (:class:`GuardedResolver`), so a name
that resolves to an internal address later (DNS rebinding) is refused too.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult

from ..settings import Network, Settings, cidr_blocks


def networks(settings: Settings) -> tuple[Network, ...]:
    """The networks ``--webhook-networks`` opens to webhooks."""
    return cidr_blocks(settings.webhook_networks, "webhook_networks")


def reachable(address: str, allowed: tuple[Network, ...]) -> bool:
    """Whether a webhook may connect to ``address``: a public unicast one, or
    one inside ``allowed``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # (an IPv6 zone goes)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return True
    return ip.is_global and not ip.is_multicast


def literal_refused(url: str, allowed: tuple[Network, ...]) -> str | None:
    """Why ``url``'s host, if it is an address, may not be posted to; None if
    it may (or is a name: :class:`GuardedResolver` checks those)."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if reachable(host, allowed):
        return None
    return f"{host} is not a public address (--webhook-networks lets webhooks reach one)"


class GuardedResolver(AbstractResolver):
    """The system's resolver, keeping only the addresses a webhook may reach;
    a host with none left fails to resolve."""

    def __init__(self, allowed: tuple[Network, ...]) -> None:
        self._resolver = ThreadedResolver()
        self._allowed = allowed

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        kept = [r for r in found if reachable(r["host"], self._allowed)]
        if not kept:
            # (errno and text both: aiohttp's error shows the text)
            raise OSError(errno.EACCES, f"{host} resolves to no address webhooks may reach "
                          "(--webhook-networks lets them reach one)")
        return kept

    async def close(self) -> None:
        await self._resolver.close()
