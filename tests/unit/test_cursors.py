"""Consumers' cursors kept by the server: a consumer that comes back reads on
where it said it stopped, whatever connection it comes back on."""

from __future__ import annotations

from typing import Any

import pytest

from .chat import LocalPeerFactory


async def test_a_consumer_reads_on_from_its_cursor(peer: LocalPeerFactory) -> None:
    alice = await peer("alice")
    await alice.join("r")
    for i in range(5):
        await alice.send("r", f"m{i}")
    bot = await peer("bot")
    first = await bot.join("r", cursor="main")
    assert first["cursor"] is None and first["seq"] == 5  # none yet: the latest page
    assert [m["seq"] for m in first["messages"]] == [1, 2, 3, 4, 5]
    moved = await bot.ok("advance", {"room": "r", "cursor": "main", "seq": 3})
    assert moved == {"ok": True, "room": "r", "cursor": "main", "seq": 3}
    assert (await bot.ok("advance", {"room": "r", "cursor": "main", "seq": 2}))["seq"] == 3
    await bot.disconnect()
    await alice.ok("edit", {"room": "r", "seq": 5, "text": "m4, edited"})
    await alice.send("r", "m5")
    again = await peer("bot")
    ack = await again.join("r", cursor="main")
    assert ack["cursor"] == 3 and ack["seq"] == 7
    assert [m["seq"] for m in ack["messages"]] == [4, 5, 7]
    assert [(c["seq"], c["kind"]) for c in ack["changes"]] == [(6, "edit")]
    # another person's cursor of the same name, and another name of this one's
    carol = await peer("carol")
    assert (await carol.join("r", cursor="main"))["cursor"] is None
    assert (await again.join("r", cursor="other"))["cursor"] is None
    assert "cursor" not in await alice.join("r")


@pytest.mark.parametrize("payload, code", [
    ({"room": "r", "cursor": "main", "seq": 1}, "not_member"),
    ({"room": "joined", "cursor": "main"}, "bad_request"),
    ({"room": "joined", "seq": 1}, "bad_request"),
    ({"room": "joined", "cursor": "has space", "seq": 1}, "bad_request"),
    ({"room": "joined", "cursor": "x" * 65, "seq": 1}, "bad_request"),
    ({"room": "joined", "cursor": "main", "seq": -1}, "bad_request"),
    ({"room": "joined", "cursor": 7, "seq": 1}, "bad_request"),
])
async def test_bad_cursor_moves_are_refused(peer: LocalPeerFactory, payload: Any,
                                            code: str) -> None:
    bot = await peer("bot")
    await bot.join("joined")
    ack = await bot.call("advance", payload)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    bad = await bot.call("join", {"room": "other", "cursor": ""})
    assert bad["error"]["code"] == "bad_request"
