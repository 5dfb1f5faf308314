"""Every private or undocumented name of python-engineio's client that ChatClient uses.

ChatClient runs on python-socketio's ``AsyncClient`` and reaches into the
python-engineio client beneath it in two places: it lets a long-polling
response hold more than 16 packets (the server bounds responses in bytes,
not packets), and it reconnects after a server ended the session, which
python-socketio does not. And it stops python-socketio's reconnect loop in
the instant after a drop, where ``AsyncClient.shutdown`` fails
(:func:`shutdown`). Those names are reached only through this module,
and checked when it is imported: a library of another shape raises
:class:`IncompatibleLibrary` naming the version, rather than failing under
load. Nothing is changed at import; the polling bound is lifted when a
client is made (:func:`lift_polling_packet_limit`).

The client's own: it imports nothing of the server (``app``), so the client
runs, and is installed, without it (``tests/system/test_client_alone.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
from typing import Any

import engineio
import engineio.payload
import socketio

LIBRARY = "python-engineio"
# the engine client's attributes ChatClient reads or sets, and what for
ENGINE_ATTRIBUTES = {
    "current_transport": "which transport the connection is on",
    "read_loop_task": "reconnecting after a server's CLOSE",
    "write_loop_task": "reconnecting after a server's CLOSE",
    "http": "one HTTP session for the client's life",
    "external_http": "one HTTP session for the client's life",
}


# python-socketio's client's, for :func:`shutdown`
CLIENT_ATTRIBUTES = {
    "_reconnect_task": "closing in the instant after a drop",
    "_reconnect_abort": "closing in the instant after a drop",
}


class IncompatibleLibrary(RuntimeError):
    """The installed python-engineio lacks a name ChatClient relies on."""


def check() -> None:
    """Raise IncompatibleLibrary unless python-engineio's client has every name we use."""
    client = socketio.AsyncClient()
    engine = client.eio
    missing = [f"AsyncClient.{name} ({why})" for name, why in ENGINE_ATTRIBUTES.items()
               if not hasattr(engine, name)]
    missing += [f"socketio.AsyncClient.{name} ({why})"
                for name, why in CLIENT_ATTRIBUTES.items() if not hasattr(client, name)]
    if not hasattr(engineio.payload.Payload, "max_decode_packets"):
        missing.append("payload.Payload.max_decode_packets (long polls of many packets)")
    if missing:
        raise IncompatibleLibrary(
            f"ChatClient cannot run on {LIBRARY} {importlib.metadata.version(LIBRARY)}: it "
            f"lacks {', '.join(missing)}. Install the versions in requirements.txt.")


check()


def lift_polling_packet_limit(limit: int) -> None:
    """Let python-engineio's client decode a polling response of up to ``limit``
    packets (its default: 16; a class attribute, so for every python-engineio
    client of the process: only ever raised, never lowered)."""
    payload = engineio.payload.Payload
    payload.max_decode_packets = max(payload.max_decode_packets, limit)


def client_engine(client: socketio.AsyncClient) -> Any:
    """The python-engineio client under a python-socketio one (its attributes
    in :data:`ENGINE_ATTRIBUTES` are checked above)."""
    return client.eio


async def shutdown(client: socketio.AsyncClient) -> None:
    """``client.shutdown()``: disconnect, or stop reconnecting. Also in the
    instant after a drop, when python-socketio has started its reconnect task
    but the task has not yet made the event that stops it (its ``shutdown``
    then raises AttributeError and the loop goes on): that task is cancelled
    before its first step."""
    task = client._reconnect_task
    if not client.connected and task is not None and client._reconnect_abort is None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        client._reconnect_task = None
        return
    await client.shutdown()
