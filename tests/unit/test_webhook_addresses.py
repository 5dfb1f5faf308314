"""Where webhooks may post: public addresses, and the networks named in
--webhook-networks; a name is judged by what it resolves to."""

from __future__ import annotations

import pytest

from app.hooks.addresses import GuardedResolver, literal_refused, networks, reachable
from app.settings import Settings

INSIDE = networks(Settings(webhook_networks="10.1.0.0/16, fd00::/8"))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254",  # metadata
    "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::", "ff02::1",
])
def test_internal_addresses_are_refused(address: str) -> None:
    assert not reachable(address, ())


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
                                     "::ffff:93.184.215.14", "1.1.1.1"])
def test_public_addresses_are_reachable(address: str) -> None:
    assert reachable(address, ())


def test_the_networks_named_are_reachable_and_no_others() -> None:
    assert reachable("10.1.200.3", INSIDE) and reachable("fd12::7", INSIDE)
    assert not reachable("10.2.0.1", INSIDE) and not reachable("127.0.0.1", INSIDE)
    with pytest.raises(ValueError, match="webhook_networks"):
        Settings(webhook_networks="10.0.0.0/33")


def test_a_literal_address_in_a_url_is_judged_and_a_name_left_to_the_resolver() -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "https://169.254.169.254/",
                "http://[::ffff:10.0.0.1]/"):
        assert "not a public address" in (literal_refused(url, ()) or ""), url
    assert literal_refused("https://hooks.example.org/in", ()) is None
    assert literal_refused("http://10.1.2.3/in", INSIDE) is None


async def test_a_name_resolving_only_to_internal_addresses_does_not_resolve() -> None:
    resolver = GuardedResolver(())
    try:
        with pytest.raises(OSError, match="no address webhooks may reach"):
            await resolver.resolve("localhost", 80)
        opened = GuardedResolver(networks(Settings(webhook_networks="127.0.0.0/8")))
        assert {r["host"] for r in await opened.resolve("localhost", 80)} == {"127.0.0.1"}
        await opened.close()
    finally:
        await resolver.close()
