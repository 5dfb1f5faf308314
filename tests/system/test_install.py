"""Roomcast installed as a user would: a wheel built from this tree, installed
with the locked dependencies into a fresh virtual environment, run from an
empty folder with no source tree in sight."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest

from app.chat.namespace import NAMESPACE

from ..conftest import TIMEOUT, Peer, sio_client
from ..processes import LISTENING, STARTUP_TIMEOUT, Process, start_server

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
INSTALL_TIMEOUT = 240.0  # seconds to build the wheel and fill a virtual environment


async def run(*args: str | Path, cwd: Path = ROOT) -> str:
    """Run a command to its end; its output, or an AssertionError with it."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, args), cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), INSTALL_TIMEOUT)
    assert proc.returncode == 0, f"{args} failed:\n{out.decode()}"
    return out.decode()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built once for the module's tests."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", dist, ROOT],
                   check=True, timeout=INSTALL_TIMEOUT)
    [built] = dist.glob("roomcast-*.whl")
    return built


async def install(venv: Path, lock: Path, wheel: Path) -> Path:
    """A fresh environment with ``lock``'s packages (hashes checked) and the
    wheel; its python."""
    await run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # uv (from the test lock) is quicker; pip does the same where it is not installed
    pip: list[str | Path] = [BIN / "uv", "pip", "install", "--python", python] \
        if (BIN / "uv").exists() else [python, "-m", "pip", "install"]
    await run(*pip, "--quiet", "--require-hashes", "--no-deps", "-r", lock)
    await run(*pip, "--quiet", "--no-deps", wheel)
    return python


async def test_the_wheel_serves_the_page_and_chats_from_an_empty_folder(
        tmp_path: Path, wheel: Path) -> None:
    """``pip install`` of the wheel into a fresh environment, then ``roomcast`` run
    from an empty folder, serves the page with its bundled Socket.IO client;
    ``roomcast-client send`` stores a message that a joined client receives; the
    nginx template ``make cluster`` uses is in the package."""
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("app/static/vendor/socket.io.msgpack.min.js", "app/static/chat.js",
                    "app/static/vendor/markdown-it.js", "app/static/vendor/purify.js",
                    "app/static/sw.js", "app/static/manifest.webmanifest",
                    "app/static/icon-512.png", "app/templates/index.html",
                    "app/nginx/roomcast.conf", "client/bot.py"):
        assert shipped in names
    python = await install(venv, ROOT / "requirements.txt", wheel)

    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": ""}
    template = await run(python, "-c", "from app.tools.cluster import CONF; print(CONF.resolve())",
                         cwd=empty)
    assert Path(template.strip()).is_relative_to(venv)
    assert "proxy_set_header Upgrade" in Path(template.strip()).read_text()

    server = await Process.start("--host", "127.0.0.1", "--port", "0", cwd=empty, env=env,
                                 executable=str(venv / "bin" / "roomcast"))
    try:
        port = int((await server.stderr_match(LISTENING, STARTUP_TIMEOUT)).group(1))
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as page:
                assert page.status == 200
                assert "/static/vendor/socket.io.msgpack.min.js" in await page.text()
            async with http.get(url + "/static/vendor/socket.io.msgpack.min.js") as bundle:
                assert bundle.status == 200
                assert "io" in await bundle.text()
        sio = sio_client("msgpack")
        watcher = Peer("watcher", sio)
        await sio.connect(url, auth={"name": "watcher"}, namespaces=[NAMESPACE],
                          wait_timeout=TIMEOUT)
        try:
            await watcher.join("lobby")
            send = await Process.start("send", "--url", url, "--name", "alice", "--room",
                                       "lobby", "hello from the wheel", cwd=empty, env=env,
                                       executable=str(venv / "bin" / "roomcast-client"))
            assert await send.wait(20) == 0, send.stderr_lines
            message = await watcher.next("message")
            assert (message["from"], message["text"]) == ("alice", "hello from the wheel")
        finally:
            await sio.disconnect()
        assert (empty / "data" / "roomcast.db").exists()  # the zero-set-up store, here
    finally:
        assert await server.stop() == 0


async def test_the_client_alone_installs_and_chats(tmp_path: Path, wheel: Path) -> None:
    """``pip install roomcast`` without the ``server`` extra (here: the client's own
    lock, client/requirements.txt) brings the client and what it needs, none of
    the server's libraries: ``roomcast-client send`` from it stores a message on
    a running server."""
    venv, empty = tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    python = await install(venv, ROOT / "client" / "requirements.txt", wheel)
    missing = await run(python, "-c", "import importlib.util as u; print(sorted(m for m in ("
                        "'asyncpg', 'redis', 'prometheus_client', 'aiohttp_jinja2', 'jwt')"
                        " if u.find_spec(m) is None))", cwd=empty)
    assert missing.strip() == "['aiohttp_jinja2', 'asyncpg', 'jwt', 'prometheus_client', 'redis']"
    server_entry = str(venv / "bin" / "roomcast")
    refused = await Process.start("--port", "0", cwd=empty, executable=server_entry)
    assert await refused.wait(20) == 1
    assert "pip install 'roomcast[server]'" in "".join(refused.stderr_lines)
    server, port = await start_server(tmp_path)
    try:
        env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": ""}
        send = await Process.start("send", "--url", f"http://127.0.0.1:{port}", "--name",
                                   "alone", "--room", "r", "from the client alone", cwd=empty,
                                   env=env, executable=str(venv / "bin" / "roomcast-client"))
        assert await send.wait(20) == 0, send.stderr_lines
        assert await send.stdout.get() == "#1 alone: from the client alone"
    finally:
        assert await server.stop() == 0
