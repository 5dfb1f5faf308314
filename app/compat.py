"""Every private or undocumented name of another library that Roomcast uses.

Roomcast runs python-socketio on an Engine.IO server of its own (:mod:`app.eio`)
and fixes python-socketio and aiohttp where they fall short (see
:mod:`app.sio.server`, :mod:`app.fanout`, :mod:`app.eio.front`,
:mod:`app.ws.handshake`). Those modules reach the libraries' private names
only through this one: they subclass the checked base classes below and call
the helpers at the end. python-engineio is not used by the server; the
Python client keeps its own compatibility module (:mod:`client.compat`).

At import, every name in :data:`REACHES` is checked: that it exists, and for
a method that it takes the parameters we call or override it with. A library
of another shape raises :class:`IncompatibleLibrary`, naming the library, the
installed version and the range Roomcast declares in its package metadata
(``setup.cfg``, locked in ``requirements.txt``), so an upgrade fails at start-up
with that message rather than with an ``AttributeError`` under load.
``tests/unit/test_compat.py`` checks the check.

This module imports nothing from Roomcast.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import socketio
from aiohttp import web_protocol

DISTRIBUTION = "roomcast"


class IncompatibleLibrary(RuntimeError):
    """An installed library lacks a name Roomcast relies on, or its shape changed."""


@dataclass(frozen=True)
class Reach:
    """One private name Roomcast uses: ``owner.name``, on ``library``.

    ``params`` are the parameter names (after ``self``) of a method we call or
    override; ``instance`` builds an object whose attribute it is, for names
    that only exist once an object is made (set in ``__init__``)."""

    library: str  # the distribution's name, as in setup.cfg
    owner: Any
    name: str
    why: str
    params: tuple[str, ...] | None = None
    instance: Callable[[], Any] | None = None


def _sio_server() -> Any:
    return socketio.AsyncServer(async_mode="aiohttp")


SIO, AIOHTTP = "python-socketio", "aiohttp"
SocketIOServer = socketio.AsyncServer
Manager = socketio.AsyncManager
AppRunner = aiohttp.web.AppRunner
LowLevelServer = aiohttp.web.Server

REACHES: tuple[Reach, ...] = (
    # python-socketio's server (app.sio.server.RoomcastServer)
    *(Reach(SIO, SocketIOServer, name, "the server's state", instance=_sio_server)
      for name in ("eio", "manager", "manager_initialized", "packet_class")),
    Reach(SIO, SocketIOServer, "_engineio_server_class", "our Engine.IO server", params=()),
    Reach(SIO, SocketIOServer, "_handle_eio_connect", "the connect deadline",
          params=("eio_sid", "environ")),
    Reach(SIO, SocketIOServer, "_handle_connect", "CONNECT before the handler's emits",
          params=("eio_sid", "namespace", "data")),
    Reach(SIO, SocketIOServer, "_handle_eio_message", "invalid framing closes",
          params=("eio_sid", "data")),
    Reach(SIO, SocketIOServer, "_handle_eio_disconnect", "its deadline and held packets go",
          params=("eio_sid", "reason")),
    Reach(SIO, SocketIOServer, "_handle_event", "reserved, nameless, non-array events",
          params=("eio_sid", "namespace", "id", "data")),
    Reach(SIO, SocketIOServer, "_send_packet",
          "held until CONNECT is sent; v5 connect errors", params=("eio_sid", "pkt")),
    # python-socketio's managers (app.fanout)
    *(Reach(SIO, Manager, name, "room bookkeeping", instance=Manager)
      for name in ("rooms", "callbacks", "pending_connect", "pending_disconnect", "server")),
    Reach(SIO, Manager, "basic_enter_room", "the rooms of each connection",
          params=("sid", "namespace", "room", "eio_sid")),
    Reach(SIO, Manager, "basic_leave_room", "the rooms of each connection",
          params=("sid", "namespace", "room")),
    Reach(SIO, Manager, "basic_disconnect", "leaving only a connection's own rooms",
          params=("sid", "namespace")),
    Reach(SIO, Manager, "get_participants", "sid rooms kept by the manager, not as bidicts",
          params=("namespace", "room")),
    Reach(SIO, Manager, "get_rooms", "sid rooms kept by the manager, not as bidicts",
          params=("sid", "namespace")),
    # aiohttp (app.eio.front, app.ws.handshake)
    Reach(AIOHTTP, AppRunner, "_make_server", "the front door's server", params=()),
    Reach(AIOHTTP, LowLevelServer, "__call__", "a protocol for each new connection",
          params=()),
    Reach(AIOHTTP, LowLevelServer, "pre_shutdown", "closing idle connections", params=()),
    Reach(AIOHTTP, web_protocol.RequestHandler, "_message_tail",
          "bytes after an upgrade request's headers"),
)


def supported(library: str) -> str:
    """The versions of ``library`` Roomcast declares, e.g. ``>=5.18.0,<5.19``."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return "(roomcast is not installed: see setup.cfg)"
    for requirement in requires:
        match = re.match(r"([A-Za-z0-9._-]+)\s*(?:\[[^]]*\])?\s*([^;]*)", requirement)
        if match and _normal(match[1]) == _normal(library) and "extra ==" not in requirement:
            parts = sorted(match[2].replace(" ", "").split(","), key=lambda p: p[0] != ">")
            return ",".join(parts) or "any version"  # lower bound first
    return "(not declared)"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _problem(reach: Reach) -> str | None:
    """What is wrong with ``reach`` on the installed library, or None."""
    if reach.instance is not None:
        if not hasattr(reach.instance(), reach.name):
            return "no longer sets it"
        return None
    if not hasattr(reach.owner, reach.name):
        return "no longer has it"
    if reach.params is None:
        return None
    function = getattr(reach.owner, reach.name)
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return "is no longer a function"
    names = [p.name for p in signature.parameters.values()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.isclass(reach.owner) and inspect.isfunction(function):
        names = names[1:]  # the instance (python-socketio's Admin UI wraps some methods
        # with functions whose first parameter is not named self)
    if tuple(names[:len(reach.params)]) != reach.params:
        return f"takes ({', '.join(names)}), not ({', '.join(reach.params)})"
    return None


def check(reaches: tuple[Reach, ...] = REACHES) -> None:
    """Raise IncompatibleLibrary unless every name in ``reaches`` has the shape we use."""
    problems = []
    for reach in reaches:
        problem = _problem(reach)
        if problem is not None:
            owner = getattr(reach.owner, "__qualname__", getattr(reach.owner, "__name__", "?"))
            problems.append(f"{reach.library} {_version(reach.library)}: {owner}.{reach.name} "
                            f"{problem} (used for: {reach.why})")
    if problems:
        libraries = sorted({p.split(" ", 1)[0] for p in problems})
        ranges = "; ".join(f"{lib} {supported(lib)}" for lib in libraries)
        raise IncompatibleLibrary(
            "Roomcast cannot run on the installed libraries:\n  " + "\n  ".join(problems)
            + f"\nRoomcast works with {ranges}. Install the locked versions: "
              "pip install --require-hashes -r requirements.txt")


check()


# -- helpers for the names that are reached, not subclassed --------------------

def release_aiohttp_connection(request: aiohttp.web.BaseRequest) -> bytes:
    """Make aiohttp let go of the connection of ``request``: it must not close
    the transport when the request ends, and must forget the connection (its
    handler, parser and request are freed once the handler returns). Returns
    what arrived after the request's headers, which aiohttp kept for the upgrade."""
    protocol: Any = request.protocol
    tail: bytes = protocol._message_tail
    protocol._message_tail = b""
    protocol.transport = None
    protocol.connection_lost(None)
    return tail
