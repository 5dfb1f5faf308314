"""The layers depend one way: chat -> Socket.IO server -> Engine.IO -> WebSocket.
Read from the source: a lower layer never imports a higher one, and the pure
modules import no I/O at all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
# each layer, and what it may not import (of Roomcast's own packages)
FORBIDDEN = {
    "ws": {"app.eio", "app.sio", "app.chat", "app.server", "app.keys", "app.front"},
    "eio": {"app.sio", "app.chat", "app.server", "app.keys", "app.front", "app.fanout"},
    "sio": {"app.chat", "app.server", "app.keys", "app.fanout", "app.store", "app.presence"},
}
PURE = ["eio/packets.py", "eio/session.py", "ws/frames.py"]


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


def test_the_chat_is_imported_only_from_above() -> None:
    """Fan-out, the front door and the backends do not reach up into the chat
    namespace (they used to: fan-out imported it for its name)."""
    for path in [*(APP / "fanout").glob("*.py"), APP / "front.py", *(APP / "store").glob("*.py"),
                 *(APP / "presence").glob("*.py")]:
        assert "app.chat.namespace" not in imports(path), path
