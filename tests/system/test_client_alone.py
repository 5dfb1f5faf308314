"""The Python client stands alone: it runs with nothing of the server but the one
pure module it shares (app.chat.mentions), and none of the server's own
libraries, and it changes nothing process-wide when imported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import engineio.payload

from app.chat.namespace import NAMESPACE

from ..conftest import TIMEOUT, Peer, sio_client
from .test_cli import server_url  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent.parent
# what the client must run without: the server's packages and its libraries
BLOCKED = ("app.", "asyncpg", "redis", "prometheus_client", "jinja2", "aiohttp_jinja2", "jwt",
           "uvloop")
SHARED = ("app", "app.chat", "app.chat.mentions")
BLOCKER = f"""
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in {SHARED!r} and (name + ".").startswith({BLOCKED!r}):
            raise ImportError(f"the client imported {{name}}")
        return None
sys.meta_path.insert(0, Blocker())
"""


def run_alone(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER + code], cwd=ROOT, text=True,
                          capture_output=True, timeout=60)


def test_the_client_imports_nothing_of_the_server_but_its_shared_module() -> None:
    """client, its bot and its command line import with app's other modules and the
    server's libraries unimportable; importing them lifts no library bound."""
    done = run_alone("import engineio.payload as p; before = p.Payload.max_decode_packets\n"
                     "import client, client.bot, client.compat\n"
                     "import runpy; sys.argv = ['roomcast-client', '--help']\n"
                     "assert p.Payload.max_decode_packets == before, 'patched at import'\n"
                     "runpy.run_module('client', run_name='__main__')")
    assert done.returncode == 0, done.stderr
    assert "tail" in done.stdout and "bot" in done.stdout
    assert engineio.payload.Payload.max_decode_packets >= 16


async def test_the_client_alone_sends_to_a_real_server(server_url: str) -> None:  # noqa: F811
    """``python -m client send`` with nothing of the server importable stores a
    message that a joining client then finds."""
    code = ("import runpy; sys.argv = ['roomcast-client', 'send', '--url', "
            f"{server_url!r}, '--name', 'alone', '--room', 'r', 'from the client alone']\n"
            "runpy.run_module('client', run_name='__main__')")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BLOCKER + code, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out.decode().strip()) == (
        0, "#1 alone: from the client alone"), err.decode()
    peer = Peer("check", sio_client("msgpack"))
    await peer.sio.connect(server_url, auth={"name": "check"}, namespaces=[NAMESPACE],
                           wait_timeout=TIMEOUT)
    try:
        assert [(m["from"], m["text"]) for m in (await peer.join("r"))["messages"]] == [
            ("alone", "from the client alone")]
    finally:
        await peer.sio.disconnect()
