"""app.compat: every private library name Roomcast uses is checked at import,
and a library of another shape stops start-up with a message that says which
library, which name, and which versions work."""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import sys
from pathlib import Path

import engineio
import engineio.payload
import pytest

from app import compat
from client import compat as client_compat

ROOT = Path(__file__).resolve().parent.parent.parent
# modules that subclass or reach into python-engineio, python-socketio or aiohttp
REACHING = ["app/sio/server.py", "app/fanout/__init__.py", "app/eio/front.py",
            "app/ws/handshake.py", "client/chat_client.py"]


def test_the_installed_libraries_pass_the_check() -> None:
    """Every name Roomcast relies on is there, with the parameters it uses."""
    compat.check()
    assert len(compat.REACHES) > 20


def test_python_engineio_is_not_reached_by_the_server() -> None:
    """The Engine.IO server is Roomcast's own (app.eio); python-engineio's client,
    under ChatClient, is the client's to check (client.compat)."""
    assert not [reach for reach in compat.REACHES if reach.library == "python-engineio"]
    client_compat.check()


def test_a_missing_name_is_reported_with_the_versions_that_work() -> None:
    """A name that is gone is named with its library's installed version and the
    declared range."""
    gone = compat.Reach("python-engineio", engineio.AsyncServer, "_no_such_hook", "a test")
    with pytest.raises(compat.IncompatibleLibrary) as raised:
        compat.check((gone,))
    message = str(raised.value)
    assert f"python-engineio {importlib.metadata.version('python-engineio')}" in message
    assert "AsyncServer._no_such_hook no longer has it (used for: a test)" in message
    assert f"python-engineio {compat.supported('python-engineio')}" in message
    assert compat.supported("python-engineio").startswith(">=")


def test_a_changed_signature_is_reported() -> None:
    """A method whose parameters moved is as bad as one that is gone."""
    moved = compat.Reach("python-engineio", engineio.AsyncServer, "_upgrades", "a test",
                         params=("transport", "sid"))
    with pytest.raises(compat.IncompatibleLibrary, match=r"takes \(sid, transport\)"):
        compat.check((moved,))


def test_an_attribute_set_in_init_is_checked_on_an_instance() -> None:
    unset = compat.Reach("python-engineio", engineio.AsyncServer, "no_such_state", "a test",
                         instance=lambda: engineio.AsyncServer(async_mode="aiohttp"))
    with pytest.raises(compat.IncompatibleLibrary, match="no longer sets it"):
        compat.check((unset,))


def test_declared_ranges_bound_the_libraries_we_reach_into() -> None:
    """Each library whose private names we use stops below its next minor version."""
    for library in {reach.library for reach in compat.REACHES}:
        spec = compat.supported(library)
        assert ">=" in spec and "<" in spec.replace("<=", ""), (library, spec)


def test_modules_reach_library_internals_only_through_compat() -> None:
    """No module subclasses a python-engineio, python-socketio or aiohttp class
    directly, nor imports one of their private modules; they use app.compat's
    checked classes."""
    reached = {"engineio", "socketio", "web.AppRunner", "web.Server", "AsyncSocket"}
    for path in REACHING:
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in map(ast.unparse, node.bases):
                    assert not (base in reached or base.split(".")[0] in reached), \
                        f"{path}: class {node.name} subclasses {base}"
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module not in ("engineio.async_socket", "engineio.payload",
                                           "engineio.async_drivers.aiohttp",
                                           "aiohttp.web_protocol"), f"{path}: {node.module}"
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                value = node.value
                assert not (isinstance(value, ast.Name)
                            and value.id in ("protocol", "eio", "Payload")), \
                    f"{path}: {ast.unparse(node)}"


async def test_start_up_fails_with_the_message_when_a_name_is_gone(tmp_path: Path) -> None:
    """``python -m app`` on a python-socketio that lacks a hook exits at once with
    the message, not a traceback, and serves nothing."""
    code = ("import socketio.async_server, runpy, sys; "
            "del socketio.async_server.AsyncServer._handle_eio_connect; "
            "sys.argv = ['roomcast', '--port', '0']; runpy.run_module('app', run_name='__main__')")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    message = err.decode()
    assert proc.returncode == 1, message
    assert message.startswith("roomcast: Roomcast cannot run on the installed libraries")
    assert "AsyncServer._handle_eio_connect" in message
    assert f"python-socketio {compat.supported('python-socketio')}" in message
    assert "Traceback" not in message and "listening" not in message
