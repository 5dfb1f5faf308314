"""The layers depend one way: chat -> Socket.IO server -> Engine.IO -> WebSocket,
over a core that knows no sockets. Read from the source: a lower layer never
imports a higher one, the backends only the core, and the pure modules no
I/O at all (docs/architecture.md draws them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent.parent / "app"
# each layer, and what it may not import (of Roomcast's own packages)
FORBIDDEN = {
    "ws": {"app.eio", "app.sio", "app.chat", "app.server", "app.appkeys", "app.store",
           "app.presence", "app.fanout"},
    "eio": {"app.sio", "app.chat", "app.server", "app.appkeys", "app.fanout", "app.store",
            "app.presence"},
    "sio": {"app.chat", "app.server", "app.appkeys", "app.fanout", "app.store", "app.presence"},
    # the HTTP API is an interface beside the namespace: it calls the chat's
    # services, never the socket layers, the backends or the wiring
    "api": {"app.sio", "app.eio", "app.ws", "app.server", "app.appkeys", "app.fanout",
            "app.store", "app.presence"},
    "uploads": {"app.sio", "app.eio", "app.ws", "app.server", "app.appkeys", "app.fanout",
                "app.store", "app.presence", "app.files", "app.api", "app.hooks"},
    # the webhooks read the store's stream and post out: they know no socket,
    # no interface above them and none of the chat's services
    "hooks": {"app.sio", "app.eio", "app.ws", "app.server", "app.appkeys", "app.fanout",
              "app.presence", "app.api", "app.chat.services", "app.chat.namespace",
              "app.chat.events"},
}
TOP_LEVEL = {"__init__.py", "__main__.py", "server.py", "settings.py", "appkeys.py", "health.py",
             "page.py", "compat.py", "metrics.py", "tracing.py", "logs.py", "shutdown.py",
             "redis_client.py"}
PURE = ["eio/packets.py", "eio/session.py", "ws/frames.py", "core/models.py", "core/errors.py",
        "core/limits.py", "chat/protocol.py", "chat/directs.py", "chat/mentions.py",
        "chat/paging.py", "store/stream.py", "store/search.py", "store/markers.py",
        "api/keys.py", "api/models.py", "hooks/webhook.py", "core/signing.py", "uploads/tus.py"]
# what the backends may import of Roomcast: the core, and the shared Redis client
BACKENDS = {"store": {"app.core", "app.store"}, "files": {"app.core", "app.files"},
            "presence": {"app.core", "app.presence", "app.redis_client"}}


def imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (relative ones resolved)."""
    package = ["app", *path.relative_to(APP).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(layer: str) -> None:
    for path in sorted((APP / layer).glob("*.py")):
        for module in imports(path):
            for forbidden in FORBIDDEN[layer]:
                assert not (module == forbidden or module.startswith(forbidden + ".")), \
                    f"app/{layer}/{path.name} imports {module}"


@pytest.mark.parametrize("name", PURE)
def test_the_pure_cores_do_no_io(name: str) -> None:
    for module in imports(APP / name):
        root = module.split(".")[0]
        assert root not in {"asyncio", "aiohttp", "socket", "socketio", "engineio"}, \
            f"app/{name} imports {module}"


def test_the_top_level_holds_only_the_entry_point_wiring_and_cross_cutting_modules() -> None:
    """Everything else sits in the package of its layer."""
    assert {p.name for p in APP.glob("*.py")} == TOP_LEVEL


def ours(path: Path) -> set[str]:
    """The Roomcast modules ``path`` imports."""
    return {m for m in imports(path) if m.startswith("app.")}  # ("from .. import x": app.x)


def test_the_core_imports_nothing_of_roomcast() -> None:
    for path in sorted((APP / "core").glob("*.py")):
        assert {m for m in ours(path) if not m.startswith("app.core")} == set(), path


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_backends_import_only_the_core(backend: str) -> None:
    allowed = BACKENDS[backend]
    for path in sorted((APP / backend).glob("*.py")):
        for module in ours(path):
            assert any(module == a or module.startswith(a + ".") for a in allowed), \
                f"app/{backend}/{path.name} imports {module}"


def test_the_chat_knows_no_wire_and_nothing_below_knows_the_chat() -> None:
    """chat/ never imports sio/, eio/ or ws/; fanout/ and sio/ never import chat/."""
    for path in sorted((APP / "chat").glob("*.py")):
        for module in ours(path):
            assert not module.startswith(("app.sio", "app.eio", "app.ws")), \
                f"app/chat/{path.name} imports {module}"
    for layer in ("fanout", "sio"):
        for path in sorted((APP / layer).glob("*.py")):
            assert not any(m.startswith("app.chat") for m in ours(path)), path


def test_the_chat_does_not_know_who_watches_its_stream() -> None:
    """The webhooks are told of new entries through ``Messages.watchers``: the
    chat never imports them."""
    for path in sorted((APP / "chat").glob("*.py")):
        assert not any(m.startswith("app.hooks") for m in ours(path)), path


def test_the_chat_services_know_no_socket() -> None:
    """Only the namespace, the Socket.IO adapter, imports python-socketio; the
    events (parse, call a service, ack) know no transport at all."""
    for path in sorted((APP / "chat").glob("*.py")):
        if path.name == "namespace.py":
            continue
        assert not {m for m in imports(path) if m.split(".")[0] in
                    {"socketio", "engineio", "aiohttp"}}, path


def test_every_folder_of_python_modules_is_a_package() -> None:
    """A folder of modules without an ``__init__.py`` works from the checkout
    and is left out of the wheel (setup.cfg finds packages)."""
    for folder in sorted({p.parent for p in APP.rglob("*.py")}):
        assert (folder / "__init__.py").exists(), f"{folder} has no __init__.py"
