"""Replies bounded in bytes: the messages of one ``join`` or ``history`` ack.

A page of history is bounded in messages by the store query; messages are up
to ``max_text_length`` characters, so that alone lets one ack grow to many
megabytes (500 messages of 4,000 four-byte characters are 8 MB as msgpack,
three times that as JSON), past what clients take in one message. :func:`fit` cuts a
page to a byte budget, measured as the wire encodes it, keeping the messages
next to where the client is reading from; the reply then says ``more`` and
the client asks for the next page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

Wire = dict[str, Any]
Sizer = Callable[[Wire], int]

# A message's share of the packet around it (a separator, array framing):
# small, but it keeps a page of tiny messages from being counted as free.
_FRAMING = 8


def _msgpack_size(message: Wire) -> int:
    return len(msgpack.packb(message)) + _FRAMING


def _json_size(message: Wire) -> int:
    # python-socketio's JSON encoder escapes non-ASCII, as json.dumps does by default
    return len(json.dumps(message, separators=(",", ":"))) + _FRAMING


def wire_size(serializer: str) -> Sizer:
    """How many bytes a message takes in ``serializer`` (msgpack or json)."""
    return _msgpack_size if serializer == "msgpack" else _json_size


def fit(sized: Sequence[tuple[Wire, int]], budget: int, *, keep_newest: bool
        ) -> tuple[list[Wire], int, bool]:
    """The messages (``(message, its size)``, ascending by seq) that fit in
    ``budget`` bytes: the newest ones if ``keep_newest`` (a page read
    backwards), else the oldest (a page read forwards). At least one is kept,
    however large. Returns the kept messages, their size and whether any was
    cut."""
    order = reversed(sized) if keep_newest else iter(sized)
    kept: list[Wire] = []
    used = 0
    for message, cost in order:
        if kept and used + cost > budget:
            break
        kept.append(message)
        used += cost
    cut = len(kept) < len(sized)
    if keep_newest:
        kept.reverse()
    return kept, used, cut
