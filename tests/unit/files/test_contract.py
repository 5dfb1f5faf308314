"""One contract, every file storage: a local directory and S3-compatible
storage (a real server: moto's, tests/services.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.files import FileStorage, Stored, open_files

from ...services import S3_ENV, S3Server


@pytest.fixture(params=["dir", "s3"])
async def files(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FileStorage]:
    if request.param == "dir":
        url = f"dir:{tmp_path}/files"
    else:
        for name, value in S3_ENV.items():
            monkeypatch.setenv(name, value)
        url = await S3Server.shared().bucket()
    storage = await open_files(url)
    yield storage
    await storage.close()


def spooled(folder: Path, data: bytes) -> Path:
    path = folder / os.urandom(6).hex()
    path.write_bytes(data)
    return path


async def read(stored: Stored) -> bytes:
    return b"".join([chunk async for chunk in stored.chunks])


async def test_a_file_is_kept_read_and_deleted(files: FileStorage, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, and a short last one
    source = spooled(tmp_path, data)
    await files.put("AbCdEfGh1234", source)
    assert not source.exists()  # given up to the storage
    stored = await files.get("AbCdEfGh1234")
    assert stored is not None and stored.size == len(data) and await read(stored) == data
    assert await files.get("AbCdEfGh1234.thumb") is None
    await files.put("AbCdEfGh1234", spooled(tmp_path, b"replaced"))
    again = await files.get("AbCdEfGh1234")
    assert again is not None and await read(again) == b"replaced"
    await files.delete("AbCdEfGh1234")
    await files.delete("AbCdEfGh1234")  # (nothing: it is gone)
    assert await files.get("AbCdEfGh1234") is None
    assert files.status() == "ok"


async def test_an_empty_file_is_a_file(files: FileStorage, tmp_path: Path) -> None:
    await files.put("EmptyFile01", spooled(tmp_path, b""))
    stored = await files.get("EmptyFile01")
    assert stored is not None and stored.size == 0 and await read(stored) == b""


async def test_a_key_is_never_a_path(tmp_path: Path) -> None:
    storage = await open_files(f"dir:{tmp_path}/files")
    for bad in ("../../etc/passwd", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            await storage.get(bad)


async def test_a_bucket_that_is_not_there_stops_the_start(s3_files: str) -> None:
    missing = s3_files.replace("s3://t-", "s3://missing-", 1)
    with pytest.raises(ValueError, match="cannot be used"):
        await open_files(missing)


async def test_an_unknown_scheme_says_which_there_are() -> None:
    with pytest.raises(ValueError, match="dir:, s3:"):
        await open_files("ftp://files")
