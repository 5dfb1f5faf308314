"""Files in a local directory (``dir:PATH``): the zero-set-up default.

Each key is a file under the directory, spread over subdirectories by the
key's first two characters so that no directory grows past a few thousand
entries. A file is put by a rename from the spool when both are on one file
system (else copied to a temporary name and renamed), so a reader never sees
half a file. Several nodes may share the directory (NFS, a mounted volume).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from . import Stored

CHUNK = 256 * 1024
_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}(\.[a-z]{1,8})?")


class LocalFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):  # (keys are the chat's; never a client's path)
            raise ValueError(f"not a file key: {key!r}")
        return self.root / key[:2] / key

    async def put(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._put, self._path(key), source)

    @staticmethod
    def _put(path: Path, source: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, path)
        except OSError:  # another file system
            partial = path.with_name(path.name + ".partial")
            shutil.copyfile(source, partial)
            os.replace(partial, path)
            source.unlink(missing_ok=True)

    async def get(self, key: str) -> Stored | None:
        path = self._path(key)
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None
        return Stored(size, path, _chunks(path))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    def status(self) -> str:
        return "ok" if os.access(self.root, os.W_OK) else f"{self.root} is not writable"

    async def close(self) -> None:
        return None


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def open(url: str) -> LocalFiles:
    parts = urlsplit(url)
    root = Path(parts.netloc + parts.path) if parts.netloc else Path(parts.path)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    return LocalFiles(root)
